package io.ditserve.backend.cuda;

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
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;

/**
 * The SD3 fixtures of tools/fixtures as the cuda tests and {@link CudaParityCheck} read them (no JUnit here: the GPU
 * bundle runs the check without it): the MMDiT folders mmdit-tiny and mmdit-x-tiny with their forward case
 * (tools/make_mmdit_fixtures.py), and the text encoder folders clip-tiny, clip-tiny-g and t5-tiny with theirs
 * (tools/text/make_encoder_fixtures.py).
 */
final class TextFixtures {
    /** The MMDiT fixtures. */
    static final String[] MMDITS = {"mmdit-tiny", "mmdit-x-tiny"};
    /** The text encoder fixtures. */
    static final String[] ENCODERS = {"clip-tiny", "clip-tiny-g", "t5-tiny"};
    /** Context tokens of the MMDiT fixtures' cases. */
    private static final int CONTEXT_TOKENS = 7;
    /** T5's sequence length in the t5-tiny cases. */
    private static final int T5_TOKENS = 256;

    private TextFixtures() {}

    static Path dir(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    // ---- MMDiT ----

    /** One forward case: inputs and the expected output. */
    record MmditCase(Tensor x, float[] t, Conditioning.TextEmbeddings text, Tensor out) {
        ForwardBatch batch() {
            return new ForwardBatch(x, t, text, null);
        }
    }

    static ModelSpec mmditSpec(String name) throws BackendException {
        return ModelConfigs.loadMmdit(dir(name), name, "", ModelSpec.Space.LATENT, CONTEXT_TOKENS,
                new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    /** The fixture's case: 3 samples, times 1000, 3 and 417.25, each with its own 7 context tokens. */
    static MmditCase mmditCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(dir(name).resolve("cases.safetensors"))) {
            Safetensors.Entry ctx = st.entry("forward.context");
            Safetensors.Entry pooled = st.entry("forward.pooled");
            Conditioning.TextEmbeddings text = new Conditioning.TextEmbeddings(st.floats("forward.context"),
                    (int) ctx.shape()[1], (int) ctx.shape()[2], st.floats("forward.pooled"), (int) pooled.shape()[1]);
            return new MmditCase(st.tensor("forward.x"), st.floats("forward.t"), text, st.tensor("forward.out"));
        }
    }

    /** n random samples: N(0, 1) inputs, context and pooled vectors, times in [0, 1000] with 1000 first. */
    static MmditCase randomCase(ModelSpec spec, int n, int tokens, long seed) {
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
    static MmditCase sample(MmditCase c, int k) {
        Conditioning.TextEmbeddings e = c.text();
        int ctx = e.tokens() * e.width();
        return new MmditCase(Fixtures.sample(c.x(), k), new float[] {c.t()[k]}, new Conditioning.TextEmbeddings(
                Arrays.copyOfRange(e.context(), k * ctx, (k + 1) * ctx), e.tokens(), e.width(),
                Arrays.copyOfRange(e.pooled(), k * e.pooledWidth(), (k + 1) * e.pooledWidth()), e.pooledWidth()),
                Fixtures.sample(c.out(), k));
    }

    /** The backend's output on a case's inputs. */
    static Tensor run(Backend b, MmditCase c) throws BackendException {
        Tensor out = Tensor.zeros(c.out().shape());
        b.forward(c.batch(), out, Cancellation.NEVER);
        return out;
    }

    // ---- text encoders ----

    static boolean isT5(String name) {
        return name.startsWith("t5");
    }

    /** Ids and the reference's hidden state (CLIP: hidden_states[-2]; T5: the last) and CLIP's text_embeds. */
    record EncoderCases(int[][] ids, float[] hidden, float[] pooled) {}

    static TextEncoderSpec encoderSpec(String name) throws BackendException {
        return encoderSpec(dir(name), isT5(name));
    }

    static TextEncoderSpec encoderSpec(Path dir, boolean t5) throws BackendException {
        return t5 ? TextEncoderConfigs.load(dir, "text_encoder_3", T5_TOKENS)
                : TextEncoderConfigs.load(dir, "text_encoder", 0);
    }

    static EncoderCases encoderCases(String name) throws BackendException {
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
}
