package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The decoders' GPU program ({@link DecoderProgram}: launch order and arguments, buffer roles, im2col tiles,
 * attention chunks, cuBLAS operand order, weight packing) run on {@link EmulatedDevice} against the PyTorch
 * fixtures. Each buffer lives in its own emulated allocation, so a launch that reaches past its buffer fails.
 */
class EmulatedDecoderTest {
    private static final double TOLERANCE = 1e-4;

    /** The folder of a small committed or a real-shape fixture (failing, naming the command, if that is missing). */
    private static Path dir(String fixture) {
        return List.of(DecoderFixtures.REAL).contains(fixture) ? DecoderFixtures.real(fixture)
                : DecoderFixtures.small(fixture);
    }

    /** A decoder uploaded to an emulated device, with buffers for {@code samples} latents of {@code pixels}. */
    record Emulated(DecoderSpec spec, EmulatedDevice device, DecoderProgram program, DecoderBuffers.Addresses buf) {
        Tensor run(Tensor latent, Cancellation cancel) throws BackendException {
            int n = latent.dim(0);
            int h = latent.dim(2);
            int w = latent.dim(3);
            device.write(buf.latent(), latent.data());
            DevicePtr image = program.run(device, buf, n, h, w, cancel);
            int f = spec.scaleFactor();
            int[] shape = {n, spec.outChannels(), f * h, f * w};
            return new Tensor(device.read(image, Arrays.stream(shape).reduce(1, (a, b) -> a * b)), shape);
        }
    }

    static Emulated load(String fixture, int samples, long pixels, DecoderBuffers.Budgets budgets)
            throws BackendException {
        return load(DecoderFixtures.spec(dir(fixture)), samples, pixels, budgets);
    }

    static Emulated load(DecoderSpec spec, int samples, long pixels, DecoderBuffers.Budgets budgets)
            throws BackendException {
        DecoderWeights weights = new DecoderWeights(spec);
        DecoderBuffers layout = DecoderBuffers.of(spec, samples, pixels, budgets);
        EmulatedDevice device = new EmulatedDevice(weights.totalFloats() + layout.totalElements() + 64 * 8);
        DevicePtr base = device.alloc(weights.totalFloats());
        try (Safetensors st = Safetensors.open(spec.weightsFile())) {
            Map<String, String> names = DecoderCheckpoint.resolve(st, spec);
            for (DecoderWeights.Slot slot : weights.slots().values()) {
                float[] values = st.floats(names.get(slot.name()));
                assertThat((long) values.length).isEqualTo(slot.length());
                device.write(base.plusFloats(slot.offset()), values);
            }
        }
        // every buffer in its own allocation, exactly as long as the layout says
        DevicePtr[] at = new DevicePtr[DecoderBuffers.Buffer.values().length];
        for (DecoderBuffers.Buffer b : DecoderBuffers.Buffer.values()) {
            at[b.ordinal()] = device.alloc(layout.length(b));
        }
        DecoderBuffers.Addresses buf = new DecoderBuffers.Addresses(layout, at[0], at[1], at[2], at[3], at[4], at[5]);
        return new Emulated(spec, device, new DecoderProgram(spec, weights, base), buf);
    }

    static Emulated load(String fixture, FixtureShape shape, DecoderBuffers.Budgets budgets) throws BackendException {
        return load(fixture, shape.samples, shape.pixels, budgets);
    }

    /** Buffers exactly for a case. */
    record FixtureShape(int samples, long pixels) {
        static FixtureShape of(Tensor latent) {
            return new FixtureShape(latent.dim(0), (long) latent.dim(2) * latent.dim(3));
        }
    }

