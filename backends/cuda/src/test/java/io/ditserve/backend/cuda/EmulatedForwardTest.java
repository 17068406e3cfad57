package io.ditserve.backend.cuda;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import io.ditserve.backend.DitConstants;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.StepCache.Use;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;
import io.ditserve.backend.testkit.Fixtures;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The GPU forward program ({@link DitForward}: launch order and arguments, buffer offsets, weight packing, cuBLAS
 * operand order) run on {@link EmulatedDevice} against the PyTorch fixtures. What this cannot check is the CUDA
 * source itself and the native calls; the GPU tests and tools/gpu/run_cuda_checks.sh do that.
 */
class EmulatedForwardTest {
    private static final double TOLERANCE = 1e-4;

    /** A model uploaded to an emulated device, with its activation buffers. */
    record Emulated(ModelSpec spec, EmulatedDevice device, DitForward program, ActivationLayout act, DevicePtr actBase) {
        Tensor run(Fixtures.Case c, Cancellation cancel) throws BackendException {
            int n = c.x().dim(0);
            device.write(actBase.plusFloats(act.offset(Buffer.X_IN)), c.x().data());
            device.write(actBase.plusFloats(act.offset(Buffer.T)), c.t());
            device.writeInts(actBase.plusFloats(act.offset(Buffer.Y)), c.y());
            program.run(device, act, actBase, n, cancel);
            int[] shape = c.out().shape();
            return new Tensor(device.read(actBase.plusFloats(act.offset(Buffer.OUT)), c.out().size()), shape);
        }
    }

    static Emulated load(String model, int capacity, long scoresBudget) throws BackendException {
        ModelSpec spec = Fixtures.spec(model);
        WeightLayout layout = new WeightLayout(spec);
        ActivationLayout act = ActivationLayout.of(spec, capacity, scoresBudget);
        EmulatedDevice device = new EmulatedDevice(layout.totalFloats() + act.totalElements() + 128);
        DevicePtr weights = device.alloc(layout.totalFloats());
        try (Safetensors st = Safetensors.open(spec.file(CudaDitBackend.WEIGHTS_FILE))) {
            for (WeightLayout.Slot slot : layout.slots().values()) {
                float[] values = slot.name().equals(WeightLayout.FREQS)
                        ? DitConstants.timestepFrequencies()
                        : st.floats(slot.name());
                assertThat((long) values.length).isEqualTo(slot.length());
                device.write(weights.plusFloats(slot.offset()), values);
            }
        }
        DevicePtr actBase = device.alloc(act.totalElements());
        return new Emulated(spec, device, new DitForward(spec, layout, weights), act, actBase);
    }

    @ParameterizedTest(name = "{0}, capacity {1}, scores budget {2}")
    @CsvSource({
        "pixel-tiny, 4, 67108864",
        "latent-tiny, 4, 67108864",
        "fashion-dit, 4, 67108864",
        // a batch below capacity, and attention in chunks of one and of three samples
        "latent-tiny, 7, 1",
        "pixel-tiny, 5, 1536"
    })
    void matchesPyTorch(String model, int capacity, long scoresBudget) throws Exception {
        Emulated e = load(model, capacity, scoresBudget);
        Fixtures.Case c = Fixtures.forwardCase(model);
        Tensor out = e.run(c, Cancellation.NEVER);
        assertThat(c.out().maxAbs()).isPositive();
        assertThat(Fixtures.relativeError(out, c.out())).isLessThan(TOLERANCE);
    }

    @Test
    void attentionRunsInChunks() throws Exception {
        Emulated e = load("pixel-tiny", 5, 1536); // 2 heads · 16² scores per sample: 3 samples per chunk
        assertThat(e.act().attentionChunk()).isEqualTo(3);
        e.run(Fixtures.forwardCase("pixel-tiny"), Cancellation.NEVER);
        long softmaxLaunches = e.device().trace.stream().filter(s -> s.startsWith("launch softmax_rows")).count();
        assertThat(softmaxLaunches).isEqualTo(2L * e.spec().depth()); // batch 4 = chunks of 3 and 1, per block
    }

    /** The flag is polled before each block and before the final layer, like the other backends. */
    @Test
    void cancellationIsPolledBetweenBlocks() throws Exception {
        Emulated e = load("latent-tiny", 4, ActivationLayout.SCORES_BUDGET);
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        AtomicInteger polls = new AtomicInteger();
        assertThatThrownBy(() -> e.run(c, () -> polls.incrementAndGet() == 2))
                .isInstanceOf(BackendException.Cancelled.class);
        assertThat(polls).hasValue(2);
        polls.set(0);
        e.run(c, () -> polls.incrementAndGet() < 0);
        assertThat(polls).hasValue(e.spec().depth() + 1);
    }

    /** Every launch's grid: element-wise launches cover their elements, row launches have one block per row. */
    @Test
    void launchShapesFollowTheBuffers() throws Exception {
        Emulated e = load("fashion-dit", 4, ActivationLayout.SCORES_BUDGET);
        e.run(Fixtures.forwardCase("fashion-dit"), Cancellation.NEVER);
        int rows = 4 * e.spec().tokens();
        assertThat(e.device().trace)
                .contains("launch ln_modulate " + LaunchConfig.rows(rows, e.spec().hiddenSize()))
                .contains("launch softmax_rows " + LaunchConfig.rows(4 * e.spec().numHeads() * e.spec().tokens(),
                        e.spec().tokens()))
                .contains("gemm " + GemmCall.linear(rows, 3 * e.spec().hiddenSize(), e.spec().hiddenSize()));
    }

    // ---- step caching, through CudaDitBackend ----

