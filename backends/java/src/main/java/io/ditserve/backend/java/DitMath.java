package io.ditserve.backend.java;

import io.ditserve.backend.DitConstants;
import io.ditserve.backend.ModelSpec;

/**
 * The parts of the DiT forward pass that both compute paths share because they are rules, not kernels: the
 * timestep embedding (whose float32 rounding must follow the reference exactly), patch gathering and scattering,
 * and the scalar activation functions.
 */
final class DitMath {
    /** Size of the sinusoidal timestep embedding that feeds {@code t_embedder.mlp.0}. */
    static final int FREQ_DIM = DitConstants.FREQ_DIM;
    static final float LN_EPS = 1e-6f;
    /** √(2/π) of the tanh GELU, rounded to float as PyTorch does with a Python scalar. */
    static final float GELU_C = (float) Math.sqrt(2.0 / Math.PI);
    static final float GELU_A = 0.044715f;

    /** The timestep frequencies, computed once with the reference's float32 rounding. */
    private static final float[] FREQS = DitConstants.timestepFrequencies();

    private DitMath() {}

    /** Writes the 256 timestep features of {@code t} to {@code dst[off..]}: 128 cosines, then 128 sines. */
    static void timestepEmbedding(float t, float[] dst, int off) {
        int half = FREQS.length;
        for (int k = 0; k < half; k++) {
            // float32 product, like t.float() * freqs; an integer timestep converts to float exactly, so DiT's
            // features are the same bits as when t was an int
            float arg = t * FREQS[k];
            dst[off + k] = (float) Math.cos(arg);
            dst[off + half + k] = (float) Math.sin(arg);
        }
    }

    /**
     * Gathers the patches of x [n, C_in, H, W] into rows [n·T, C_in·p·p]: tokens row by row over the grid, each
     * patch flattened channel-major (c, row in patch, column in patch) like the conv weight (D, C_in, p, p).
     */
    static void patchify(ModelSpec s, float[] x, int n, float[] patches) {
        int c = s.inChannels();
        int p = s.patchSize();
        int g = s.gridSize();
        int size = s.inputSize();
        int dst = 0;
        for (int b = 0; b < n; b++) {
            for (int i = 0; i < g; i++) {
                for (int j = 0; j < g; j++) {
                    for (int ch = 0; ch < c; ch++) {
                        for (int a = 0; a < p; a++) {
                            int src = ((b * c + ch) * size + i * p + a) * size + j * p;
                            System.arraycopy(x, src, patches, dst, p);
                            dst += p;
                        }
                    }
                }
            }
        }
    }

    /** Scatters rows [n·T, p·p·C_out] to out [n, C_out, H, W]: v[(a·p + b)·C_out + ch] → out[ch, i·p + a, j·p + b]. */
    static void unpatchify(ModelSpec s, float[] tokens, int n, float[] out) {
        int c = s.outChannels();
        int p = s.patchSize();
        int g = s.gridSize();
        int size = s.inputSize();
        int src = 0;
        for (int b = 0; b < n; b++) {
            for (int i = 0; i < g; i++) {
                for (int j = 0; j < g; j++) {
                    for (int a = 0; a < p; a++) {
                        for (int bb = 0; bb < p; bb++) {
                            for (int ch = 0; ch < c; ch++) {
                                out[((b * c + ch) * size + i * p + a) * size + j * p + bb] = tokens[src++];
                            }
                        }
                    }
                }
            }
        }
    }

    static float silu(float v) {
        return v / (1f + (float) Math.exp(-v));
    }

    /** GELU, tanh approximation: 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³))). */
    static float gelu(float u) {
        return 0.5f * u * (1f + (float) Math.tanh(GELU_C * (u + GELU_A * u * u * u)));
    }

    /**
     * The LayerNorm epsilon of qk-norm: timm's Attention builds nn.LayerNorm(head_dim) with torch's default 1e-5 (not
     * the 1e-6 of the blocks' parameter-free norms); tools/dit/model.py QK_NORM_EPS.
     */
    static final double QK_NORM_EPS = 1e-5;

    /**
     * qk-norm of one head of one token, in place: v[off .. off + len) = (v − mean)/√(var + eps)·weight + bias, the
     * mean and (biased) variance accumulated in double.
     */
    static void headNorm(float[] v, int off, int len, float[] weight, float[] bias) {
        double mean = 0;
        for (int e = 0; e < len; e++) {
            mean += v[off + e];
        }
        mean /= len;
        double var = 0;
        for (int e = 0; e < len; e++) {
            double c = v[off + e] - mean;
            var += c * c;
        }
        float inv = (float) (1.0 / Math.sqrt(var / len + QK_NORM_EPS));
        float m = (float) mean;
        for (int e = 0; e < len; e++) {
            v[off + e] = (v[off + e] - m) * inv * weight[e] + bias[e];
        }
    }

    /** qk-norm of every head of q and k in rows [row0, row0 + rows) of a qkv activation [·, 3D]. */
    static void qkNorm(float[] qkv, int row0, int rows, int d, int heads, int head, QkNorm w) {
        int hd = d / heads;
        for (int r = row0; r < row0 + rows; r++) {
            int q = r * 3 * d + head * hd;
            headNorm(qkv, q, hd, w.qWeight(), w.qBias());
            headNorm(qkv, q + d, hd, w.kWeight(), w.kBias());
        }
    }

    /** A block's attn.q_norm and attn.k_norm (head_dim each). */
    record QkNorm(float[] qWeight, float[] qBias, float[] kWeight, float[] kBias) {
        static QkNorm read(CheckpointReader r, String block) throws io.ditserve.backend.BackendException {
            return new QkNorm(r.floats(block + "attn.q_norm.weight"), r.floats(block + "attn.q_norm.bias"),
                    r.floats(block + "attn.k_norm.weight"), r.floats(block + "attn.k_norm.bias"));
        }
    }
}
