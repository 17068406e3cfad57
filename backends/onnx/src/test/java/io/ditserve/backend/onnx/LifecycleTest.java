package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import org.junit.jupiter.api.Test;

/** Cancellation reaches the running session; bad calls and closing behave. */
class LifecycleTest {

    /**
     * A batch of 256 of the bundled model takes a few hundred milliseconds; a cancellation that fires after 20 ms
     * must stop it through RunOptions.setTerminate long before it would have finished, and the next forward works.
     */
    @Test
    void cancellationStopsARunningForward() throws Exception {
        ModelSpec spec = Fixtures.spec("fashion-dit");
        Fixtures.Case c = Fixtures.randomCase(spec, 256, 1);
        try (Backend b = Fixtures.onnx(spec)) {
            Tensor expected = Fixtures.run(b, c.x(), c.t(), c.y()); // warm-up: buffers, ORT's first-run allocations
            long start = System.nanoTime();
            Fixtures.run(b, c.x(), c.t(), c.y());
            double fullMs = (System.nanoTime() - start) / 1e6;
            assertThat(fullMs).as("an uncancelled run must be long enough to interrupt").isGreaterThan(100);

            start = System.nanoTime();
            long deadline = start + 20_000_000L;
            Cancellation after20ms = () -> System.nanoTime() - deadline > 0;
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), out, after20ms))
                    .isInstanceOf(BackendException.Cancelled.class);
            double cancelledMs = (System.nanoTime() - start) / 1e6;
            System.out.printf("batch 256: full run %.1f ms, cancelled after 20 ms returned at %.1f ms%n",
                    fullMs, cancelledMs);
            assertThat(cancelledMs).isLessThan(fullMs / 2);

            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), expected)).isLessThan(1e-6);
        }
    }

    @Test
    void alreadyCancelledForwardDoesNotRun() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.randomCase(spec, 2, 3);
        try (Backend b = Fixtures.onnx(spec)) {
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), c.out(), () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
        }
    }

    @Test
    void invalidArgumentsAreRejectedBeforeTheRun() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.randomCase(spec, 2, 3);
        try (Backend b = Fixtures.onnx(spec)) {
            assertThatThrownBy(() -> b.forward(c.x(), new int[] {0, 1000}, c.y(), c.out(), Cancellation.NEVER))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("t[1] = 1000 is outside 0..999");
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), new int[] {11, 0}, c.out(), Cancellation.NEVER))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("y[0] = 11 is outside 0..10 (10 is the null class)");
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), Tensor.zeros(2, 2, 16, 16), Cancellation.NEVER))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("out has shape [2, 2, 16, 16], expected [N, 1, 16, 16]");
        }
    }

    @Test
    void closeIsIdempotentAndEndsTheBackend() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.randomCase(spec, 1, 3);
        Backend b = Fixtures.onnx(spec);
        Fixtures.run(b, c.x(), c.t(), c.y());
        b.close();
        b.close();
        assertThatThrownBy(() -> Fixtures.run(b, c.x(), c.t(), c.y()))
                .isInstanceOf(IllegalStateException.class)
                .hasMessage("backend for pixel-tiny is closed");
    }
}
