package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Cancellation, argument checks and lifecycle of the Backend interface. */
class BackendContractTest {

    @ParameterizedTest
    @ValueSource(strings = {"scalar", "vector"})
    void cancelledForwardThrows(String path) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        try (Backend b = Fixtures.backend(spec, path, 2)) {
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), out, () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
            // the backend stays usable after a cancelled call
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(1e-4);
        }
    }

    /** The flag is polled between blocks: a cancellation that fires during the pass stops it there. */
    @ParameterizedTest
    @ValueSource(strings = {"scalar", "vector"})
    void cancellationIsPolledBetweenBlocks(String path) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        AtomicInteger polls = new AtomicInteger();
        try (Backend b = Fixtures.backend(spec, path, 2)) {
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), out, () -> polls.incrementAndGet() == 2))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls).hasValue(2);
            polls.set(0);
            b.forward(c.x(), c.t(), c.y(), out, () -> polls.incrementAndGet() < 0);
            assertThat(polls).hasValue(spec.depth() + 1);
        }
    }

    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        try (Backend b = Fixtures.backend(spec, "vector", 1)) {
            Tensor out = Tensor.zeros(c.out().shape());
            int[] badLabel = c.y().clone();
            badLabel[0] = spec.nullClass() + 1;
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), badLabel, out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("y[0]");
            int[] badTime = c.t().clone();
            badTime[2] = 1000;
            assertThatThrownBy(() -> b.forward(c.x(), badTime, c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("t[2]");
            assertThatThrownBy(() -> b.forward(c.x(), new int[3], c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class);
            Tensor wrongOut = Tensor.zeros(4, spec.outChannels() + 1, spec.inputSize(), spec.inputSize());
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), wrongOut, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out");
        }
    }

    @Test
    void aMisspelledJavaOptionIsAnErrorNamingTheKnownOnes() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        var options = new io.ditserve.backend.BackendOptions(1, java.util.Map.of("java.pth", "scalar"));
        assertThatThrownBy(() -> new JavaBackendProvider().create(spec, options))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown option [java.pth] of the java backend, known options [java.path, java.max_batch]");
        assertThatThrownBy(() -> new JavaBackendProvider().createDecoder(io.ditserve.backend.DecoderConfigs.load(
                Fixtures.repoRoot().resolve("tools/fixtures/taesd-small")), options))
                .isInstanceOf(BackendException.class).hasMessageContaining("java.pth");
        // keys of other backends are theirs to check
        try (Backend b = new JavaBackendProvider().create(spec,
                new io.ditserve.backend.BackendOptions(1, java.util.Map.of("onnx.optimization", "none")))) {
            assertThat(b.name()).isEqualTo("java");
        }
    }

    @Test
    void closeIsIdempotentAndForwardAfterCloseFails() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        Backend b = Fixtures.backend(spec, "vector", 2);
        assertThat(b.name()).isEqualTo("java");
        assertThat(b.model()).isEqualTo(spec);
        b.close();
        b.close();
        assertThatThrownBy(() -> Fixtures.run(b, c.x(), c.t(), c.y())).isInstanceOf(IllegalStateException.class);
    }
}
