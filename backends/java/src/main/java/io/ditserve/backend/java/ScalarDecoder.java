package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.java.DecoderWeights.Attention;
import io.ditserve.backend.java.DecoderWeights.Conv;
import io.ditserve.backend.java.DecoderWeights.Full;
import io.ditserve.backend.java.DecoderWeights.Norm;
import io.ditserve.backend.java.DecoderWeights.Resnet;
import io.ditserve.backend.java.DecoderWeights.Tiny;
import io.ditserve.backend.java.DecoderWeights.TinyBlock;
import io.ditserve.backend.java.DecoderWeights.TinyStage;
import io.ditserve.backend.java.DecoderWeights.UpBlock;

/**
 * The reference path of the decoders (docs/DECODERS.md): plain loops over images in PyTorch's C×H×W layout, one
 * thread, weights in the checkpoint layout. It exists to be read against the architecture and to check
 * {@link VectorDecoder}; like {@link ScalarDit} it allocates its activations per call.
 */
final class ScalarDecoder implements DecoderEngine {
    private final DecoderSpec spec;
    private final DecoderWeights<Conv> w;

    ScalarDecoder(DecoderSpec spec, DecoderWeights<Conv> weights) {
        this.spec = spec;
        this.w = weights;
    }

    /** A C×H×W image. */
    private record Image(float[] v, int c, int h, int w) {
        Image(int c, int h, int w) {
            this(new float[c * h * w], c, h, w);
        }

        int plane() {
            return h * w;
        }
    }