    private static double error(String fixture, DecoderBuffers.Budgets budgets) throws BackendException {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir(fixture));
        Emulated e = load(fixture, FixtureShape.of(c.latent()), budgets);
        Tensor out = e.run(c.latent(), Cancellation.NEVER);
        assertThat(c.image().maxAbs()).isPositive();
        double err = Fixtures.relativeError(out, c.image());
        System.out.printf("emulated %s (budgets %s): relative error %.3e%n", fixture, budgets, err);
        return err;
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"vae-small", "vae-small-legacy", "taesd-small"})
    void smallFixturesMatchPyTorch(String fixture) throws Exception {
        assertThat(error(fixture, DecoderBuffers.DEFAULT_BUDGETS)).isLessThan(TOLERANCE);
    }

    /**
     * Small buffers: im2col in pixel tiles of one sample (and in groups of samples where they fit), attention
     * scores in chunks of query rows or of samples.
     */
    @ParameterizedTest(name = "{0}, columns {1}, scores {2}")
    @CsvSource({
        "vae-small, 1000, 100", // pixel tiles everywhere; query rows in chunks of 3 (T = 30)
        // both samples at once (conv_in), one sample at a time (mid block), pixel tiles (up block 1); one sample's
        // scores per chunk
        "vae-small, 10000, 900",
        "taesd-small, 700, 1", // tiles of 4 pixels (144 rows of columns)
        "vae-small, 20160, 900" // room for 70 pixels of 288 rows: tiles of 64 (aligned) and 56 pixels
    })
    void tilesAndChunksGiveTheSameImage(String fixture, long columns, long scores) throws Exception {
        DecoderBuffers.Budgets small = new DecoderBuffers.Budgets(1L << 28, columns, scores);
        assertThat(error(fixture, small)).isLessThan(TOLERANCE);
    }

    /** The real architectures (sd-vae-ft-*, TAESD) with random weights, on a 5×4 latent. */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"vae", "taesd"})
    void realShapesMatchPyTorch(String fixture) throws Exception {
        assertThat(error(fixture, DecoderBuffers.DEFAULT_BUDGETS)).isLessThan(TOLERANCE);
    }

    /** A batch smaller than the buffers, and a smaller latent than they were sized for. */
    @Test
    void runsBelowCapacity() throws Exception {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir("vae-small"));
        Emulated e = load("vae-small", 3, 64, DecoderBuffers.DEFAULT_BUDGETS);
        Tensor one = new Tensor(Arrays.copyOf(c.latent().data(), c.latent().size() / 2), 1, 4, 6, 5);
        Tensor out = e.run(one, Cancellation.NEVER);
        Tensor expected = new Tensor(Arrays.copyOf(c.image().data(), c.image().size() / 2), out.shape());
        assertThat(Fixtures.relativeError(out, expected)).isLessThan(TOLERANCE);
    }

    /** Like diffusers' DecoderTiny, the soft clamp uses the constant 3 whatever the config's latent_magnitude. */
    @Test
    void theTinyClampIgnoresLatentMagnitude() throws Exception {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir("taesd-small"));
        DecoderSpec s = DecoderFixtures.spec(dir("taesd-small"));
        DecoderSpec five = new DecoderSpec(s.directory(), s.kind(), s.latentChannels(), s.outChannels(),
                s.blockOutChannels(), s.layersPerBlock(), s.numBlocks(), s.normGroups(), s.scalingFactor(),
                s.shiftFactor(), s.postQuantConv(), s.midBlockAttention(), s.upsampling(), 5.0);
        Emulated e = load(five, 2, 12, DecoderBuffers.DEFAULT_BUDGETS);
        assertThat(Fixtures.relativeError(e.run(c.latent(), Cancellation.NEVER), c.image())).isLessThan(TOLERANCE);
    }

    @Test
    void tilesAreAlignedToSixtyFourColumns() {
        assertThat(DecoderProgram.aligned(70)).isEqualTo(64);
        assertThat(DecoderProgram.aligned(29127)).isEqualTo(29120);
        assertThat(DecoderProgram.aligned(63)).isEqualTo(63);
        assertThat(DecoderProgram.aligned(3)).isEqualTo(3);
    }

    @Test
    void runBeyondTheBuffersIsRejected() throws Exception {
        Emulated e = load("taesd-small", 1, 12, DecoderBuffers.DEFAULT_BUDGETS);
        assertThatThrownBy(() -> e.program().run(e.device(), e.buf(), 2, 4, 3, Cancellation.NEVER))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("batch 2");
        assertThatThrownBy(() -> e.program().run(e.device(), e.buf(), 1, 4, 4, Cancellation.NEVER))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("4×4");
        assertThat(e.device().trace).isEmpty();
    }

    /** Polled before every layer; a flag that fires stops the run at once. */
    @ParameterizedTest(name = "{0}")
    @CsvSource({"vae-small", "taesd-small"})
    void cancellationIsPolledBetweenLayers(String fixture) throws Exception {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir(fixture));
        Emulated e = load(fixture, FixtureShape.of(c.latent()), DecoderBuffers.DEFAULT_BUDGETS);
        AtomicInteger polls = new AtomicInteger();
        e.run(c.latent(), () -> polls.incrementAndGet() < 0);
        assertThat(polls).hasValue(DecoderProgram.pollsPerRun(e.spec()));
        // vae-small: conv_in, 2 mid resnets, attention, 2 + 2 resnets, 1 upsampler, output; taesd-small: 1 + 10 + 4
        assertThat(polls.get()).isEqualTo(fixture.startsWith("vae") ? 10 : 15);
        int launches = e.device().trace.size();
        polls.set(0);
        e.device().trace.clear();
        assertThatThrownBy(() -> e.run(c.latent(), () -> polls.incrementAndGet() == 3))
                .isInstanceOf(BackendException.Cancelled.class);
        assertThat(polls).hasValue(3);
        assertThat(e.device().trace.size()).isPositive().isLessThan(launches / 2);
    }

    /** Group norms run one block per sample and group; the attention softmax one block per query row. */
    @Test
    void launchShapesFollowTheLayers() throws Exception {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir("vae-small"));
        Emulated e = load("vae-small", FixtureShape.of(c.latent()), DecoderBuffers.DEFAULT_BUDGETS);
        e.run(c.latent(), Cancellation.NEVER);
        int groups = e.spec().normGroups();
        int t = 6 * 5;
        assertThat(e.device().trace)
                .contains("launch group_norm " + LaunchConfig.longRows(2 * groups, 32 / groups * t))
                .contains("launch softmax_rows " + LaunchConfig.rows(2 * t, t))
                .contains("gemm " + GemmCall.convolution(t, 3 * 32, 32, t, t, 32L * t, 3L * 32 * t, 2))
                // the upsampler's convolution runs on the 12×10 image: its columns are built from the 6×5 one
                .contains("gemm " + GemmCall.convolution(120, 32, 32 * 9, 120, 120, 32 * 9 * 120L, 32 * 120L, 2));
    }
}
