package io.ditserve.backend.testkit;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.function.Consumer;

/**
 * The SD3 fixtures under tools/fixtures and the helpers every backend's tests share to read and run them: the MMDiT
 * folders mmdit-tiny (SD3-medium's structure, F32 in one file) and mmdit-x-tiny (SD3.5's RMS qk-norm and dual
 * attention in blocks 0 and 1, BF16 in three shards with their index) with their forward case, written by
 * tools/make_mmdit_fixtures.py; and the text encoder folders clip-tiny (quick_gelu, legacy eos_token_id 2, F32),
 * clip-tiny-g (exact GELU, first-EOS pooling, F16 in four shards) and t5-tiny (BF16, 256 tokens) with their cases,
 * written by tools/text/make_encoder_fixtures.py.
 *
 * <p>No JUnit or AssertJ here: the cuda backend's GPU check program (CudaParityCheck, in backends/cuda's test
 * sources) reads these fixtures on a GPU machine where tools/gpu/make_bundle.sh packs the test kit's jar without
 * them.
 */
public final class TextFixtures {
    /** The MMDiT fixtures. */
    public static final String[] MMDITS = {"mmdit-tiny", "mmdit-x-tiny"};
    /** The text encoder fixtures. */
    public static final String[] ENCODERS = {"clip-tiny", "clip-tiny-g", "t5-tiny"};
    /** Context tokens of the MMDiT fixtures' forward cases. */
    public static final int CONTEXT_TOKENS = 7;
    /** T5's sequence length in the t5-tiny cases (CLIP's, 77, is in the folders' configs). */
    public static final int T5_TOKENS = 256;

    private TextFixtures() {}

