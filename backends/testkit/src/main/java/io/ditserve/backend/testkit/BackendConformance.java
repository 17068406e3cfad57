package io.ditserve.backend.testkit;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
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
        "pixel-tiny, 1", "pixel-tiny, 2", "latent-tiny, 1", "latent-tiny, 2", "fashion-dit, 1", "fashion-dit, 2",
        // the flow families: float times; SiT's layout, REPA's with qk-norm (docs/MODEL_FAMILIES.md)
        "sit-tiny, 1", "sit-tiny, 2", "repa-tiny, 1", "repa-tiny, 2"})
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
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> true))
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
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(batch.x(), batch.t(), batch.y()), batch.out(), () -> polls.incrementAndGet() > 1))
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
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), badLabel), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("y[0] = " + (spec.nullClass() + 1) + " is outside 0.." + spec.nullClass() + " ("
                            + spec.nullClass() + " is the null class)");
            int[] negativeLabel = c.y().clone();
            negativeLabel[1] = -1;
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), negativeLabel), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("y[1]");
            float[] badTime = c.t().clone();
            badTime[2] = 1000;
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), badTime, c.y()), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("time[2] = 1000.0 is outside 0.0..999.0 (index)");
            float[] nanTime = c.t().clone();
            nanTime[3] = Float.NaN;
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), nanTime, c.y()), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time[3] = NaN");
            float[] negativeTime = c.t().clone();
            negativeTime[0] = -1;
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), negativeTime, c.y()), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time[0]");
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), new float[n - 1], c.y()), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("times and conditionings");
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), new int[n + 1]), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("times and conditionings");
            Tensor wrongX = Tensor.zeros(n, spec.inChannels() + 1, size, size);
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(wrongX, c.t(), c.y()), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("x has shape");
            Tensor wrongOut = Tensor.zeros(n, spec.outChannels() + 1, size, size);
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), wrongOut, () -> false))
                    .isInstanceOf(IllegalArgumentException.class)
                    .hasMessage("out has shape [" + n + ", " + (spec.outChannels() + 1) + ", " + size + ", " + size
                            + "], expected [N, " + spec.outChannels() + ", " + size + ", " + size + "]");
            Tensor wrongBatch = Tensor.zeros(n + 1, spec.outChannels(), size, size);
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), wrongBatch, () -> false))
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
    @CsvSource({"latent-tiny, 7", "pixel-tiny, 3", "repa-tiny, 5"})
    void samplesOfABatchAreIndependent(String model, int n) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.randomCase(spec, n, 11);
        try (Backend b = create(spec, 2)) {
            Tensor batch = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(batch.maxAbs()).isPositive();
            for (int k = 0; k < n; k++) {
                Tensor alone = Fixtures.run(b, Fixtures.sample(c.x(), k), new float[] {c.t()[k]},
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

    // ---- step caching (docs/STEP_CACHE.md) ----

    /** Whether this backend skips blocks for step caching on the fixture models (the default: yes). */
    protected boolean cachesSteps() {
        return true;
    }

    /**
     * One pass where two samples run and store the cached span and two reuse a residual stored at other inputs and
     * timesteps: outputs and stored residuals match PyTorch. A backend that ran the span for the reusing samples,
     * or used the stored step's t or y, would miss by far more than the tolerance.
     */
    @ParameterizedTest
    @CsvSource({"pixel-tiny", "latent-tiny", "fashion-dit", "sit-tiny", "repa-tiny"})
    void stepCacheMatchesPyTorch(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.CacheCase c = Fixtures.cacheCase(model);
        try (Backend b = create(spec, 2)) {
            assertThat(b.supportsStepCache()).isEqualTo(cachesSteps());
            org.junit.jupiter.api.Assumptions.assumeTrue(cachesSteps(), "this backend does not cache steps");
            StepCache cache = c.stepCache();
            Tensor out = Tensor.zeros(c.out().shape());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), cache), out, () -> false);
            assertThat(Fixtures.relativeError(out, c.out())).as("%s output", model).isLessThan(tolerance());
            int len = StepCache.residualLength(spec);
            for (int k : c.run()) {
                float[] expected = java.util.Arrays.copyOfRange(c.residualOut().data(), k * len, (k + 1) * len);
                assertThat(Fixtures.relativeError(cache.residual(k), expected)).as("%s residual of sample %d",
                        model, k).isLessThan(tolerance());
            }
        }
    }

    /**
     * Storing changes nothing in the pass (the storing samples get the plain output, to the batch tolerance), and
     * reusing what was just stored at the same inputs gives the plain output again, to the parity tolerance.
     */
    @Test
    void reusingWhatWasStoredAtTheSameInputsGivesThePlainOutput() throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.randomCase(spec, 3, 21);
        try (Backend b = create(spec, 2)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(cachesSteps(), "this backend does not cache steps");
            Tensor plain = Fixtures.run(b, c.x(), c.t(), c.y());
            float[][] residuals = new float[3][StepCache.residualLength(spec)];
            StepCache.Use[] store = {StepCache.Use.STORE, StepCache.Use.STORE, StepCache.Use.STORE};
            Tensor stored = Tensor.zeros(plain.shape());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(store, residuals)), stored, () -> false);
            assertThat(Fixtures.relativeError(stored, plain)).isLessThanOrEqualTo(batchTolerance());
            StepCache.Use[] reuse = {StepCache.Use.REUSE, StepCache.Use.REUSE, StepCache.Use.REUSE};
            Tensor reused = Tensor.zeros(plain.shape());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(reuse, residuals)), reused, () -> false);
            assertThat(Fixtures.relativeError(reused, plain)).isLessThan(tolerance());
        }
    }

    /**
     * A sample with a step cache gives the same output and residual whatever it is batched with (samples that run
     * the span, store, or reuse), within {@link #batchTolerance()}.
     */
    @Test
    void cachedSamplesAreIndependentOfTheirCompanions() throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        int n = 5;
        Fixtures.Case c = Fixtures.randomCase(spec, n, 31);
        StepCache.Use[] uses = {StepCache.Use.REUSE, StepCache.Use.STORE, StepCache.Use.RUN, StepCache.Use.REUSE,
            StepCache.Use.STORE};
        int len = StepCache.residualLength(spec);
        java.util.Random rnd = new java.util.Random(5);
        float[][] given = new float[n][len];
        for (float[] r : given) {
            for (int i = 0; i < len; i++) {
                r[i] = (float) rnd.nextGaussian();
            }
        }
        try (Backend b = create(spec, 2)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(cachesSteps(), "this backend does not cache steps");
            float[][] batchRes = copy(given);
            Tensor batch = Tensor.zeros(n, spec.outChannels(), spec.inputSize(), spec.inputSize());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(uses, batchRes)), batch, () -> false);
            for (int k = 0; k < n; k++) {
                float[][] aloneRes = {given[k].clone()};
                Tensor alone = Tensor.zeros(1, spec.outChannels(), spec.inputSize(), spec.inputSize());
                b.forward(new ForwardBatch(Fixtures.sample(c.x(), k), new float[] {c.t()[k]}, new Conditioning.ClassLabels(new int[] {c.y()[k]}), new StepCache(new StepCache.Use[] {uses[k]}, aloneRes)), alone, () -> false);
                if (batchTolerance() == 0) {
                    assertThat(Fixtures.sample(batch, k).data()).as("sample %d", k).containsExactly(alone.data());
                    assertThat(batchRes[k]).as("residual %d", k).containsExactly(aloneRes[0]);
                } else {
                    assertThat(Fixtures.relativeError(Fixtures.sample(batch, k), alone)).as("sample %d", k)
                            .isLessThanOrEqualTo(batchTolerance());
                    if (uses[k] == StepCache.Use.STORE) {
                        assertThat(Fixtures.relativeError(batchRes[k], aloneRes[0])).as("residual %d", k)
                                .isLessThanOrEqualTo(batchTolerance());
                    }
                }
            }
        }
    }

    @Test
    void badStepCachesAreRejected() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.randomCase(spec, 2, 41);
        try (Backend b = create(spec, 1)) {
            org.junit.jupiter.api.Assumptions.assumeTrue(cachesSteps(), "this backend does not cache steps");
            Tensor out = Tensor.zeros(2, spec.outChannels(), spec.inputSize(), spec.inputSize());
            StepCache.Use[] reuse = {StepCache.Use.REUSE, StepCache.Use.REUSE};
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(reuse, new float[][] {new float[3], new float[3]})), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("tokens × hidden");
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(new StepCache.Use[] {StepCache.Use.RUN}, new float[1][])), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("step cache for 1 samples");
        }
    }

    private static float[][] copy(float[][] a) {
        float[][] r = new float[a.length][];
        for (int i = 0; i < a.length; i++) {
            r[i] = a[i].clone();
        }
        return r;
    }
}
