package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;
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
    private static final FixtureCases FIXTURES = new FixtureCases(FixtureCases.findRepoRoot());

    /** A model uploaded to an emulated device, with its activation buffers. */
    record Emulated(ModelSpec spec, EmulatedDevice device, DitForward program, ActivationLayout act, long actBase) {
        Tensor run(FixtureCases.Case c, Cancellation cancel) throws BackendException {
            int n = c.x().dim(0);
            device.write(actBase + 4 * act.offset(Buffer.X_IN), c.x().data());
            device.writeInts(actBase + 4 * act.offset(Buffer.T), c.t());
            device.writeInts(actBase + 4 * act.offset(Buffer.Y), c.y());
            program.run(device, act, actBase, n, cancel);
            int[] shape = c.out().shape();
            return new Tensor(device.read(actBase + 4 * act.offset(Buffer.OUT), c.out().size()), shape);
        }
    }

    static Emulated load(String model, int capacity, long scoresBudget) throws BackendException {
        ModelSpec spec = FIXTURES.spec(model);
        WeightLayout layout = new WeightLayout(spec);
        ActivationLayout act = ActivationLayout.of(spec, capacity, scoresBudget);
        EmulatedDevice device = new EmulatedDevice(layout.totalFloats() + act.totalElements() + 128);
        long weights = device.alloc(layout.totalFloats());
        try (Safetensors st = Safetensors.open(spec.file(CudaDitBackend.WEIGHTS_FILE))) {
            for (WeightLayout.Slot slot : layout.slots().values()) {
                float[] values = slot.name().equals(WeightLayout.FREQS)
                        ? DitConstants.timestepFrequencies()
                        : st.floats(slot.name());
                assertThat((long) values.length).isEqualTo(slot.length());
                device.write(weights + 4 * slot.offset(), values);
            }
        }
        long actBase = device.alloc(act.totalElements());
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
        FixtureCases.Case c = FIXTURES.forwardCase(model);
        Tensor out = e.run(c, Cancellation.NEVER);
        assertThat(c.out().maxAbs()).isPositive();
        assertThat(FixtureCases.relativeError(out, c.out())).isLessThan(TOLERANCE);
    }

    @Test
    void attentionRunsInChunks() throws Exception {
        Emulated e = load("pixel-tiny", 5, 1536); // 2 heads · 16² scores per sample: 3 samples per chunk
        assertThat(e.act().attentionChunk()).isEqualTo(3);
        e.run(FIXTURES.forwardCase("pixel-tiny"), Cancellation.NEVER);
        long softmaxLaunches = e.device().trace.stream().filter(s -> s.startsWith("launch softmax_rows")).count();
        assertThat(softmaxLaunches).isEqualTo(2L * e.spec().depth()); // batch 4 = chunks of 3 and 1, per block
    }

    /** The flag is polled before each block and before the final layer, like the other backends. */
    @Test
    void cancellationIsPolledBetweenBlocks() throws Exception {
        Emulated e = load("latent-tiny", 4, ActivationLayout.SCORES_BUDGET);
        FixtureCases.Case c = FIXTURES.forwardCase("latent-tiny");
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
        e.run(FIXTURES.forwardCase("fashion-dit"), Cancellation.NEVER);
        int rows = 4 * e.spec().tokens();
        assertThat(e.device().trace)
                .contains("launch ln_modulate " + LaunchConfig.rows(rows, e.spec().hiddenSize()))
                .contains("launch softmax_rows " + LaunchConfig.rows(4 * e.spec().numHeads() * e.spec().tokens(),
                        e.spec().tokens()))
                .contains("gemm " + GemmCall.linear(rows, 3 * e.spec().hiddenSize(), e.spec().hiddenSize()));
    }
}
