package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * SD3's MMDiT on the onnx backend, its graph built at load from the diffusers folder, against tools/sd3/mmdit.py on
 * the fixtures of tools/make_mmdit_fixtures.py (the java backend's MmditConformanceTest cases, same tolerance):
 * mmdit-tiny (SD3-medium's structure, F32 in one file) and mmdit-x-tiny (SD3.5's RMS qk-norm and dual attention in
 * blocks 0 and 1, BF16 in three shards with their index); and against the java backend on random batches.
 */
class OnnxMmditConformanceTest {
    private static final double TOLERANCE = 1e-4;
    private static final int CONTEXT_TOKENS = 7; // the fixtures' cases

    /** One forward case: inputs and the reference's output. */
    record Case(Tensor x, float[] t, Conditioning.TextEmbeddings text, Tensor out) {
        ForwardBatch batch() {
            return new ForwardBatch(x, t, text, null);
        }
    }

    static Path fixture(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    static ModelSpec spec(Path transformer) throws BackendException {
        return ModelConfigs.loadMmdit(transformer, transformer.getFileName().toString(), "", ModelSpec.Space.LATENT,
                CONTEXT_TOKENS, new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    static Case forwardCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(fixture(name).resolve("cases.safetensors"))) {
            Safetensors.Entry ctx = st.entry("forward.context");
            Safetensors.Entry pooled = st.entry("forward.pooled");
            Conditioning.TextEmbeddings text = new Conditioning.TextEmbeddings(st.floats("forward.context"),
                    (int) ctx.shape()[1], (int) ctx.shape()[2], st.floats("forward.pooled"), (int) pooled.shape()[1]);
            return new Case(st.tensor("forward.x"), st.floats("forward.t"), text, st.tensor("forward.out"));
        }
    }

    static Backend onnx(ModelSpec spec, int threads) throws BackendException {
        return Fixtures.provider(OnnxBackendProvider.NAME).create(spec, BackendOptions.ofThreads(threads));
    }

    static Tensor run(Backend b, Case c) throws BackendException {
        Tensor out = Tensor.zeros(c.out().shape());
        b.forward(c.batch(), out, Cancellation.NEVER);
        return out;
    }

    /** n random samples: N(0, 1) inputs, context and pooled; times in [0, 1000] with 1000 first. */
    static Case randomCase(ModelSpec spec, int n, int tokens, long seed) {
        Random rnd = new Random(seed);
        int size = spec.inputSize();
        Tensor x = Tensor.zeros(n, spec.inChannels(), size, size);
        float[] t = new float[n];
        float[] context = new float[n * tokens * spec.text().jointAttentionDim()];
        float[] pooled = new float[n * spec.text().pooledProjectionDim()];
        for (float[] a : new float[][] {x.data(), context, pooled}) {
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) rnd.nextGaussian();
            }
        }
        for (int i = 0; i < n; i++) {
            t[i] = i == 0 ? 1000f : (float) (1000 * rnd.nextDouble());
        }
        return new Case(x, t, new Conditioning.TextEmbeddings(context, tokens, spec.text().jointAttentionDim(), pooled,
                spec.text().pooledProjectionDim()), Tensor.zeros(n, spec.outChannels(), size, size));
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({"mmdit-tiny, 1", "mmdit-tiny, 2", "mmdit-x-tiny, 1", "mmdit-x-tiny, 2"})
    void matchesTheReference(String name, int threads) throws Exception {
        ModelSpec spec = spec(fixture(name));
        Case c = forwardCase(name);
        try (Backend b = onnx(spec, threads)) {
            assertThat(b).isInstanceOf(OnnxMmditBackend.class);
            double err = Fixtures.relativeError(run(b, c), c.out());
            System.out.printf("onnx %s, %d threads: max relative error %.3g%n", name, threads, err);
            assertThat(err).isLessThan(TOLERANCE);
        }
    }

    /**
     * The same function as the java backend on batches it was not built for: 5 samples with 11 context tokens, a
     * longer context (40) after it, and a sample alone, within the reference tolerance of each other.
     */
    @ParameterizedTest
    @ValueSource(strings = {"mmdit-tiny", "mmdit-x-tiny"})
    void agreesWithTheJavaBackendOnAnyBatchAndContext(String name) throws Exception {
        ModelSpec spec = spec(fixture(name));
        try (Backend onnx = onnx(spec, 2);
                Backend java = new JavaBackendProvider().create(spec, BackendOptions.ofThreads(2))) {
            for (Case c : new Case[] {randomCase(spec, 5, 11, 5), randomCase(spec, 2, 40, 9),
                randomCase(spec, 1, 1, 10)}) {
                Tensor a = run(onnx, c);
                Tensor b = run(java, c);
                double err = Fixtures.relativeError(a, b);
                System.out.printf("onnx vs java %s, %d samples of %d tokens: %.3g%n", name, c.t().length,
                        c.text().tokens(), err);
                assertThat(err).isLessThan(TOLERANCE);
            }
        }
    }

    /** A cancelled pass throws Cancelled (checked before the run starts) and the backend stays usable. */
    @Test
    void cancellationStopsThePass() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-x-tiny"));
        Case c = forwardCase("mmdit-x-tiny");
        try (Backend b = onnx(spec, 2)) {
            assertThatThrownBy(() -> b.forward(c.batch(), Tensor.zeros(c.out().shape()), () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
    }

    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-tiny"));
        Case c = forwardCase("mmdit-tiny");
        Conditioning.TextEmbeddings e = c.text();
        try (Backend b = onnx(spec, 1)) {
            Tensor out = Tensor.zeros(c.out().shape());
            int n = c.t().length;
            var narrow = new Conditioning.TextEmbeddings(new float[n * e.tokens() * 20], e.tokens(), 20, e.pooled(),
                    e.pooledWidth());
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), narrow, null), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("width 20")
                    .hasMessageContaining("24");
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), new int[n]), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("conditioned on text");
            float[] late = c.t().clone();
            late[1] = 1000.5f;
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), late, e, null), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time[1]");
            StepCache store = new StepCache(new StepCache.Use[] {StepCache.Use.STORE, StepCache.Use.STORE,
                StepCache.Use.STORE}, new float[3][spec.tokens() * spec.hiddenSize()]);
            assertThat(b.supportsStepCache()).isFalse();
            assertThatThrownBy(() -> b.forward(c.batch().withCache(store), out, () -> false))
                    .isInstanceOf(BackendException.class).hasMessageContaining("cannot cache steps");
        }
    }

    /** The checkpoint is validated as on the java backend before any graph is built: a missing tensor is named. */
    @Test
    void aMissingShardIsNamed(@TempDir Path dir) throws Exception {
        Path src = fixture("mmdit-x-tiny");
        for (Path f : Files.list(src).toList()) {
            if (!f.getFileName().toString().endsWith("00002-of-00003.safetensors")) {
                Files.copy(f, dir.resolve(f.getFileName()));
            }
        }
        assertThatThrownBy(() -> onnx(spec(dir), 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("diffusion_pytorch_model-00002-of-00003.safetensors");
    }

    /**
     * The BF16 shards are read in place as BF16 (the graph's initializers are external data into them with their
     * stored type, cast in the graph) and give the values the F32 reference was computed from.
     */
    @Test
    void sixteenBitShardsLoadInPlace() throws Exception {
        Map<String, MmditCheckpoint.Located> located = MmditCheckpoint.locate(fixture("mmdit-x-tiny"));
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo("BF16"));
        ModelSpec spec = spec(fixture("mmdit-x-tiny"));
        try (OnnxMmditBackend b = (OnnxMmditBackend) onnx(spec, 1)) {
            assertThat(b.externalData().tensors()).isEqualTo(located.size());
            assertThat(b.externalData().bytesByFile().keySet()).containsExactlyInAnyOrder(
                    "diffusion_pytorch_model-00001-of-00003.safetensors",
                    "diffusion_pytorch_model-00002-of-00003.safetensors",
                    "diffusion_pytorch_model-00003-of-00003.safetensors");
            long stored = located.values().stream().mapToLong(t -> t.entry().byteLength()).sum();
            long elements = located.values().stream().mapToLong(t -> t.entry().numel()).sum();
            assertThat(stored).as("2 bytes per weight").isEqualTo(2 * elements);
            assertThat(b.externalData().bytesByFile().values().stream().mapToLong(Long::longValue).sum())
                    .isEqualTo(stored);
            Case c = forwardCase("mmdit-x-tiny");
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
        assertThat(Arrays.stream(spec.directory().toFile().list()).filter(f -> f.endsWith(".onnx"))).isEmpty();
    }

    /**
     * With onnx.optimization=none ONNX Runtime folds nothing: the BF16 initializers stay BF16 in its memory and the
     * graph's Casts run in every pass (with any optimisation it folds them into float32 constants at load;
     * docs/TEXT_MODELS.md). The function is the same.
     */
    @Test
    void unoptimisedTheCastsRunInEveryPass() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-x-tiny"));
        Case c = forwardCase("mmdit-x-tiny");
        try (Backend b = Fixtures.provider(OnnxBackendProvider.NAME).create(spec,
                new BackendOptions(1, Map.of(OnnxRunner.OPTIMIZATION_OPTION, "none")))) {
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
    }
}