    @Override
    public void decode(float[] latent, int n, int h, int w, float[] out, Cancellation cancel)
            throws BackendException.Cancelled {
        int lat = spec.latentChannels();
        int f = spec.scaleFactor();
        int outSize = spec.outChannels() * f * h * f * w;
        for (int b = 0; b < n; b++) {
            Image z = new Image(lat, h, w);
            System.arraycopy(latent, b * z.v.length, z.v, 0, z.v.length);
            Image img = spec.kind() == DecoderSpec.Kind.FULL ? full(z, cancel) : tiny(z, cancel);
            System.arraycopy(img.v, 0, out, b * outSize, outSize);
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // AutoencoderKL

    private Image full(Image z, Cancellation cancel) throws BackendException.Cancelled {
        Full<Conv> f = w.full;
        float scaling = (float) spec.scalingFactor();
        float shift = (float) spec.shiftFactor();
        for (int i = 0; i < z.v.length; i++) {
            z.v[i] = z.v[i] / scaling + shift;
        }
        if (f.postQuantConv() != null) {
            z = conv(z, f.postQuantConv());
        }
        Image x = conv(z, f.convIn());
        x = resnet(x, f.midResnet0(), cancel);
        if (f.midAttention() != null) {
            poll(cancel);
            x = attention(x, f.midAttention());
        }
        x = resnet(x, f.midResnet1(), cancel);
        for (UpBlock<Conv> block : f.upBlocks()) {
            for (Resnet<Conv> r : block.resnets()) {
                x = resnet(x, r, cancel);
            }
            if (block.upsampler() != null) {
                poll(cancel);
                x = conv(upsample(x, 2), block.upsampler());
            }
        }
        poll(cancel);
        return conv(silu(groupNorm(x, f.convNormOut())), f.convOut());
    }

    /** h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); shortcut(x) + h. */
    private Image resnet(Image x, Resnet<Conv> r, Cancellation cancel) throws BackendException.Cancelled {
        poll(cancel);
        Image h = conv(silu(groupNorm(x, r.norm1())), r.conv1());
        h = conv(silu(groupNorm(h, r.norm2())), r.conv2());
        Image s = r.convShortcut() != null ? conv(x, r.convShortcut()) : x;
        for (int i = 0; i < h.v.length; i++) {
            h.v[i] = s.v[i] + h.v[i];
        }
        return h;
    }

    /**
     * One head of C channels over the H·W positions: x + to_out(softmax(q·kᵀ/√C)·v), q, k, v from GroupNorm(x).
     */
    private Image attention(Image x, Attention<Conv> a) {
        int c = x.c;
        int tokens = x.plane();
        Image hn = groupNorm(x, a.groupNorm());
        float[] q = linear(hn, a.toQ());
        float[] k = linear(hn, a.toK());
        float[] v = linear(hn, a.toV());
        float scale = (float) Math.pow(c, -0.5);
        float[] att = new float[tokens * c]; // [tokens, C]
        float[] p = new float[tokens];
        for (int i = 0; i < tokens; i++) {
            float max = Float.NEGATIVE_INFINITY;
            for (int j = 0; j < tokens; j++) {
                float s = 0;
                for (int e = 0; e < c; e++) {
                    s += q[i * c + e] * k[j * c + e];
                }
                p[j] = s * scale;
                max = Math.max(max, p[j]);
            }
            float sum = 0;
            for (int j = 0; j < tokens; j++) {
                p[j] = (float) Math.exp(p[j] - max);
                sum += p[j];
            }
            for (int j = 0; j < tokens; j++) {
                float weight = p[j] / sum;
                for (int e = 0; e < c; e++) {
                    att[i * c + e] += weight * v[j * c + e];
                }
            }
        }
        Conv o = a.toOut();
        Image y = new Image(c, x.h, x.w);
        for (int t = 0; t < tokens; t++) {
            for (int oc = 0; oc < c; oc++) {
                float s = 0;
                for (int e = 0; e < c; e++) {
                    s += att[t * c + e] * o.weight()[oc * c + e];
                }
                y.v[oc * tokens + t] = x.v[oc * tokens + t] + (s + o.bias()[oc]);
            }
        }
        return y;
    }

    /** A Linear layer applied to each position's C features: [tokens, out] row-major. */
    private static float[] linear(Image x, Conv l) {
        int tokens = x.plane();
        float[] y = new float[tokens * l.out()];
        for (int t = 0; t < tokens; t++) {
            for (int o = 0; o < l.out(); o++) {
                float s = 0;
                for (int e = 0; e < l.in(); e++) {
                    s += x.v[e * tokens + t] * l.weight()[o * l.in() + e];
                }
                y[t * l.out() + o] = s + l.bias()[o];
            }
        }
        return y;
    }

    /** GroupNorm (eps 1e-6, affine) with the statistics of each group in double. */
    private Image groupNorm(Image x, Norm n) {
        int groups = spec.normGroups();
        int per = x.c / groups;
        int plane = x.plane();
        Image y = new Image(x.c, x.h, x.w);
        for (int g = 0; g < groups; g++) {
            int from = g * per * plane;
            int to = from + per * plane;
            double mean = 0;
            for (int i = from; i < to; i++) {
                mean += x.v[i];
            }
            mean /= to - from;
            double var = 0;
            for (int i = from; i < to; i++) {
                var += (x.v[i] - mean) * (x.v[i] - mean);
            }
            var /= to - from;
            double inv = 1.0 / Math.sqrt(var + DecoderMath.GN_EPS);
            for (int ch = g * per; ch < (g + 1) * per; ch++) {
                for (int i = ch * plane; i < (ch + 1) * plane; i++) {
                    y.v[i] = (float) ((x.v[i] - mean) * inv) * n.weight()[ch] + n.bias()[ch];
                }
            }
        }
        return y;
    }

    // ----------------------------------------------------------------------------------------------------------
    // AutoencoderTiny

    private Image tiny(Image z, Cancellation cancel) throws BackendException.Cancelled {
        Tiny<Conv> t = w.tiny;
        for (int i = 0; i < z.v.length; i++) {
            z.v[i] = DecoderMath.tinyClamp(z.v[i]);
        }
        Image x = relu(conv(z, t.convIn()));
        for (int s = 0; s < t.stages().size(); s++) {
            TinyStage<Conv> stage = t.stages().get(s);
            for (TinyBlock<Conv> b : stage.blocks()) {
                poll(cancel);
                Image h = conv(relu(conv(relu(conv(x, b.conv0())), b.conv2())), b.conv4());
                for (int i = 0; i < h.v.length; i++) {
                    h.v[i] = Math.max(h.v[i] + x.v[i], 0f);
                }
                x = h;
            }
            poll(cancel);
            boolean last = s == t.stages().size() - 1;
            x = conv(last ? x : upsample(x, spec.upsampling()), stage.conv());
        }
        for (int i = 0; i < x.v.length; i++) {
            x.v[i] = x.v[i] * 2f - 1f;
        }
        return x;
    }

    // ----------------------------------------------------------------------------------------------------------
    // layers

    /** A k×k convolution, stride 1, zero padding k/2, bias when the layer has one. */
    private static Image conv(Image x, Conv c) {
        int k = c.k();
        int pad = k / 2;
        Image y = new Image(c.out(), x.h, x.w);
        int plane = x.plane();
        for (int o = 0; o < c.out(); o++) {
            int yo = o * plane;
            float b = c.bias() != null ? c.bias()[o] : 0f;
            for (int i = 0; i < plane; i++) {
                y.v[yo + i] = b;
            }
            for (int ci = 0; ci < c.in(); ci++) {
                for (int ky = 0; ky < k; ky++) {
                    for (int kx = 0; kx < k; kx++) {
                        float wv = c.weight()[((o * c.in() + ci) * k + ky) * k + kx];
                        int dy = ky - pad;
                        int dx = kx - pad;
                        for (int r = Math.max(0, -dy); r < Math.min(x.h, x.h - dy); r++) {
                            int src = ci * plane + (r + dy) * x.w + dx;
                            int dst = yo + r * x.w;
                            for (int col = Math.max(0, -dx); col < Math.min(x.w, x.w - dx); col++) {
                                y.v[dst + col] += wv * x.v[src + col];
                            }
                        }
                    }
                }
            }
        }
        return y;
    }

    /** Nearest-neighbour upsampling: each pixel becomes an f×f block. */
    private static Image upsample(Image x, int f) {
        Image y = new Image(x.c, x.h * f, x.w * f);
        for (int ch = 0; ch < x.c; ch++) {
            for (int r = 0; r < y.h; r++) {
                for (int col = 0; col < y.w; col++) {
                    y.v[(ch * y.h + r) * y.w + col] = x.v[(ch * x.h + r / f) * x.w + col / f];
                }
            }
        }
        return y;
    }

    private static Image silu(Image x) {
        for (int i = 0; i < x.v.length; i++) {
            x.v[i] = DitMath.silu(x.v[i]);
        }
        return x;
    }

    private static Image relu(Image x) {
        for (int i = 0; i < x.v.length; i++) {
            x.v[i] = Math.max(x.v[i], 0f);
        }
        return x;
    }

    private static void poll(Cancellation cancel) throws BackendException.Cancelled {
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
    }

    @Override
    public void close() {}
}
