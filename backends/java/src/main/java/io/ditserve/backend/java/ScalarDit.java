package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.java.DitWeights.Block;
import io.ditserve.backend.java.DitWeights.Linear;

/**
 * The reference path: the forward pass of tools/dit/model.py in plain loops, one thread, no vectors, weights in
 * the checkpoint layout. It exists to be read against the reference and to check {@link VectorDit}; it allocates
 * its activations per call because clarity, not speed, is its purpose.
 */
final class ScalarDit implements DitEngine {
    private final ModelSpec spec;
    private final DitWeights w;
    private final int d;
    private final int tokens;

    ScalarDit(ModelSpec spec, DitWeights weights) {
        this.spec = spec;
        this.w = weights;
        this.d = spec.hiddenSize();
        this.tokens = spec.tokens();
    }

    @Override
    public void forward(float[] xIn, float[] t, int[] y, int n, float[] out, Cancellation cancel, StepCache cache)
            throws BackendException.Cancelled {
        int rows = n * tokens;
        // 1. patchify (a stride-p conv as a matrix product) + pos_embed
        int patchDim = spec.inChannels() * spec.patchSize() * spec.patchSize();
        float[] patches = new float[rows * patchDim];
        DitMath.patchify(spec, xIn, n, patches);
        float[] x = linear(patches, rows, w.xEmbedder);
        for (int r = 0; r < rows; r++) {
            for (int k = 0; k < d; k++) {
                x[r * d + k] += w.posEmbed[(r % tokens) * d + k];
            }
        }
        // 2-3. c = t_embedder(t) + y_embedder(y); every adaLN reads SiLU(c)
        float[] freq = new float[n * DitMath.FREQ_DIM];
        for (int b = 0; b < n; b++) {
            DitMath.timestepEmbedding(t[b], freq, b * DitMath.FREQ_DIM);
        }
        float[] c = linear(silu(linear(freq, n, w.tMlp0)), n, w.tMlp2);
        for (int b = 0; b < n; b++) {
            for (int k = 0; k < d; k++) {
                c[b * d + k] += w.yEmbedding[y[b] * d + k];
            }
        }
        float[] siluC = silu(c);
        // 4. blocks; with a step cache, blocks 1.. run only for the samples that run the cached span
        boolean cached = cache != null && !cache.plain();
        int first = cached ? StepCache.FIRST_CACHED_BLOCK : w.blocks.length;
        for (int i = 0; i < first; i++) {
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
            block(w.blocks[i], x, siluC, n);
        }
        if (cached) {
            int width = tokens * d;
            int[] perm = new int[n];
            int m = CachedSpan.order(cache, n, perm);
            float[] xs = new float[x.length];
            float[] cs = new float[siluC.length];
            CachedSpan.gather(x, perm, n, width, xs);
            CachedSpan.gather(siluC, perm, n, d, cs);
            CachedSpan.beforeSpan(cache, perm, m, xs, width);
            for (int i = first; i < w.blocks.length && m > 0; i++) {
                if (cancel.isCancelled()) {
                    throw new BackendException.Cancelled();
                }
                block(w.blocks[i], xs, cs, m);
            }
            CachedSpan.finish(cache, perm, n, m, xs, width);
            CachedSpan.scatter(xs, perm, n, width, x);
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        // 5. final layer: shift | scale, then the output projection; 6. unpatchify
        float[] fm = linear(siluC, n, w.finalAdaLN);
        float[] h = modulatedLayerNorm(x, n, fm, 2 * d, 0, d);
        DitMath.unpatchify(spec, linear(h, rows, w.finalLinear), n, out);
    }

    /** One DiT block on the first n samples of x; m = shift1 | scale1 | gate1 | shift2 | scale2 | gate2. */
    private void block(Block blk, float[] x, float[] siluC, int n) {
        int rows = n * tokens;
        float[] m = linear(siluC, n, blk.adaLN());
        float[] h = modulatedLayerNorm(x, n, m, 6 * d, 0, d);
        float[] qkv = linear(h, rows, blk.qkv());
        if (blk.qkNorm() != null) {
            for (int head = 0; head < spec.numHeads(); head++) {
                DitMath.qkNorm(qkv, 0, rows, d, spec.numHeads(), head, blk.qkNorm());
            }
        }
        float[] att = attention(qkv, n);
        gatedAdd(x, linear(att, rows, blk.proj()), n, m, 6 * d, 2 * d);
        h = modulatedLayerNorm(x, n, m, 6 * d, 3 * d, 4 * d);
        float[] u = linear(h, rows, blk.fc1());
        for (int i = 0; i < u.length; i++) {
            u[i] = DitMath.gelu(u[i]);
        }
        gatedAdd(x, linear(u, rows, blk.fc2()), n, m, 6 * d, 5 * d);
    }

    /** y[r, o] = b[o] + Σ_k x[r, k]·W[o, k] for {@code rows} rows. */
    private static float[] linear(float[] x, int rows, Linear l) {
        float[] y = new float[rows * l.out()];
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < l.out(); o++) {
                float acc = 0;
                for (int k = 0; k < l.in(); k++) {
                    acc += x[r * l.in() + k] * l.weight()[o * l.in() + k];
                }
                y[r * l.out() + o] = acc + l.bias()[o];
            }
        }
        return y;
    }

    private static float[] silu(float[] v) {
        float[] s = new float[v.length];
        for (int i = 0; i < v.length; i++) {
            s[i] = DitMath.silu(v[i]);
        }
        return s;
    }

    /** LN(x)·(1 + scale) + shift, row by row; shift and scale are the sample's chunks of its modulation row. */
    private float[] modulatedLayerNorm(float[] x, int n, float[] mod, int modStride, int shiftOff, int scaleOff) {
        float[] h = new float[x.length];
        for (int r = 0; r < n * tokens; r++) {
            int base = (r / tokens) * modStride;
            float mean = 0;
            for (int k = 0; k < d; k++) {
                mean += x[r * d + k];
            }
            mean /= d;
            float var = 0;
            for (int k = 0; k < d; k++) {
                float c = x[r * d + k] - mean;
                var += c * c;
            }
            var /= d;
            float inv = (float) (1.0 / Math.sqrt(var + DitMath.LN_EPS));
            for (int k = 0; k < d; k++) {
                float norm = (x[r * d + k] - mean) * inv;
                h[r * d + k] = norm * (1f + mod[base + scaleOff + k]) + mod[base + shiftOff + k];
            }
        }
        return h;
    }

    /** x += gate · v, with the gate chunk of each sample's modulation row. */
    private void gatedAdd(float[] x, float[] v, int n, float[] mod, int modStride, int gateOff) {
        for (int r = 0; r < n * tokens; r++) {
            int base = (r / tokens) * modStride + gateOff;
            for (int k = 0; k < d; k++) {
                x[r * d + k] += mod[base + k] * v[r * d + k];
            }
        }
    }

    /** softmax(q·kᵀ/√hd)·v per sample and head; q | k | v are the thirds of each qkv row, heads hd columns each. */
    private float[] attention(float[] qkv, int n) {
        int heads = spec.numHeads();
        int hd = spec.headDim();
        float scale = (float) Math.pow(hd, -0.5);
        float[] out = new float[n * tokens * d];
        float[] p = new float[tokens];
        for (int b = 0; b < n; b++) {
            for (int h = 0; h < heads; h++) {
                for (int i = 0; i < tokens; i++) {
                    int q = (b * tokens + i) * 3 * d + h * hd;
                    float max = Float.NEGATIVE_INFINITY;
                    for (int j = 0; j < tokens; j++) {
                        int k = (b * tokens + j) * 3 * d + d + h * hd;
                        float s = 0;
                        for (int e = 0; e < hd; e++) {
                            s += qkv[q + e] * qkv[k + e];
                        }
                        p[j] = s * scale;
                        max = Math.max(max, p[j]);
                    }
                    float sum = 0;
                    for (int j = 0; j < tokens; j++) {
                        p[j] = (float) Math.exp(p[j] - max);
                        sum += p[j];
                    }
                    int o = (b * tokens + i) * d + h * hd;
                    for (int j = 0; j < tokens; j++) {
                        int v = (b * tokens + j) * 3 * d + 2 * d + h * hd;
                        float weight = p[j] / sum;
                        for (int e = 0; e < hd; e++) {
                            out[o + e] += weight * qkv[v + e];
                        }
                    }
                }
            }
        }
        return out;
    }

    @Override
    public void close() {}
}
