package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import java.util.Map;
import java.util.Set;

/**
 * transformers' T5EncoderModel, T5 v1.1 (SD3's text_encoder_3), on the Java backend (docs/TEXT_MODELS.md, "Text
 * encoders"; reference tools/sd3/t5_encoder.py): x = shared[ids]; a position bias [heads, T, T] from block 0's
 * relative_attention_bias (bidirectional buckets) added in every block; per block x += o(attention(RMS(x))) with no
 * 1/√d scaling and no mask, then x += wo(gelu_new(wi_0(h)) ⊙ wi_1(h)), h = RMS(x); the output is
 * final_layer_norm(x). RMS(x) = x·rsqrt(mean(x²) + eps)·weight. No linear layer has a bias.
 *
 * <p>The token embedding is {@code shared.weight}; {@code encoder.embed_tokens.weight} (its tied copy, which
 * safetensors files usually leave out) is accepted in its place or beside it. Weights are converted to float32 at
 * load. q, k, v are one product, and so are wi_0 and wi_1; every row is computed in one fixed order, so a prompt
 * gets the same bits alone and in any batch. One encode at a time.
 */
public final class T5TextEncoder implements TextEncoder {
    static final String SHARED = "shared.weight";
    static final String TIED = "encoder.embed_tokens.weight";

    private record Block(float[] ln0, TextLayers.Linear qkv, TextLayers.Linear o, float[] ln1, TextLayers.Linear wi,
            TextLayers.Linear wo) {}

    private final TextEncoderSpec spec;
    private final int d;
    private final int tokens;
    private final int heads;
    private final int headDim;
    private final int inner;
    private final int ff;
    private final float eps;
    private final Table embedding; // [vocab, d]
    private final float[] positionBias; // [heads, T, T]
    private final Block[] blocks;
    private final float[] finalNorm;
    private final TextLayers nn;

