package io.ditserve.backend.java;

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
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * SD3's MMDiT on the java backend against tools/sd3/mmdit.py, on the fixtures of tools/make_mmdit_fixtures.py:
 * mmdit-tiny (SD3-medium's structure, F32 in one file) and mmdit-x-tiny (SD3.5's RMS qk-norm and dual attention in
 * blocks 0 and 1, BF16 in three shards with their index); docs/TEXT_MODELS.md "MMDiT".
 */
class MmditConformanceTest {
    private static final double TOLERANCE = 1e-4;
    private static final int CONTEXT_TOKENS = 7; // the fixtures' cases

    @TempDir
    Path dir;

    /** One forward case of a fixture: inputs and the reference's output. */
    record Case(Tensor x, float[] t, Conditioning.TextEmbeddings text, Tensor out) {
        ForwardBatch batch() {
            return new ForwardBatch(x, t, text, null);
        }
    }

    static ModelSpec spec(Path transformer) throws BackendException {
        return ModelConfigs.loadMmdit(transformer, transformer.getFileName().toString(), "", ModelSpec.Space.LATENT,
                CONTEXT_TOKENS, new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    static Path fixture(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
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

    static Backend backend(ModelSpec spec, int threads) throws BackendException {
        return new JavaBackendProvider().create(spec, BackendOptions.ofThreads(threads));
    }

    static Tensor run(Backend b, Case c) throws BackendException {
        Tensor out = Tensor.zeros(c.out().shape());
        b.forward(c.batch(), out, Cancellation.NEVER);
        return out;
    }

    /** A batch of n random samples: N(0, 1) inputs, context and pooled, times in [0, 1000] with 1000 first. */
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

    /** Sample k of a case as a case of one. */
    static Case sample(Case c, int k) {
        Conditioning.TextEmbeddings e = c.text();
        int ctx = e.tokens() * e.width();
        return new Case(Fixtures.sample(c.x(), k), new float[] {c.t()[k]}, new Conditioning.TextEmbeddings(
                Arrays.copyOfRange(e.context(), k * ctx, (k + 1) * ctx), e.tokens(), e.width(),
                Arrays.copyOfRange(e.pooled(), k * e.pooledWidth(), (k + 1) * e.pooledWidth()), e.pooledWidth()),
                Fixtures.sample(c.out(), k));
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({"mmdit-tiny, 1", "mmdit-tiny, 2", "mmdit-x-tiny, 1", "mmdit-x-tiny, 2"})
    void matchesTheReference(String name, int threads) throws Exception {
        ModelSpec spec = spec(fixture(name));
        Case c = forwardCase(name);
        try (Backend b = backend(spec, threads)) {
            double err = Fixtures.relativeError(run(b, c), c.out());
            System.out.printf("%s, %d threads: max relative error %.3g%n", name, threads, err);
            assertThat(err).isLessThan(TOLERANCE);
        }
    }

    /**
     * Each sample of a batch gets the bytes it gets alone, and on one thread as on two: 7 samples (more than one
     * 6-row kernel block, and not a multiple of it) with 11 context tokens each.
     */
    @ParameterizedTest
    @ValueSource(strings = {"mmdit-tiny", "mmdit-x-tiny"})
    void samplesOfABatchAreIndependent(String name) throws Exception {
        ModelSpec spec = spec(fixture(name));
        Case c = randomCase(spec, 7, 11, 5);
        try (Backend b = backend(spec, 2)) {
            Tensor batched = run(b, c);
            for (int k = 0; k < 7; k++) {
                Tensor alone = run(b, sample(c, k));
                assertThat(alone.data()).as("sample %d", k).isEqualTo(Fixtures.sample(batched, k).data());
            }
            try (Backend one = backend(spec, 1)) { // the thread count changes no bit either
                assertThat(run(one, c).data()).isEqualTo(batched.data());
            }
        }
    }

    /** The flag is polled between blocks; a cancelled pass throws Cancelled and the backend stays usable. */
    @Test
    void cancellationStopsThePass() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-x-tiny"));
        Case c = forwardCase("mmdit-x-tiny");
        try (Backend b = backend(spec, 2)) {
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> b.forward(c.batch(), Tensor.zeros(c.out().shape()),
                    () -> polls.incrementAndGet() > 2)).isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isEqualTo(3);
            AtomicInteger all = new AtomicInteger();
            b.forward(c.batch(), Tensor.zeros(c.out().shape()), () -> all.incrementAndGet() < 0);
            assertThat(all.get()).as("once before each block and once before norm_out").isEqualTo(spec.depth() + 1);
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
    }

    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-tiny"));
        Case c = forwardCase("mmdit-tiny");
        Conditioning.TextEmbeddings e = c.text();
        try (Backend b = backend(spec, 1)) {
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

    @Test
    void theScalarPathSaysItHasNoMmdit() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-tiny"));
        assertThatThrownBy(() -> JavaBackends.backend(spec, "scalar", 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("java.path=scalar has no MMDiT");
    }

    /** The mmdit-tiny tensors, decoded, for tests that write a changed copy. */
    private Map<String, SafetensorsWriter.F32> tensorsOf(String name) throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        for (Map.Entry<String, MmditCheckpoint.Located> e : MmditCheckpoint.locate(fixture(name)).entrySet()) {
            try (Safetensors st = Safetensors.open(e.getValue().file())) {
                tensors.put(e.getKey(), new SafetensorsWriter.F32(e.getValue().entry().shape(), st.floats(e.getKey())));
            }
        }
        return tensors;
    }

    /** Writes config.json of {@code name} and {@code tensors} as one F32 file into {@code dir}; loads it. */
    private Backend loadCopy(String name, Map<String, SafetensorsWriter.F32> tensors) throws Exception {
        Files.copy(fixture(name).resolve(ModelConfigs.CONFIG_FILE), dir.resolve(ModelConfigs.CONFIG_FILE));
        SafetensorsWriter.write(dir.resolve(MmditCheckpoint.SINGLE_FILE), tensors);
        return backend(spec(dir), 1);
    }

    @Test
    void aMissingTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        tensors.remove("transformer_blocks.1.attn.add_k_proj.bias");
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("'transformer_blocks.1.attn.add_k_proj.bias' is missing");
    }

    @Test
    void anUnexpectedTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        // the last block is context_pre_only: it has no to_add_out
        tensors.put("transformer_blocks.2.attn.to_add_out.bias", new SafetensorsWriter.F32(new long[] {32},
                new float[32]));
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'transformer_blocks.2.attn.to_add_out.bias'")
                .hasMessageContaining(MmditCheckpoint.SINGLE_FILE);
    }

    @Test
    void aMisshapenTensorIsNamed() throws Exception {
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-tiny");
        tensors.put("transformer_blocks.0.norm1.linear.bias", new SafetensorsWriter.F32(new long[] {288},
                new float[288])); // 9D: a dual-attention block's, in a model without any
        assertThatThrownBy(() -> loadCopy("mmdit-tiny", tensors).close()).isInstanceOf(BackendException.class)
                .hasMessageContaining("'transformer_blocks.0.norm1.linear.bias' has shape [288], expected [192]");
    }

    /** The index must list every tensor of a shard under that shard, and every indexed tensor must be there. */
    @Test
    void anIndexThatDisagreesWithItsShardsFails() throws Exception {
        Path src = fixture("mmdit-x-tiny");
        for (Path f : Files.list(src).toList()) {
            Files.copy(f, dir.resolve(f.getFileName()));
        }
        Path index = dir.resolve(MmditCheckpoint.INDEX_FILE);
        String json = Files.readString(index);
        Files.writeString(index, json.replace("\"proj_out.bias\": \"diffusion_pytorch_model-00001-of-00003",
                "\"proj_out.bias\": \"diffusion_pytorch_model-00002-of-00003"));
        assertThat(Files.readString(index)).isNotEqualTo(json);
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'proj_out.bias'");
        Files.writeString(index, json.replace("\"weight_map\": {", "\"weight_map\": {\n    \"extra.weight\": "
                + "\"diffusion_pytorch_model-00003-of-00003.safetensors\","));
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'extra.weight'");
        Files.writeString(index, json.replace("diffusion_pytorch_model-00003-of-00003.safetensors",
                "../diffusion_pytorch_model-00003-of-00003.safetensors"));
        assertThatThrownBy(() -> MmditCheckpoint.locate(dir)).isInstanceOf(BackendException.class)
                .hasMessageContaining("not a .safetensors file name in the folder");
    }

    /**
     * The BF16 shards load as the F32 values they hold: the same folder rewritten as one F32 file (every value
     * decoded exactly) gives the same bytes; and each BF16 weight is its F32 value rounded to 8 bits of mantissa.
     */
    @Test
    void bf16ShardsEqualTheirF32Copy() throws Exception {
        Map<String, MmditCheckpoint.Located> located = MmditCheckpoint.locate(fixture("mmdit-x-tiny"));
        assertThat(located.values().stream().map(MmditCheckpoint.Located::file).distinct()).hasSize(3);
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo("BF16"));
        Map<String, SafetensorsWriter.F32> tensors = tensorsOf("mmdit-x-tiny");
        for (SafetensorsWriter.F32 t : tensors.values()) {
            for (float v : t.values()) {
                assertThat(Float.floatToRawIntBits(v) & 0xffff).isZero();
            }
        }
        Case c = forwardCase("mmdit-x-tiny");
        try (Backend shards = backend(spec(fixture("mmdit-x-tiny")), 2);
                Backend f32 = loadCopy("mmdit-x-tiny", tensors)) {
            assertThat(run(f32, c).data()).isEqualTo(run(shards, c).data());
        }
    }

    /** A context longer than the spec's grows the buffers once and is computed like any other. */
    @Test
    void aLongerContextGrowsTheBuffers() throws Exception {
        ModelSpec spec = spec(fixture("mmdit-x-tiny"));
        Case c = randomCase(spec, 2, 40, 9);
        try (Backend b = backend(spec, 2)) {
            Tensor first = run(b, c);
            run(b, randomCase(spec, 3, 1, 10));
            assertThat(run(b, c).data()).isEqualTo(first.data());
            assertThat(run(b, sample(c, 1)).data()).isEqualTo(Fixtures.sample(first, 1).data());
        }
    }
}
