package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderRules.ClipActivation;
import io.ditserve.backend.TextEncoderSpec;
import java.util.Map;
import java.util.Set;

/**
 * transformers' CLIPTextModelWithProjection on the Java backend (docs/TEXT_MODELS.md, "Text encoders";
 * reference tools/sd3/clip_text.py): token + position embeddings; per layer x += out_proj(attn(LN1(x))) with a
 * causal mask and scale 1/√head_dim, then x += fc2(act(fc1(LN2(x)))); the hidden state returned is
 * hidden_states[{@link TextEncoderSpec#hiddenLayer}] (SD3: the penultimate layer's raw output, before
 * final_layer_norm); the pooled vector is final_layer_norm(last layer) at the EOS position, projected by
 * text_projection (no bias).
 *
 * <p>Pooling position per row, as transformers and the reference choose it: eos_token_id 2 (the legacy value
 * released CLIP configs carry) or a row whose highest id is 49407 (CLIP's EOS) pools at the argmax of the ids (its
 * first maximum); otherwise at the first position holding eos_token_id, or 0 when there is none. The reference
 * decides the 49407 case for the whole batch; per row the two agree on every batch whose rows all or none reach
 * 49407, which is every batch a CLIP tokenizer makes.
 *
 * <p>Linear layers run on {@link MatMul} (weights packed once at load: q, k, v as one product) over the threads of a
 * {@link Parallel} pool this encoder owns ({@link TextLayers}); every row is computed in one fixed order, so a prompt gets the same bits
 * alone and in any batch. One encode at a time.
 */
public final class ClipTextEncoder implements TextEncoder {
    /** CLIP's EOS id; a row whose highest id is this pools at its argmax (see the class comment). */
    static final int CLIP_EOS = TextEncoderRules.CLIP_EOS;

    private record Norm(float[] weight, float[] bias) {}

    private record Layer(Norm ln1, TextLayers.Linear qkv, TextLayers.Linear out, Norm ln2, TextLayers.Linear fc1,
            TextLayers.Linear fc2) {}

    private final TextEncoderSpec spec;
    private final int d;
    private final int tokens;
    private final int heads;
    private final int headDim;
    private final float eps;
    private final float attentionScale;
    private final ClipActivation activation;
    private final Table tokenEmbedding; // [vocab, d]
    private final float[] positionEmbedding; // [tokens, d] (the first rows of the table)
    private final Layer[] layers;
    private final Norm finalNorm;
    private final TextLayers.Linear projection;
    private final TextLayers nn;