    private T5TextEncoder(TextEncoderSpec spec, TextEncoderWeights w, int threads) throws BackendException {
        this.spec = spec;
        this.d = spec.hiddenSize();
        this.tokens = spec.maxTokens();
        this.heads = spec.heads();
        this.headDim = spec.headDim();
        this.inner = heads * headDim;
        this.ff = spec.intermediate();
        this.eps = (float) spec.eps();
        embedding = w.table(w.has(SHARED) ? SHARED : TIED);
        float[] table = w.floats("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        positionBias = positionBias(table, heads, tokens, spec.relativeBuckets(), spec.relativeMaxDistance());
        blocks = new Block[spec.layers()];
        for (int i = 0; i < blocks.length; i++) {
            String a = "encoder.block." + i + ".layer.0.";
            String f = "encoder.block." + i + ".layer.1.";
            TextLayers.Linear qkv = w.linear(new String[] {a + "SelfAttention.q.weight", a + "SelfAttention.k.weight",
                a + "SelfAttention.v.weight"}, null, inner, d);
            TextLayers.Linear wi = w.linear(new String[] {f + "DenseReluDense.wi_0.weight",
                f + "DenseReluDense.wi_1.weight"}, null, ff, d);
            blocks[i] = new Block(w.floats(a + "layer_norm.weight"), qkv,
                    w.linear(a + "SelfAttention.o.weight", null, d, inner),
                    w.floats(f + "layer_norm.weight"), wi,
                    w.linear(f + "DenseReluDense.wo.weight", null, d, ff));
        }
        finalNorm = w.floats("encoder.final_layer_norm.weight");
        nn = new TextLayers(threads, "ditserve-t5-" + spec.role());
    }

    /** Bytes the weights take in memory as loaded (16-bit where the checkpoint's F16/BF16 were kept). */
    long weightBytes() {
        long b = embedding.bytes() + 4L * (positionBias.length + finalNorm.length);
        for (Block blk : blocks) {
            b += TextLayers.Linear.bytes(blk.qkv(), blk.o(), blk.wi(), blk.wo()) + 4L * (blk.ln0().length + blk.ln1().length);
        }
        return b;
    }

    /**
     * Loads a T5EncoderModel folder ({@code model.safetensors} or its shards) for {@code spec} (read by
     * {@code TextEncoderConfigs.load}) on {@code options.threads()} threads; every tensor is checked (a missing,
     * unexpected or misshapen one fails naming it).
     */
    public static TextEncoder create(TextEncoderSpec spec, BackendOptions options) throws BackendException {
        if (spec.kind() != TextEncoderSpec.Kind.T5_ENCODER) {
            throw new BackendException(spec.directory() + ": " + spec.kind().className() + " is not a T5 encoder");
        }
        Map<String, long[]> expected = expectedShapes(spec);
        try (TextEncoderWeights w = TextEncoderWeights.open(spec.directory(), expected, Set.of(SHARED, TIED),
                JavaDitBackend.keep16(options))) {
            long[] shape = {spec.vocab(), spec.hiddenSize()};
            if (!w.has(SHARED) && !w.has(TIED)) {
                throw new BackendException(spec.directory() + ": tensor '" + SHARED + "' is missing (nor is its tied copy '"
                        + TIED + "' there)");
            }
            for (String name : new String[] {SHARED, TIED}) {
                if (w.has(name) && !java.util.Arrays.equals(w.entry(name).shape(), shape)) {
                    throw new BackendException(spec.directory() + ": tensor '" + name + "' has shape "
                            + java.util.Arrays.toString(w.entry(name).shape()) + ", expected "
                            + java.util.Arrays.toString(shape));
                }
            }
            return new T5TextEncoder(spec, w, Math.max(1, options.threads()));
        }
    }

    /** The tensors of the checkpoint with their shapes, as the api's checkpoint rules state them. */
    static Map<String, long[]> expectedShapes(TextEncoderSpec s) {
        return io.ditserve.backend.TextEncoderCheckpoint.expectedShapes(s);
    }

    /** T5's bidirectional bucket of rel = key − query ({@link TextEncoderRules#t5Bucket}). */
    static int bucket(int rel, int buckets, int maxDistance) {
        return TextEncoderRules.t5Bucket(rel, buckets, maxDistance);
    }

    /** bias[h][i][j] = table[bucket(j − i)][h], table [buckets, heads]. */
    static float[] positionBias(float[] table, int heads, int tokens, int buckets, int maxDistance) {
        return TextEncoderRules.t5PositionBias(table, heads, tokens, buckets, maxDistance);
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
        TextEncoderRules.checkIds(spec, ids);
        float[] hidden = new float[ids.length * tokens * d];
        if (ids.length > 0 && !nn.parallel.run(() -> compute(ids, hidden, cancel))) {
            throw new BackendException.Cancelled();
        }
        return new Output(hidden, tokens, d, null);
    }

    private boolean compute(int[][] ids, float[] out, Cancellation cancel) {
        int n = ids.length;
        int rows = n * tokens;
        float[] x = new float[rows * d];
        float[] h = new float[rows * d];
        float[] qkv = new float[rows * 3 * inner];
        float[] att = new float[rows * inner];
        float[] gates = new float[rows * 2 * ff];
        float[] mlp = new float[rows * ff];
        for (int b = 0; b < n; b++) {
            for (int t = 0; t < tokens; t++) {
                embedding.row(ids[b][t], x, (b * tokens + t) * d);
            }
        }
        for (Block blk : blocks) {
            if (cancel.isCancelled()) {
                return false;
            }
            rmsNorm(x, rows, blk.ln0(), h);
            nn.linear(h, rows, blk.qkv(), qkv);
            nn.attention(qkv, n, tokens, heads, headDim, 1f, false, positionBias, att);
            nn.linearAdd(att, rows, blk.o(), x);
            rmsNorm(x, rows, blk.ln1(), h);
            nn.linear(h, rows, blk.wi(), gates);
            nn.forRows(rows, (r0, r1) -> {
                for (int r = r0; r < r1; r++) {
                    for (int k = 0; k < ff; k++) {
                        mlp[r * ff + k] = geluNew(gates[r * 2 * ff + k]) * gates[r * 2 * ff + ff + k];
                    }
                }
            });
            nn.linearAdd(mlp, rows, blk.wo(), x);
        }
        if (cancel.isCancelled()) {
            return false;
        }
        rmsNorm(x, rows, finalNorm, out);
        return true;
    }

    /** transformers' NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))). */
    static float geluNew(float x) {
        double v = x;
        return (float) (0.5 * v * (1.0 + Math.tanh(Math.sqrt(2.0 / Math.PI) * (v + 0.044715 * v * v * v))));
    }

    /** dst rows = src·rsqrt(mean(src²) + eps)·weight (the mean in double). */
    private void rmsNorm(float[] src, int rows, float[] weight, float[] dst) {
        nn.forRows(rows, (r0, r1) -> {
            for (int r = r0; r < r1; r++) {
                int off = r * d;
                double ss = 0;
                for (int k = 0; k < d; k++) {
                    ss += (double) src[off + k] * src[off + k];
                }
                float inv = (float) (1.0 / Math.sqrt(ss / d + eps));
                for (int k = 0; k < d; k++) {
                    dst[off + k] = weight[k] * (src[off + k] * inv);
                }
            }
        });
    }

    @Override
    public void close() {
        nn.close();
    }
}
