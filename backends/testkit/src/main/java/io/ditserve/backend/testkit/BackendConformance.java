package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The contract every {@link Backend} keeps, as a JUnit suite: a backend's test extends it and says how to create the
 * backend. Parity with the PyTorch forward of tools/make_fixtures.py (tools/dit/model.py is the ground truth) on
 * every fixture model and thread count, cancellation, argument checks, lifecycle and batch invariance.
 */
public abstract class BackendConformance {
    /** The backend under test for {@code spec}, on {@code threads} threads. */
    protected abstract Backend create(ModelSpec spec, int threads) throws BackendException;

    /** Parity tolerance: max |error| over max |reference output|. */
    protected double tolerance() {
        return 1e-4;
    }

    /**
     * How far sample k of a batch may be from the same sample computed alone (the error measure of
     * {@link Fixtures#relativeError}); 0 demands the same bits.
     */
    protected double batchTolerance() {
        return 1e-6;
    }

    /**
     * The batch of the bundled model the cancellation test runs: long enough that a backend which notices the
     * cancellation only while the run is under way (a watcher thread) sees it fire.
     */
    protected int cancellationBatch() {
        return 4;
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({
        "pixel-tiny, 1", "pixel-tiny, 2", "latent-tiny, 1", "latent-tiny, 2", "fashion-dit, 1", "fashion-dit, 2"})
    void matchesPyTorch(String model, int threads) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = create(spec, threads)) {
            Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(out.shape()).containsExactly(c.out().shape());
            assertThat(c.out().maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, c.out())).as("%s, %d threads", model, threads)
                    .isLessThan(tolerance());
        }
    }

    @Test
    void anAlreadyCancelledForwardThrowsCancelled() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        try (Backend b = create(spec, 2)) {
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), out, () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(tolerance());
        }
    }

    /**
     * A cancellation that is clear when the forward starts and fires on its next poll stops the pass with
     * {@link BackendException.Cancelled}; the backend stays usable.
     */
    @Test
    void aCancellationThatFiresDuringTheForwardStopsIt() throws Exception {
        ModelSpec spec = Fixtures.spec("fashion-dit");
        Fixtures.Case batch = Fixtures.randomCase(spec, cancellationBatch(), 1);
        Fixtures.Case c = Fixtures.forwardCase("fashion-dit");
        AtomicInteger polls = new AtomicInteger();
        try (Backend b = create(spec, 2)) {
            assertThatThrownBy(() -> b.forward(batch.x(), batch.t(), batch.y(), batch.out(),
                            () -> polls.incrementAndGet() > 1))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isGreaterThan(1);
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(tolerance());
        }
    }

    /** Wrong shapes, counts, timesteps outside 0..999 and labels outside 0..null class fail before any work. */
    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        int n = c.x().dim(0);
        int size = spec.inputSize();
        try (Backend b = create(spec, 1)) {
            Tensor out = Tensor.zeros(c.out().shape());
            int[] badLabel = c.y().clone();
            badLabel[0] = spec.nullClass() + 1;
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), badLabel, out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("y[0] = " + (spec.nullClass() + 1) + " is outside 0.." + spec.nullClass() + " ("
                            + spec.nullClass() + " is the null class)");
            int[] negativeLabel = c.y().clone();
            negativeLabel[1] = -1;
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), negativeLabel, out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("y[1]");
            int[] badTime = c.t().clone();
            badTime[2] = 1000;
            assertThatThrownBy(() -> b.forward(c.x(), badTime, c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessage("t[2] = 1000 is outside 0..999");
            int[] negativeTime = c.t().clone();
            negativeTime[0] = -1;
            assertThatThrownBy(() -> b.forward(c.x(), negativeTime, c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("t[0]");
            assertThatThrownBy(() -> b.forward(c.x(), new int[n - 1], c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("timesteps and labels");
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), new int[n + 1], out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("timesteps and labels");
            Tensor wrongX = Tensor.zeros(n, spec.inChannels() + 1, size, size);
            assertThatThrownBy(() -> b.forward(wrongX, c.t(), c.y(), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("x has shape");
            Tensor wrongOut = Tensor.zeros(n, spec.outChannels() + 1, size, size);
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), wrongOut, () -> false))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("out has shape [" + n + ", " + (spec.outChannels() + 1) + ", " + size + ", " + size
                            + "], expected [N, " + spec.outChannels() + ", " + size + ", " + size + "]");
            Tensor wrongBatch = Tensor.zeros(n + 1, spec.outChannels(), size, size);
            assertThatThrownBy(() -> b.forward(c.x(), c.t(), c.y(), wrongBatch, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out has shape");
            // the rejected calls left the backend as it was
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(tolerance());
        }
    }

    @Test
    void closeIsIdempotentAndForwardAfterCloseFails() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        Backend b = create(spec, 2);
        assertThat(b.name()).isNotBlank();
        assertThat(b.model()).isEqualTo(spec);
        Fixtures.run(b, c.x(), c.t(), c.y());
        b.close();
        b.close();
        assertThatThrownBy(() -> Fixtures.run(b, c.x(), c.t(), c.y()))
                .isInstanceOf(IllegalStateException.class)
                .hasMessage("backend for pixel-tiny is closed");
    }

    /**
     * Sample k of a batch equals the same sample run alone, within {@link #batchTolerance()}: no state leaks between
     * the samples of a batch. Seven samples: more than one block of rows of a typical kernel, and not a multiple.
     */
    @ParameterizedTest
    @CsvSource({"latent-tiny, 7", "pixel-tiny, 3"})
    void samplesOfABatchAreIndependent(String model, int n) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.randomCase(spec, n, 11);
        try (Backend b = create(spec, 2)) {
            Tensor batch = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(batch.maxAbs()).isPositive();
            for (int k = 0; k < n; k++) {
                Tensor alone = Fixtures.run(b, Fixtures.sample(c.x(), k), new int[] {c.t()[k]},
                        new int[] {c.y()[k]});
                Tensor inBatch = Fixtures.sample(batch, k);
                if (batchTolerance() == 0) {
                    assertThat(inBatch.data()).as("sample %d", k).containsExactly(alone.data());
                } else {
                    assertThat(Fixtures.relativeError(inBatch, alone)).as("sample %d", k)
                            .isLessThanOrEqualTo(batchTolerance());
                }
            }
        }
    }
}