    private ClipTextEncoder(TextEncoderSpec spec, TextEncoderWeights w, int threads) throws BackendException {
        this.spec = spec;
        this.d = spec.hiddenSize();
        this.tokens = spec.maxTokens();
        this.heads = spec.heads();
        this.headDim = spec.headDim();
        this.eps = (float) spec.eps();
        this.attentionScale = (float) Math.pow(headDim, -0.5);
        this.activation = TextEncoderRules.clipActivation(spec);
        String e = "text_model.embeddings.";
        tokenEmbedding = w.table(e + "token_embedding.weight");
        float[] table = w.floats(e + "position_embedding.weight");
        positionEmbedding = java.util.Arrays.copyOf(table, tokens * d);
        layers = new Layer[spec.layers()];
        int f = spec.intermediate();
        for (int i = 0; i < layers.length; i++) {
            String p = "text_model.encoder.layers." + i + ".";
            String a = p + "self_attn.";
            TextLayers.Linear qkv = w.linear(
                    new String[] {a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight"},
                    new String[] {a + "q_proj.bias", a + "k_proj.bias", a + "v_proj.bias"}, d, d);
            layers[i] = new Layer(norm(w, p + "layer_norm1"), qkv,
                    linear(w, p + "self_attn.out_proj", d, d), norm(w, p + "layer_norm2"),
                    linear(w, p + "mlp.fc1", f, d), linear(w, p + "mlp.fc2", d, f));
        }
        finalNorm = norm(w, "text_model.final_layer_norm");
        projection = w.linear("text_projection.weight", null, spec.projectionDim(), d);
        nn = new TextLayers(threads, "ditserve-clip-" + spec.role());
    }

    /** Bytes the weights take in memory as loaded (16-bit where the checkpoint's F16/BF16 were kept). */
    long weightBytes() {
        long b = tokenEmbedding.bytes() + 4L * positionEmbedding.length + TextLayers.Linear.bytes(projection)
                + 4L * (finalNorm.weight().length + finalNorm.bias().length);
        for (Layer l : layers) {
            b += TextLayers.Linear.bytes(l.qkv(), l.out(), l.fc1(), l.fc2())
                    + 4L * (l.ln1().weight().length + l.ln1().bias().length + l.ln2().weight().length
                            + l.ln2().bias().length);
        }
        return b;
    }

    private static TextLayers.Linear linear(TextEncoderWeights w, String prefix, int out, int in)
            throws BackendException {
        return w.linear(prefix + ".weight", prefix + ".bias", out, in);
    }

    private static Norm norm(TextEncoderWeights w, String prefix) throws BackendException {
        return new Norm(w.floats(prefix + ".weight"), w.floats(prefix + ".bias"));
    }

    /**
     * Loads a CLIPTextModelWithProjection folder ({@code model.safetensors} or its shards) for {@code spec}
     * (read by {@code TextEncoderConfigs.load}) on {@code options.threads()} threads. Every tensor is checked:
     * a missing, unexpected or misshapen one fails naming it.
     */
    public static TextEncoder create(TextEncoderSpec spec, BackendOptions options) throws BackendException {
        if (spec.kind() != TextEncoderSpec.Kind.CLIP_WITH_PROJECTION) {
            throw new BackendException(spec.directory() + ": " + spec.kind().className()
                    + " is not a CLIP text model");
        }
        TextEncoderRules.checkHiddenLayer(spec);
        String pos = "text_model.embeddings.position_embedding.weight";
        String ids = "text_model.embeddings.position_ids";
        try (TextEncoderWeights w = TextEncoderWeights.open(spec.directory(), expectedShapes(spec), Set.of(pos, ids),
                JavaDitBackend.keep16(options))) {
            if (!w.has(pos)) {
                throw new BackendException(spec.directory() + ": tensor '" + pos + "' is missing");
            }
            long[] shape = w.entry(pos).shape();
            if (shape.length != 2 || shape[1] != spec.hiddenSize() || shape[0] < spec.maxTokens()) {
                throw new BackendException(spec.directory() + ": tensor '" + pos + "' has shape "
                        + java.util.Arrays.toString(shape) + ", expected [≥ " + spec.maxTokens() + ", "
                        + spec.hiddenSize() + "]");
            }
            if (w.has(ids)) { // transformers' legacy buffer: must be 0 … max − 1
                long[] v = w.longs(ids);
                for (int i = 0; i < v.length; i++) {
                    if (v[i] != i || v.length != shape[0]) {
                        throw new BackendException(spec.directory() + ": tensor '" + ids + "' is not 0 … "
                                + (shape[0] - 1));
                    }
                }
            }
            return new ClipTextEncoder(spec, w, Math.max(1, options.threads()));
        }
    }

    /** The tensors of the checkpoint with their shapes, as the api's checkpoint rules state them. */
    static Map<String, long[]> expectedShapes(TextEncoderSpec s) {
        return io.ditserve.backend.TextEncoderCheckpoint.expectedShapes(s);
    }

    @Override
    public TextEncoderSpec spec() {
        return spec;
    }

    @Override
    public String backendName() {
        return JavaBackendProvider.NAME;
    }

    @Override
    public synchronized Output encode(int[][] ids, Cancellation cancel) throws BackendException {
        int n = TextEncoderRules.checkIds(spec, ids);
        float[] hidden = new float[n * tokens * d];
        float[] pooled = new float[n * spec.projectionDim()];
        if (n > 0 && !nn.parallel.run(() -> compute(ids, hidden, pooled, cancel))) {
            throw new BackendException.Cancelled();
        }
        return new Output(hidden, tokens, d, pooled);
    }

    private boolean compute(int[][] ids, float[] hidden, float[] pooledOut, Cancellation cancel) {
        int n = ids.length;
        int rows = n * tokens;
        float[] x = new float[rows * d];
        float[] h = new float[rows * d];
        float[] qkv = new float[rows * 3 * d];
        float[] att = new float[rows * d];
        float[] mlp = new float[rows * spec.intermediate()];
        for (int b = 0; b < n; b++) {
            for (int t = 0; t < tokens; t++) {
                int dst = (b * tokens + t) * d;
                tokenEmbedding.row(ids[b][t], x, dst);
                for (int k = 0; k < d; k++) {
                    x[dst + k] += positionEmbedding[t * d + k];
                }
            }
        }
        if (spec.hiddenLayer() == 0) {
            System.arraycopy(x, 0, hidden, 0, rows * d);
        }
        for (int i = 0; i < layers.length; i++) {
            if (cancel.isCancelled()) {
                return false;
            }
            Layer l = layers[i];
            layerNorm(x, rows, l.ln1(), h);
            nn.linear(h, rows, l.qkv(), qkv);
            nn.attention(qkv, n, tokens, heads, headDim, attentionScale, true, null, att);
            nn.linearAdd(att, rows, l.out(), x);
            layerNorm(x, rows, l.ln2(), h);
            if (activation == ClipActivation.GELU_TANH) {
                nn.linearGelu(h, rows, l.fc1(), mlp);
            } else {
                nn.linear(h, rows, l.fc1(), mlp);
                activate(mlp, rows, spec.intermediate());
            }
            nn.linearAdd(mlp, rows, l.fc2(), x);
            if (i + 1 == spec.hiddenLayer()) {
                System.arraycopy(x, 0, hidden, 0, rows * d);
            }
        }
        if (cancel.isCancelled()) {
            return false;
        }
        // final_layer_norm is per token: only the pooled rows need it
        float[] pooled = new float[n * d];
        for (int b = 0; b < n; b++) {
            System.arraycopy(x, (b * tokens + eosPosition(ids[b])) * d, pooled, b * d, d);
        }
        layerNorm(pooled, n, finalNorm, pooled);
        nn.linear(pooled, n, projection, pooledOut);
        return true;
    }

    /** The pooled position of one row (see the class comment; the rule is the api's TextEncoderRules). */
    int eosPosition(int[] row) {
        return io.ditserve.backend.TextEncoderRules.clipPoolPosition(spec, row);
    }

    // -- layers -------------------------------------------------------------------------------------------------

    /** dst rows = LayerNorm(src rows)·weight + bias (mean and biased variance in double, eps from the config). */
    private void layerNorm(float[] src, int rows, Norm norm, float[] dst) {
        nn.forRows(rows, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                int off = r * d;
                double mean = 0;
                for (int k = 0; k < d; k++) {
                    mean += src[off + k];
                }
                mean /= d;
                double var = 0;
                for (int k = 0; k < d; k++) {
                    double c = src[off + k] - mean;
                    var += c * c;
                }
                float inv = (float) (1.0 / Math.sqrt(var / d + eps));
                float m = (float) mean;
                for (int k = 0; k < d; k++) {
                    dst[off + k] = (src[off + k] - m) * inv * norm.weight()[k] + norm.bias()[k];
                }
            }
        });
    }

    /** The MLP activation, in place, for quick_gelu and the exact (erf) GELU. */
    private void activate(float[] a, int rows, int width) {
        nn.forRows(rows, (r0, r1) -> {
            for (int i = r0 * width; i < r1 * width; i++) {
                float v = a[i];
                a[i] = activation == ClipActivation.QUICK_GELU ? (float) (v / (1.0 + Math.exp(-1.702 * v)))
                        : (float) (0.5 * v * (1.0 + Erf.erf(v / Math.sqrt(2.0))));
            }
        });
    }

    /**
     * The error function in double precision (|error| ≲ 1e-15), for the exact GELU (Java has none): for |x| < 3 the
     * series erf(x) = 2/√π·e^(−x²)·Σ 2ⁿx^(2n+1)/(1·3·…·(2n+1)) (all terms positive, no cancellation); above, 1 −
     * erfc(|x|) with erfc from its continued fraction (Lentz's method), which converges fast there.
     */
    static final class Erf {
        private static final double TWO_OVER_SQRT_PI = 2.0 / Math.sqrt(Math.PI);

        private Erf() {}

        static double erf(double x) {
            double ax = Math.abs(x);
            if (ax < 3.0) {
                double x2 = x * x;
                double term = x;
                double sum = x;
                for (int n = 1; n < 200; n++) {
                    term *= 2.0 * x2 / (2 * n + 1);
                    sum += term;
                    if (Math.abs(term) < 1e-17 * Math.abs(sum)) {
                        break;
                    }
                }
                return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
            }
            double r = 1.0 - erfc(ax);
            return x < 0 ? -r : r;
        }

        /** erfc(x) for x ≥ 3: e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …))))). */
        static double erfc(double x) {
            if (x > 27) {
                return 0.0;
            }
            double tiny = 1e-300;
            double f = x;
            double c = x;
            double dd = 0;
            for (int k = 1; k < 500; k++) {
                double a = k / 2.0;
                dd = x + a * dd;
                dd = Math.abs(dd) < tiny ? tiny : dd;
                c = x + a / c;
                c = Math.abs(c) < tiny ? tiny : c;
                dd = 1 / dd;
                double delta = c * dd;
                f *= delta;
                if (Math.abs(delta - 1) < 1e-16) {
                    break;
                }
            }
            return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
        }
    }

    @Override
    public void close() {
        nn.close();
    }
}
