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
    static void timestepEmbedding(int t, float[] dst, int off) {
        int half = FREQS.length;
        for (int k = 0; k < half; k++) {
            float arg = t * FREQS[k]; // float32 product, like t.float() * freqs
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
}