    /** A fixture folder by name: tools/fixtures/NAME. */
    public static Path dir(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    // ---- MMDiT ----

    /** One forward case: inputs and the reference's output ({@code out} is zeros for a random case). */
    public record MmditCase(Tensor x, float[] t, Conditioning.TextEmbeddings text, Tensor out) {
        /** The case's inputs as a text-conditioned pass. */
        public ForwardBatch batch() {
            return new ForwardBatch(x, t, text, null);
        }
    }

    /** The spec of an MMDiT fixture ({@link #MMDITS}). */
    public static ModelSpec mmditSpec(String name) throws BackendException {
        return mmditSpec(dir(name));
    }

    /** The spec of an MMDiT folder (a fixture or a changed copy of one), named after the folder. */
    public static ModelSpec mmditSpec(Path transformer) throws BackendException {
        return ModelConfigs.loadMmdit(transformer, transformer.getFileName().toString(), "", ModelSpec.Space.LATENT,
                CONTEXT_TOKENS, new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    /** The fixture's case: 3 samples, times 1000, 3 and 417.25, each with its own 7 context tokens. */
    public static MmditCase mmditCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(dir(name).resolve("cases.safetensors"))) {
            Safetensors.Entry ctx = st.entry("forward.context");
            Safetensors.Entry pooled = st.entry("forward.pooled");
            Conditioning.TextEmbeddings text = new Conditioning.TextEmbeddings(st.floats("forward.context"),
                    (int) ctx.shape()[1], (int) ctx.shape()[2], st.floats("forward.pooled"), (int) pooled.shape()[1]);
            return new MmditCase(st.tensor("forward.x"), st.floats("forward.t"), text, st.tensor("forward.out"));
        }
    }

    /**
     * n random samples, each with its own prompt embeddings: N(0, 1) inputs, context of {@code tokens} tokens and
     * pooled vectors, times in [0, 1000] with 1000 first; {@code out} is zeros of the output shape.
     */
    public static MmditCase randomCase(ModelSpec spec, int n, int tokens, long seed) {
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
        return new MmditCase(x, t, new Conditioning.TextEmbeddings(context, tokens, spec.text().jointAttentionDim(),
                pooled, spec.text().pooledProjectionDim()), Tensor.zeros(n, spec.outChannels(), size, size));
    }

    /** Sample k of a case as a case of one. */
    public static MmditCase sample(MmditCase c, int k) {
        Conditioning.TextEmbeddings e = c.text();
        int ctx = e.tokens() * e.width();
        return new MmditCase(Fixtures.sample(c.x(), k), new float[] {c.t()[k]}, new Conditioning.TextEmbeddings(
                Arrays.copyOfRange(e.context(), k * ctx, (k + 1) * ctx), e.tokens(), e.width(),
                Arrays.copyOfRange(e.pooled(), k * e.pooledWidth(), (k + 1) * e.pooledWidth()), e.pooledWidth()),
                Fixtures.sample(c.out(), k));
    }

    /** The backend's output on a case's inputs: one uncancelled forward into a fresh tensor. */
    public static Tensor run(Backend b, MmditCase c) throws BackendException {
        Tensor out = Tensor.zeros(c.out().shape());
        b.forward(c.batch(), out, Cancellation.NEVER);
        return out;
    }

    // ---- text encoders ----

    /** Whether a text encoder fixture is T5's (else CLIP's). */
    public static boolean isT5(String name) {
        return name.startsWith("t5");
    }

    /**
     * A fixture's cases: the ids [n][T] and the reference's hidden state (CLIP: hidden_states[-2], what SD3 takes;
     * T5: the last), and CLIP's text_embeds (null for T5).
     */
    public record EncoderCases(int[][] ids, float[] hidden, float[] pooled) {}

    /** The spec of a text encoder fixture ({@link #ENCODERS}). */
    public static TextEncoderSpec encoderSpec(String name) throws BackendException {
        return encoderSpec(dir(name), isT5(name));
    }

    /** The spec of a text encoder folder (a fixture or a changed copy of one): T5 as text_encoder_3, else CLIP. */
    public static TextEncoderSpec encoderSpec(Path dir, boolean t5) throws BackendException {
        return t5 ? TextEncoderConfigs.load(dir, "text_encoder_3", T5_TOKENS)
                : TextEncoderConfigs.load(dir, "text_encoder", 0);
    }

    public static EncoderCases encoderCases(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(dir(name).resolve("cases.safetensors"))) {
            long[] flat = st.longs("ids");
            int n = (int) st.entry("ids").shape()[0];
            int t = (int) st.entry("ids").shape()[1];
            int[][] ids = new int[n][t];
            for (int i = 0; i < flat.length; i++) {
                ids[i / t][i % t] = Math.toIntExact(flat[i]);
            }
            return isT5(name) ? new EncoderCases(ids, st.floats("last_hidden_state"), null)
                    : new EncoderCases(ids, st.floats("hidden"), st.floats("text_embeds"));
        }
    }

    /** The prompts the ids of a text encoder fixture's cases tokenize (the cases file's metadata). */
    public static List<String> prompts(String name) throws BackendException, IOException {
        try (Safetensors st = Safetensors.open(dir(name).resolve("cases.safetensors"))) {
            return List.of(new ObjectMapper().readValue(st.metadata().get("prompts"), String[].class));
        }
    }

    /** transformers' T5 bucket of each rel = key − query in −600..600 (t5-tiny's cases; 32 buckets, up to 128). */
    public static long[] t5Buckets() throws BackendException {
        try (Safetensors st = Safetensors.open(dir("t5-tiny").resolve("cases.safetensors"))) {
            return st.longs("buckets");
        }
    }

    /**
     * A copy in {@code dst} of a one-file text encoder fixture ({@code clip-tiny}, {@code t5-tiny}): its config.json,
     * and its model.safetensors decoded and rewritten as F32 after {@code edit} (to remove, add or reshape a tensor).
     */
    public static Path encoderCopy(String name, Path dst, Consumer<Map<String, SafetensorsWriter.F32>> edit)
            throws BackendException, IOException {
        Path src = dir(name);
        Files.copy(src.resolve("config.json"), dst.resolve("config.json"));
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(src.resolve("model.safetensors"))) {
            for (Safetensors.Entry e : st.entries().values()) {
                tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
            }
        }
        edit.accept(tensors);
        SafetensorsWriter.write(dst.resolve("model.safetensors"), tensors);
        return dst;
    }
}