    /** A random residual per sample (for the samples that reuse; the storing ones' arrays are overwritten). */
    private static float[][] residuals(ModelSpec spec, int n, long seed) {
        Random rnd = new Random(seed);
        float[][] r = new float[n][StepCache.residualLength(spec)];
        for (float[] a : r) {
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) rnd.nextGaussian();
            }
        }
        return r;
    }

    private static long count(List<String> trace, String line) {
        return trace.stream().filter(line::equals).count();
    }

    /**
     * The samples go up storing first, then running, then reusing: block 0 runs on all 5, the cached span on the 3
     * that run it, one launch each copies the storing samples' input to the span, makes their residual and adds
     * the reusing samples' residual; the pass polls depth + 1 times like a plain one.
     */
    @Test
    void theCachedSpanRunsOnThePrefixOfSamplesThatRunIt() throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        EmulatedDevice device = Emulation.device(spec, 8);
        int n = 5;
        int width = spec.tokens() * spec.hiddenSize();
        int d = spec.hiddenSize();
        Fixtures.Case c = Fixtures.randomCase(spec, n, 3);
        Use[] uses = {Use.REUSE, Use.STORE, Use.RUN, Use.REUSE, Use.STORE};
        try (CudaDitBackend b = Emulation.backend(spec, 8, device)) {
            device.trace.clear();
            AtomicInteger polls = new AtomicInteger();
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(uses, residuals(spec, n, 1))), Tensor.zeros(c.out().shape()), () -> polls.incrementAndGet() < 0);
            assertThat(polls).hasValue(spec.depth() + 1);
            List<String> trace = device.trace;
            assertThat(count(trace, "gemm " + GemmCall.linear(n * spec.tokens(), 3 * d, d))).isEqualTo(1);
            assertThat(count(trace, "gemm " + GemmCall.linear(3 * spec.tokens(), 3 * d, d)))
                    .isEqualTo(spec.depth() - 1);
            assertThat(count(trace, "launch copy_values " + LaunchConfig.elementwise(2L * width))).isEqualTo(1);
            assertThat(count(trace, "launch span_residual " + LaunchConfig.elementwise(2L * width))).isEqualTo(1);
            assertThat(count(trace, "launch add_bias " + LaunchConfig.elementwise(2L * width))).isEqualTo(1);
            // the copy comes after block 0 and before the span's first block
            int copy = trace.indexOf("launch copy_values " + LaunchConfig.elementwise(2L * width));
            int spanStart = trace.indexOf("gemm " + GemmCall.linear(3 * spec.tokens(), 3 * d, d));
            assertThat(copy).isGreaterThan(trace.indexOf("gemm " + GemmCall.linear(n * spec.tokens(), 3 * d, d)))
                    .isLessThan(spanStart);
        }
    }

    /** When every sample reuses, the span is not launched at all and only block 0 and the final layer poll. */
    @Test
    void whenEverySampleReusesTheSpanIsSkipped() throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        EmulatedDevice device = Emulation.device(spec, 4);
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        int n = c.t().length;
        try (CudaDitBackend b = Emulation.backend(spec, 4, device)) {
            device.trace.clear();
            AtomicInteger polls = new AtomicInteger();
            Use[] uses = new Use[n];
            Arrays.fill(uses, Use.REUSE);
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(uses, residuals(spec, n, 2))), Tensor.zeros(c.out().shape()), () -> polls.incrementAndGet() < 0);
            assertThat(polls).hasValue(2);
            int d = spec.hiddenSize();
            assertThat(device.trace.stream().filter(l -> l.startsWith("gemm ") && l.contains("" + 3 * d)))
                    .containsExactly("gemm " + GemmCall.linear(n * spec.tokens(), 3 * d, d));
            assertThat(device.trace).noneMatch(l -> l.startsWith("launch copy_values")
                    || l.startsWith("launch span_residual"));
        }
    }

    /** A cache whose samples all run without storing is the plain pass, launch for launch. */
    @Test
    void aPlainCacheLaunchesExactlyThePlainPass() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        EmulatedDevice device = Emulation.device(spec, 4);
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        int n = c.t().length;
        try (CudaDitBackend b = Emulation.backend(spec, 4, device)) {
            device.trace.clear();
            Tensor plain = Tensor.zeros(c.out().shape());
            b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), plain, Cancellation.NEVER);
            List<String> plainTrace = List.copyOf(device.trace);
            device.trace.clear();
            Use[] uses = new Use[n];
            Arrays.fill(uses, Use.RUN);
            Tensor cached = Tensor.zeros(c.out().shape());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(uses, new float[n][])), cached, Cancellation.NEVER);
            assertThat(device.trace).isEqualTo(plainTrace);
            assertThat(cached.data()).containsExactly(plain.data());
        }
    }

    /** The stored residuals are written back only when the pass completes: a cancelled pass leaves them alone. */
    @Test
    void aCancelledPassLeavesTheResidualsAsTheyWere() throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        int n = c.t().length;
        Use[] uses = {Use.STORE, Use.REUSE, Use.STORE, Use.RUN};
        float[][] given = residuals(spec, n, 4);
        float[][] res = new float[n][];
        for (int k = 0; k < n; k++) {
            res[k] = given[k].clone();
        }
        try (CudaDitBackend b = Emulation.backend(spec, 4)) {
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(uses, res)), Tensor.zeros(c.out().shape()), () -> polls.incrementAndGet() == spec.depth() + 1))
                    .isInstanceOf(BackendException.Cancelled.class);
            for (int k = 0; k < n; k++) {
                assertThat(res[k]).as("residual %d", k).containsExactly(given[k]);
            }
        }
    }
}
