package io.ditserve.backend.java;

import static io.ditserve.backend.java.MatMul.L;
import static io.ditserve.backend.java.MatMul.S;

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
import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

/**
 * The fast path of the decoders: the network of {@link ScalarDecoder} with activations kept channel-last (H×W×C)
 * so that every convolution is a {@link MatMul} product whose A rows are the image's positions, split over the
 * threads of a {@link Parallel} pool that this engine owns.
 *
 * <p>A 3×3 convolution reads its input from a copy with a zero border of one position ("padded"): the three
 * kernel rows of an output position are then three runs of 3·C contiguous floats, which MatMul reads in place
 * ({@link MatMul#segments}), so no im2col matrix exists at all. The weight [out, in, 3, 3] is packed once at load
 * as B with k ordered (ky, kx, in). Work items are (output row, panel of 2·L output channels); bias, ReLU and the
 * residual adds run in the product's epilogue. GroupNorm sums per row in float and across rows in double, in a
 * fixed order, so the result does not depend on the thread count or on the other images of a batch.
 *
 * <p>Activations live in three buffers sized for the largest latent seen ({@link #ensureCapacity}); a larger
 * latent grows them once and later calls reuse them. A batch is decoded image by image in the same buffers.
 */
final class VectorDecoder implements DecoderEngine {
    /** Query rows per attention work item: each packed panel of the keys serves 8 micro-kernel calls. */
    private static final int ATTENTION_ROWS = 8 * MatMul.MR;

    /** Convolutions with at most this many output channels run as dot products ({@link Packed#dots}). */
    static final int NARROW = 4;

    /**
     * A convolution (or Linear, k = 1) prepared for this engine, in one of three forms (the others null):
     *
     * <ul>
     *   <li>{@code panels}: B [k·k·in, out] packed for {@link MatMul}, rows ordered (ky, kx, in);
     *   <li>{@code dots}, for out ≤ {@link #NARROW} (the RGB output conv): the weight as {@code NARROW} rows of
     *       k·k·in values ordered (ky, kx, in), zero rows past out. A few output channels are cheaper as dot
     *       products along k than as a panel of 2·L columns that is mostly padding;
     *   <li>{@code phases}, for a 3×3 conv that follows a ×2 nearest-neighbour upsampling: the pair is four 2×2
     *       convs on the low-resolution image, one per parity (py, px) of the output pixel (output row 2i + py
     *       reads source rows i − 1 + py and i + py; kernel rows that land on the same source row are summed).
     *       Each is packed for MatMul as B [4·in, out] with rows ordered (a, b, in): 4/9 of the multiplications of
     *       the 3×3 conv on the upsampled image, which is never built.
     * </ul>
     *
     * {@code bias}: padded to whole panels ({@code dots}: {@code NARROW} values); null for a conv without bias.
     */
    record Packed(float[] panels, float[] dots, float[][] phases, float[] bias, int out, int in, int k) {
        /** TAPS[parity][a]: the kernel rows (or columns) of a 3×3 conv that read source offset a − 1 + parity. */
        private static final int[][][] TAPS = {{{0}, {1, 2}}, {{0, 1}, {2}}};

        static Packed of(Conv c) {
            int taps = c.k() * c.k();
            int rows = taps * c.in();
            float[] reordered = new float[Math.max(c.out(), NARROW) * rows]; // [out][ky][kx][in]
            for (int o = 0; o < c.out(); o++) {
                for (int i = 0; i < c.in(); i++) {
                    for (int t = 0; t < taps; t++) {
                        reordered[(o * taps + t) * c.in() + i] = c.weight()[(o * c.in() + i) * taps + t];
                    }
                }
            }
            if (c.out() <= NARROW) {
                float[] bias = c.bias() == null ? new float[NARROW] : Arrays.copyOf(c.bias(), NARROW);
                return new Packed(null, reordered, null, bias, c.out(), c.in(), c.k());
            }
            return new Packed(panels(reordered, rows, c.out()), null, null, bias(c), c.out(), c.in(), c.k());
        }

        /** A 3×3 conv that runs after a nearest-neighbour upsampling by {@code factor}: phases when it is 2. */
        static Packed upsampling(Conv c, int factor) {
            if (factor != 2 || c.k() != 3) {
                return of(c);
            }
            int in = c.in();
            float[][] phases = new float[4][];
            float[] folded = new float[c.out() * 4 * in]; // [out][a][b][in]
            for (int py = 0; py < 2; py++) {
                for (int px = 0; px < 2; px++) {
                    for (int o = 0; o < c.out(); o++) {
                        for (int i = 0; i < in; i++) {
                            for (int a = 0; a < 2; a++) {
                                for (int b = 0; b < 2; b++) {
                                    float sum = 0;
                                    for (int ky : TAPS[py][a]) {
                                        for (int kx : TAPS[px][b]) {
                                            sum += c.weight()[((o * in + i) * 3 + ky) * 3 + kx];
                                        }
                                    }
                                    folded[((o * 2 + a) * 2 + b) * in + i] = sum;
                                }
                            }
                        }
                    }
                    phases[py * 2 + px] = panels(folded, 4 * in, c.out());
                }
            }
            return new Packed(null, null, phases, bias(c), c.out(), in, c.k());
        }

        private static float[] panels(float[] byOut, int rows, int out) {
            float[] panels = new float[MatMul.packedSize(rows, out)];
            MatMul.pack(byOut, 0, 1, rows, rows, out, panels);
            return panels;
        }

        private static float[] bias(Conv c) {
            return c.bias() == null ? null : MatMul.paddedBias(c.bias(), c.out());
        }

        /** k·k·in: the length of the product's inner dimension. */
        int rows() {
            return k * k * in;
        }

        long floats() {
            long n = bias == null ? 0 : bias.length;
            n += panels != null ? panels.length : 0;
            n += dots != null ? dots.length : 0;
            if (phases != null) {
                for (float[] ph : phases) {
                    n += ph.length;
                }
            }
            return n;
        }
    }

    /**
     * An h × w × c channel-last image at {@code base} in a buffer; padded: stored as (h + 2) × (w + 2) positions
     * with a zero border, position (y, x) at padded (y + 1, x + 1).
     */
    record Hwc(float[] data, int base, int h, int w, int c, boolean padded) {
        int offset(int y, int x) {
            return padded ? base + ((y + 1) * (w + 2) + x + 1) * c : base + (y * w + x) * c;
        }

        static long size(int h, int w, int c, boolean padded) {
            return padded ? (long) (h + 2) * (w + 2) * c : (long) h * w * c;
        }
    }

    /** What a conv's epilogue does with A·B + bias. */
    private enum Out {
        STORE,
        RELU,
        RESIDUAL,
        RESIDUAL_RELU
    }

    /** Thrown inside the pool job when the cancellation fires; turned into {@link BackendException.Cancelled}. */
    private static final class Stop extends RuntimeException {
        Stop() {
            super(null, null, false, false);
        }
    }

    private final DecoderSpec spec;
    private final DecoderWeights<Packed> w;
    private final Parallel parallel;
    private final Worker[] workers;
    private final ConvJob convJob = new ConvJob();
    private final PhaseJob phaseJob = new PhaseJob();
    private final NormJob normJob = new NormJob();
    private final UpsampleJob upsampleJob = new UpsampleJob();
    private final AttentionJob attentionJob = new AttentionJob();

    // Activations, grown by ensureCapacity. FULL: x is the residual stream, t holds a conv1 output or a shortcut,
    // p the padded input of a 3×3 conv (and q, k, v in the attention). TINY: three padded images in rotation.
    private float[] x = new float[0];
    private float[] t = new float[0];
    private float[] p = new float[0];
    private float[] keys = new float[0]; // attention: K packed as B [C, tokens]
    private float[] values = new float[0]; // attention: V packed as B [tokens, C]
    private double[] partial = new double[0]; // GroupNorm: per row and channel sums [h, C]
    private int capacityH; // latent size the buffers fit
    private int capacityW;

    VectorDecoder(DecoderSpec spec, DecoderWeights<Packed> weights, int threads) {
        this.spec = spec;
        this.w = weights;
        this.workers = new Worker[threads];
        for (int i = 0; i < threads; i++) {
            workers[i] = new Worker();
        }
        this.parallel = new Parallel(threads, "ditserve-decoder-" + spec.kind().name().toLowerCase());
    }

    @Override
    public void decode(float[] latent, int n, int h, int w, float[] out, Cancellation cancel)
            throws BackendException.Cancelled {
        ensureCapacity(h, w);
        int f = spec.scaleFactor();
        int inSize = spec.latentChannels() * h * w;
        int outSize = spec.outChannels() * f * h * f * w;
        boolean done = parallel.run(() -> {
            try {
                for (int b = 0; b < n; b++) {
                    if (spec.kind() == DecoderSpec.Kind.FULL) {
                        full(latent, b * inSize, h, w, out, b * outSize, cancel);
                    } else {
                        tiny(latent, b * inSize, h, w, out, b * outSize, cancel);
                    }
                }
                return true;
            } catch (Stop e) {
                return false;
            }
        });
        if (!done) {
            throw new BackendException.Cancelled();
        }
    }

    // ----------------------------------------------------------------------------------------------------------
    // AutoencoderKL

    private void full(float[] latent, int latentOff, int h, int w, float[] out, int outOff, Cancellation cancel) {
        Full<Packed> f = this.w.full;
        int lat = spec.latentChannels();
        Hwc z = image(t, h, w, lat);
        fromNchw(latent, latentOff, z, Input.SCALE);
        Hwc zp = padded(p, h, w, lat);
        if (f.postQuantConv() != null) {
            conv(z, f.postQuantConv(), zp, Out.STORE, null);
        } else {
            copy(z, zp);
        }
        Hwc xs = image(x, h, w, f.convIn().out());
        conv(zp, f.convIn(), xs, Out.STORE, null);
        xs = resnet(xs, f.midResnet0(), cancel);
        if (f.midAttention() != null) {
            poll(cancel);
            attention(xs, f.midAttention());
        }
        xs = resnet(xs, f.midResnet1(), cancel);
        for (UpBlock<Packed> block : f.upBlocks()) {
            for (Resnet<Packed> r : block.resnets()) {
                xs = resnet(xs, r, cancel);
            }
            if (block.upsampler() != null) {
                poll(cancel);
                xs = upsampleConv(xs, block.upsampler(), 2, false);
            }
        }
        poll(cancel);
        Hwc hn = padded(p, xs.h(), xs.w(), xs.c());
        groupNorm(xs, f.convNormOut(), hn, true);
        Hwc img = image(t, xs.h(), xs.w(), spec.outChannels());
        conv(hn, f.convOut(), img, Out.STORE, null);
        toNchw(img, out, outOff, false);
    }

    /**
     * h = conv1(silu(norm1(x))); h = conv2(silu(norm2(h))); out = shortcut(x) + h, the last add in conv2's
     * epilogue. Returns the output, in the x buffer.
     */
    private Hwc resnet(Hwc xs, Resnet<Packed> r, Cancellation cancel) {
        poll(cancel);
        int cout = r.conv1().out();
        Hwc h1 = padded(p, xs.h(), xs.w(), xs.c());
        groupNorm(xs, r.norm1(), h1, true);
        if (r.convShortcut() == null) {
            Hwc c1 = image(t, xs.h(), xs.w(), cout);
            conv(h1, r.conv1(), c1, Out.STORE, null);
            Hwc h2 = padded(p, xs.h(), xs.w(), cout);
            groupNorm(c1, r.norm2(), h2, true);
            conv(h2, r.conv2(), xs, Out.RESIDUAL, xs); // in place: x + conv2(h)
            return xs;
        }
        Hwc shortcut = image(t, xs.h(), xs.w(), cout);
        conv(xs, r.convShortcut(), shortcut, Out.STORE, null);
        Hwc c1 = image(x, xs.h(), xs.w(), cout); // x has been read for the last time
        conv(h1, r.conv1(), c1, Out.STORE, null);
        Hwc h2 = padded(p, xs.h(), xs.w(), cout);
        groupNorm(c1, r.norm2(), h2, true);
        conv(h2, r.conv2(), c1, Out.RESIDUAL, shortcut);
        return c1;
    }

    /**
     * x += to_out(softmax(q·kᵀ/√C)·v), one head of C channels over the h·w positions, q, k, v from GroupNorm(x).
     * The normalised x and then the attention output live in t; q, k, v in p.
     */
    private void attention(Hwc xs, Attention<Packed> a) {
        int c = xs.c();
        int tokens = xs.h() * xs.w();
        Hwc hn = image(t, xs.h(), xs.w(), c);
        groupNorm(xs, a.groupNorm(), hn, false);
        Hwc q = new Hwc(p, 0, xs.h(), xs.w(), c, false);
        Hwc k = new Hwc(p, tokens * c, xs.h(), xs.w(), c, false);
        Hwc v = new Hwc(p, 2 * tokens * c, xs.h(), xs.w(), c, false);
        conv(hn, a.toQ(), q, Out.STORE, null);
        conv(hn, a.toK(), k, Out.STORE, null);
        conv(hn, a.toV(), v, Out.STORE, null);
        MatMul.pack(p, k.base(), 1, c, c, tokens, keys); // B[e][j] = k_j[e]
        MatMul.pack(p, v.base(), c, 1, tokens, c, values); // B[j][e] = v_j[e]
        Hwc o = image(t, xs.h(), xs.w(), c);
        attentionJob.run(q, o, tokens, c);
        conv(o, a.toOut(), xs, Out.RESIDUAL, xs);
    }

    // ----------------------------------------------------------------------------------------------------------
    // AutoencoderTiny

    private void tiny(float[] latent, int latentOff, int h, int w, float[] out, int outOff, Cancellation cancel) {
        Tiny<Packed> tw = this.w.tiny;
        int c = tw.convIn().out();
        Hwc z = padded(p, h, w, spec.latentChannels());
        fromNchw(latent, latentOff, z, Input.TINY_CLAMP);
        Hwc xs = padded(x, h, w, c);
        conv(z, tw.convIn(), xs, Out.RELU, null);
        for (int s = 0; s < tw.stages().size(); s++) {
            TinyStage<Packed> stage = tw.stages().get(s);
            for (TinyBlock<Packed> b : stage.blocks()) {
                poll(cancel);
                // relu(conv.4(relu(conv.2(relu(conv.0(x))))) + x), x updated in place
                Hwc h1 = padded(t, xs.h(), xs.w(), c);
                conv(xs, b.conv0(), h1, Out.RELU, null);
                Hwc h2 = padded(p, xs.h(), xs.w(), c);
                conv(h1, b.conv2(), h2, Out.RELU, null);
                conv(h2, b.conv4(), xs, Out.RESIDUAL_RELU, xs);
            }
            poll(cancel);
            if (s < tw.stages().size() - 1) {
                xs = upsampleConv(xs, stage.conv(), spec.upsampling(), true);
            } else {
                Hwc img = image(t, xs.h(), xs.w(), spec.outChannels());
                conv(xs, stage.conv(), img, Out.STORE, null);
                toNchw(img, out, outOff, true);
            }
        }
    }

    /**
     * conv(upsample(x, f)) (nearest neighbour), written to the x buffer (padded if asked): for f = 2 as the four
     * phase convs on a padded copy of x, else as the conv on the upsampled image.
     */
    private Hwc upsampleConv(Hwc xs, Packed c, int f, boolean paddedOut) {
        int h = f * xs.h();
        int w = f * xs.w();
        if (c.phases() != null) {
            Hwc low = padded(p, xs.h(), xs.w(), xs.c());
            upsample(xs, low, 1);
            Hwc out = paddedOut ? padded(x, h, w, c.out()) : image(x, h, w, c.out());
            phaseJob.in = low;
            phaseJob.conv = c;
            phaseJob.out = out;
            phaseJob.panels = MatMul.panels(c.out());
            parallel.forEach(xs.h() * 4 * phaseJob.panels, phaseJob);
            return out;
        }
        Hwc up = padded(p, h, w, xs.c());
        upsample(xs, up, f);
        Hwc out = paddedOut ? padded(x, h, w, c.out()) : image(x, h, w, c.out());
        conv(up, c, out, Out.STORE, null);
        return out;
    }

    // ----------------------------------------------------------------------------------------------------------
    // buffers

    /** An unpadded image at the start of a buffer. */
    private static Hwc image(float[] buffer, int h, int w, int c) {
        return check(new Hwc(buffer, 0, h, w, c, false));
    }

    /** A padded image at the start of a buffer, its border zeroed (the buffer held other shapes before). */
    private static Hwc padded(float[] buffer, int h, int w, int c) {
        Hwc im = check(new Hwc(buffer, 0, h, w, c, true));
        int row = (w + 2) * c;
        Arrays.fill(buffer, 0, row, 0f);
        Arrays.fill(buffer, (h + 1) * row, (h + 2) * row, 0f);
        for (int y = 1; y <= h; y++) {
            Arrays.fill(buffer, y * row, y * row + c, 0f);
            Arrays.fill(buffer, (y + 1) * row - c, (y + 1) * row, 0f);
        }
        return im;
    }

    private static Hwc check(Hwc im) {
        if (Hwc.size(im.h(), im.w(), im.c(), im.padded()) + im.base() > im.data().length) {
            throw new IllegalStateException("activation buffer too small for " + im); // a sizing bug
        }
        return im;
    }

    /** Floats each buffer needs for one h × w latent: walks the network like {@link #full} and {@link #tiny}. */
    private record Sizes(long x, long t, long p, long keys, long values, long scores, int rows, int channels) {}

    private Sizes sizes(int latentH, int latentW) {
        int h = latentH;
        int w = latentW;
        long[] need = new long[8]; // x, t, p, keys, values, scores, rows, channels
        if (spec.kind() == DecoderSpec.Kind.FULL) {
            int lat = spec.latentChannels();
            int top = spec.upBlockChannels(0);
            grow(need, 1, Hwc.size(h, w, lat, false));
            grow(need, 2, Hwc.size(h, w, lat, true));
            grow(need, 0, Hwc.size(h, w, top, false));
            resnetSizes(need, h, w, top, top);
            if (spec.midBlockAttention()) {
                int tokens = h * w;
                grow(need, 1, Hwc.size(h, w, top, false));
                grow(need, 2, 3L * tokens * top);
                grow(need, 3, (long) MatMul.panels(tokens) * top * MatMul.NR);
                grow(need, 4, (long) MatMul.panels(top) * tokens * MatMul.NR);
                grow(need, 5, (long) ATTENTION_ROWS * tokens);
            }
            int prev = top;
            int stages = spec.blockOutChannels().size();
            for (int i = 0; i < stages; i++) {
                int out = spec.upBlockChannels(i);
                for (int j = 0; j <= spec.layersPerBlock(); j++) {
                    resnetSizes(need, h, w, j == 0 ? prev : out, out);
                }
                if (i < stages - 1) {
                    h *= 2;
                    w *= 2;
                    grow(need, 2, Hwc.size(h, w, out, true));
                    grow(need, 0, Hwc.size(h, w, out, false));
                }
                prev = out;
            }
            grow(need, 2, Hwc.size(h, w, prev, true));
            grow(need, 1, Hwc.size(h, w, spec.outChannels(), false));
            grow(need, 6, h);
            grow(need, 7, prev);
        } else {
            int c = spec.blockOutChannels().get(0);
            int f = spec.scaleFactor();
            long images = Math.max(Hwc.size(f * h, f * w, c, true), Hwc.size(h, w, spec.latentChannels(), true));
            images = Math.max(images, Hwc.size(f * h, f * w, spec.outChannels(), false));
            need[0] = images;
            need[1] = images;
            need[2] = images;
        }
        for (int i = 0; i < 6; i++) {
            if (need[i] > Integer.MAX_VALUE - 8) {
                throw new IllegalArgumentException("a latent of " + latentH + " × " + latentW
                        + " needs activations of " + need[i] + " floats, more than a Java array holds");
            }
        }
        return new Sizes(need[0], need[1], need[2], need[3], need[4], need[5], (int) need[6], (int) need[7]);
    }

    private static void resnetSizes(long[] need, int h, int w, int in, int out) {
        int c = Math.max(in, out);
        grow(need, 0, Hwc.size(h, w, c, false));
        grow(need, 1, Hwc.size(h, w, out, false));
        grow(need, 2, Hwc.size(h, w, c, true));
        grow(need, 6, h);
        grow(need, 7, c);
    }

    private static void grow(long[] need, int i, long v) {
        need[i] = Math.max(need[i], v);
    }

    /** Grows the buffers once for a latent larger than any before; smaller latents reuse them. */
    private void ensureCapacity(int h, int w) {
        if (h <= capacityH && w <= capacityW) {
            return;
        }
        int ch = Math.max(h, capacityH);
        int cw = Math.max(w, capacityW);
        Sizes s = sizes(ch, cw);
        x = grown(x, s.x());
        t = grown(t, s.t());
        p = grown(p, s.p());
        keys = grown(keys, s.keys());
        values = grown(values, s.values());
        if (partial.length < (long) s.rows() * s.channels()) {
            partial = new double[s.rows() * s.channels()];
        }
        for (Worker wk : workers) {
            wk.grow(s);
        }
        capacityH = ch;
        capacityW = cw;
    }

    private static float[] grown(float[] b, long size) {
        return b.length >= size ? b : new float[(int) size];
    }

    /** Bytes of the activation buffers and scratch (the decoder's memory besides the weights). */
    long bufferBytes() {
        long floats = (long) x.length + t.length + p.length + keys.length + values.length;
        for (Worker wk : workers) {
            floats += wk.sum.length + wk.scores.length + MatMul.TILE;
        }
        return 4 * floats + 8L * partial.length;
    }

    /** Bytes of the packed weights. */
    long weightBytes() {
        long[] floats = {0};
        java.util.function.Consumer<Packed> add = c -> {
            if (c != null) {
                floats[0] += c.floats();
            }
        };
        if (w.full != null) {
            Full<Packed> f = w.full;
            add.accept(f.postQuantConv());
            add.accept(f.convIn());
            for (Resnet<Packed> r : resnets(f)) {
                add.accept(r.conv1());
                add.accept(r.conv2());
                add.accept(r.convShortcut());
            }
            if (f.midAttention() != null) {
                add.accept(f.midAttention().toQ());
                add.accept(f.midAttention().toK());
                add.accept(f.midAttention().toV());
                add.accept(f.midAttention().toOut());
            }
            f.upBlocks().forEach(b -> add.accept(b.upsampler()));
            add.accept(f.convOut());
        } else {
            add.accept(w.tiny.convIn());
            for (TinyStage<Packed> s : w.tiny.stages()) {
                for (TinyBlock<Packed> b : s.blocks()) {
                    add.accept(b.conv0());
                    add.accept(b.conv2());
                    add.accept(b.conv4());
                }
                add.accept(s.conv());
            }
        }
        return 4 * floats[0];
    }

    private static java.util.List<Resnet<Packed>> resnets(Full<Packed> f) {
        java.util.List<Resnet<Packed>> all = new java.util.ArrayList<>();
        all.add(f.midResnet0());
        all.add(f.midResnet1());
        f.upBlocks().forEach(b -> all.addAll(b.resnets()));
        return all;
    }

    // ----------------------------------------------------------------------------------------------------------
    // layers

    /** out = epilogue(conv(in) + bias); a 3×3 conv needs a padded input. */
    private void conv(Hwc in, Packed c, Hwc out, Out epilogue, Hwc residual) {
        if (in.h() != out.h() || in.w() != out.w() || in.c() != c.in() || out.c() != c.out() || c.phases() != null
                || (c.k() == 3 && !in.padded()) || (c.k() != 3 && c.k() != 1)) {
            throw new IllegalStateException("conv " + c.out() + "×" + c.in() + "×" + c.k() + " cannot map " + in
                    + " to " + out);
        }
        convJob.in = in;
        convJob.conv = c;
        convJob.out = out;
        convJob.epilogue = epilogue;
        convJob.residual = residual;
        convJob.panels = c.dots() != null ? 1 : MatMul.panels(c.out());
        parallel.forEach(out.h() * convJob.panels, convJob);
    }

    /** One output row (all its positions) times one panel of output channels. */
    private final class ConvJob implements Parallel.Body {
        Hwc in;
        Packed conv;
        Hwc out;
        Out epilogue;
        Hwc residual;
        int panels;

        @Override
        public void run(int item, int worker) {
            if (conv.dots() != null) {
                dots(item, workers[worker]);
                return;
            }
            int y = item / panels;
            int panel = item % panels;
            MatMul mm = workers[worker].mm;
            if (conv.k() == 3) {
                // output (y, x) reads padded rows y .. y+2, each from padded column x: three runs of 3·C floats
                int rowStride = (in.w() + 2) * in.c();
                mm.a(in.data(), in.base() + y * rowStride, in.c()).segments(3, rowStride);
            } else {
                mm.a(in.data(), in.offset(y, 0), in.c());
            }
            mm.b(conv.panels(), conv.rows(), conv.out(), conv.bias()).c(out.data(), out.offset(y, 0), out.c());
            switch (epilogue) {
                case STORE -> mm.store();
                case RELU -> mm.relu();
                case RESIDUAL -> mm.residual(residual.data(), residual.offset(y, 0), residual.c(), false);
                case RESIDUAL_RELU -> mm.residual(residual.data(), residual.offset(y, 0), residual.c(), true);
            }
            mm.compute(0, out.w(), panel, panel + 1, workers[worker].tile);
        }

        /**
         * Output row y of a conv with at most {@link #NARROW} output channels: per position, NARROW dot products
         * along k (the A runs as for the product) in vectors, their lanes then summed in lane order.
         */
        private void dots(int y, Worker wk) {
            int c = in.c();
            int runs = conv.k() == 3 ? 3 : 1;
            int run = conv.rows() / runs;
            int rowStride = (in.w() + 2) * c;
            int base = conv.k() == 3 ? in.base() + y * rowStride : in.offset(y, 0);
            float[] a = in.data();
            float[] wt = conv.dots();
            int k = conv.rows();
            int bound = S.loopBound(run);
            float[] lanes = wk.lanes;
            for (int col = 0; col < out.w(); col++) {
                FloatVector s0 = FloatVector.zero(S), s1 = FloatVector.zero(S);
                FloatVector s2 = FloatVector.zero(S), s3 = FloatVector.zero(S);
                float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
                for (int r = 0; r < runs; r++) {
                    int ai = base + r * rowStride + col * c;
                    int wi = r * run;
                    int i = 0;
                    for (; i < bound; i += L) {
                        FloatVector av = FloatVector.fromArray(S, a, ai + i);
                        s0 = av.fma(FloatVector.fromArray(S, wt, wi + i), s0);
                        s1 = av.fma(FloatVector.fromArray(S, wt, k + wi + i), s1);
                        s2 = av.fma(FloatVector.fromArray(S, wt, 2 * k + wi + i), s2);
                        s3 = av.fma(FloatVector.fromArray(S, wt, 3 * k + wi + i), s3);
                    }
                    for (; i < run; i++) {
                        float av = a[ai + i];
                        t0 += av * wt[wi + i];
                        t1 += av * wt[k + wi + i];
                        t2 += av * wt[2 * k + wi + i];
                        t3 += av * wt[3 * k + wi + i];
                    }
                }
                s0.intoArray(lanes, 0);
                s1.intoArray(lanes, L);
                s2.intoArray(lanes, 2 * L);
                s3.intoArray(lanes, 3 * L);
                lanes[4 * L] = t0;
                lanes[4 * L + 1] = t1;
                lanes[4 * L + 2] = t2;
                lanes[4 * L + 3] = t3;
                int o = out.offset(y, col);
                int ri = residual == null ? 0 : residual.offset(y, col);
                for (int ch = 0; ch < conv.out(); ch++) {
                    float sum = 0;
                    for (int l = 0; l < L; l++) {
                        sum += lanes[ch * L + l];
                    }
                    float v = (sum + lanes[4 * L + ch]) + conv.bias()[ch];
                    if (epilogue == Out.RESIDUAL || epilogue == Out.RESIDUAL_RELU) {
                        v += residual.data()[ri + ch];
                    }
                    if (epilogue == Out.RELU || epilogue == Out.RESIDUAL_RELU) {
                        v = Math.max(v, 0f);
                    }
                    out.data()[o + ch] = v;
                }
            }
        }
    }

    /**
     * One source row i, one phase (py, px) and one panel of an upsampling conv: output row 2i + py, columns
     * 2j + px for every j, from padded source rows i + py and i + py + 1 (two runs of 2·C floats per position).
     */
    private final class PhaseJob implements Parallel.Body {
        Hwc in;
        Packed conv;
        Hwc out;
        int panels;

        @Override
        public void run(int item, int worker) {
            int panel = item % panels;
            int phase = item / panels % 4;
            int i = item / panels / 4;
            int py = phase / 2;
            int px = phase % 2;
            int c = in.c();
            int rowStride = (in.w() + 2) * c;
            MatMul mm = workers[worker].mm;
            mm.a(in.data(), in.base() + (i + py) * rowStride + px * c, c).segments(2, rowStride)
                    .b(conv.phases()[phase], 4 * c, conv.out(), conv.bias())
                    .c(out.data(), out.offset(2 * i + py, px), 2 * out.c()).store()
                    .compute(0, in.w(), panel, panel + 1, workers[worker].tile);
        }
    }

    /**
     * out = GroupNorm(x) (eps 1e-6, affine), then SiLU if asked. Three passes over the rows: channel sums, then
     * sums of squares around the group means, then the normalisation as x·a + b with per-channel a and b.
     */
    private void groupNorm(Hwc xs, Norm n, Hwc out, boolean silu) {
        int c = xs.c();
        int groups = spec.normGroups();
        int per = c / groups;
        double count = (double) xs.h() * xs.w() * per;
        NormJob job = normJob;
        job.x = xs;
        job.out = out;
        job.silu = silu;
        job.squares = false;
        job.apply = false;
        parallel.forEach(xs.h(), job);
        double[] mean = job.groupMean;
        for (int g = 0; g < groups; g++) {
            mean[g] = groupSum(xs.h(), c, g * per, per) / count;
            for (int ch = g * per; ch < (g + 1) * per; ch++) {
                job.center[ch] = (float) mean[g];
            }
        }
        job.squares = true;
        parallel.forEach(xs.h(), job);
        for (int g = 0; g < groups; g++) {
            double var = groupSum(xs.h(), c, g * per, per) / count;
            double inv = 1.0 / Math.sqrt(var + DecoderMath.GN_EPS);
            for (int ch = g * per; ch < (g + 1) * per; ch++) {
                double a = n.weight()[ch] * inv;
                job.scale[ch] = (float) a;
                job.shift[ch] = (float) (n.bias()[ch] - mean[g] * a);
            }
        }
        job.squares = false;
        job.apply = true;
        parallel.forEach(xs.h(), job);
    }

    /** Σ over rows (in order) and channels ch0 .. ch0+per of the row partials. */
    private double groupSum(int rows, int c, int ch0, int per) {
        double s = 0;
        for (int y = 0; y < rows; y++) {
            for (int ch = ch0; ch < ch0 + per; ch++) {
                s += partial[y * c + ch];
            }
        }
        return s;
    }

    /** One row of a GroupNorm pass. */
    private final class NormJob implements Parallel.Body {
        Hwc x;
        Hwc out;
        boolean silu;
        boolean squares;
        boolean apply;
        float[] center = new float[0]; // the group mean of each channel
        float[] scale = new float[0];
        float[] shift = new float[0];
        double[] groupMean = new double[0];

        void grow(int channels) {
            if (groupMean.length < spec.normGroups()) {
                groupMean = new double[spec.normGroups()];
            }
            if (center.length < channels) {
                center = new float[channels];
                scale = new float[channels];
                shift = new float[channels];
            }
        }

        @Override
        public void run(int y, int worker) {
            if (apply) {
                normalize(y);
            } else {
                sums(y, workers[worker].sum);
            }
        }

        /** partial[y, ch] = Σ_x v (or Σ_x (v − center)²) for the row, in float, then stored as double. */
        private void sums(int y, float[] sum) {
            int c = x.c();
            float[] d = x.data();
            int bound = S.loopBound(c);
            Arrays.fill(sum, 0, c, 0f);
            for (int col = 0; col < x.w(); col++) {
                int o = x.offset(y, col);
                int ch = 0;
                if (squares) {
                    for (; ch < bound; ch += L) {
                        FloatVector v = FloatVector.fromArray(S, d, o + ch).sub(FloatVector.fromArray(S, center, ch));
                        v.fma(v, FloatVector.fromArray(S, sum, ch)).intoArray(sum, ch);
                    }
                    for (; ch < c; ch++) {
                        float v = d[o + ch] - center[ch];
                        sum[ch] += v * v;
                    }
                } else {
                    for (; ch < bound; ch += L) {
                        FloatVector.fromArray(S, d, o + ch).add(FloatVector.fromArray(S, sum, ch)).intoArray(sum, ch);
                    }
                    for (; ch < c; ch++) {
                        sum[ch] += d[o + ch];
                    }
                }
            }
            for (int ch = 0; ch < c; ch++) {
                partial[y * c + ch] = sum[ch];
            }
        }

        private void normalize(int y) {
            int c = x.c();
            float[] d = x.data();
            float[] o = out.data();
            int bound = S.loopBound(c);
            for (int col = 0; col < x.w(); col++) {
                int i = x.offset(y, col);
                int j = out.offset(y, col);
                int ch = 0;
                for (; ch < bound; ch += L) {
                    FloatVector v = FloatVector.fromArray(S, d, i + ch)
                            .fma(FloatVector.fromArray(S, scale, ch), FloatVector.fromArray(S, shift, ch));
                    if (silu) {
                        v = v.div(ExactMath.exp(v.neg()).add(1f));
                    }
                    v.intoArray(o, j + ch);
                }
                for (; ch < c; ch++) {
                    float v = d[i + ch] * scale[ch] + shift[ch];
                    o[j + ch] = silu ? ExactMath.silu(v) : v;
                }
            }
        }
    }

    /** Nearest-neighbour upsampling by f into a padded image (interior only; padded() zeroed the border). */
    private void upsample(Hwc src, Hwc dst, int f) {
        upsampleJob.src = src;
        upsampleJob.dst = dst;
        upsampleJob.f = f;
        parallel.forEach(dst.h(), upsampleJob);
    }

    private static final class UpsampleJob implements Parallel.Body {
        Hwc src;
        Hwc dst;
        int f;

        @Override
        public void run(int y, int worker) {
            int c = src.c();
            for (int col = 0; col < dst.w(); col++) {
                System.arraycopy(src.data(), src.offset(y / f, col / f), dst.data(), dst.offset(y, col), c);
            }
        }
    }

    /** Blocks of query rows: scores = q·kᵀ/√C on the worker's scratch, softmax per row, then scores·v. */
    private final class AttentionJob implements Parallel.Body {
        private Hwc q;
        private Hwc out;
        private int tokens;
        private int c;
        private float scale;

        void run(Hwc q, Hwc out, int tokens, int c) {
            this.q = q;
            this.out = out;
            this.tokens = tokens;
            this.c = c;
            this.scale = (float) Math.pow(c, -0.5);
            parallel.forEach((tokens + ATTENTION_ROWS - 1) / ATTENTION_ROWS, this);
        }

        @Override
        public void run(int item, int worker) {
            Worker wk = workers[worker];
            int r0 = item * ATTENTION_ROWS;
            int rows = Math.min(ATTENTION_ROWS, tokens - r0);
            wk.mm.a(q.data(), q.base() + r0 * c, c).b(keys, c, tokens, null).c(wk.scores, 0, tokens).scale(scale)
                    .compute(0, rows, 0, MatMul.panels(tokens), wk.tile);
            for (int i = 0; i < rows; i++) {
                VectorDit.softmax(wk.scores, i * tokens, tokens);
            }
            wk.mm.a(wk.scores, 0, tokens).b(values, tokens, c, null).c(out.data(), out.base() + r0 * c, c).store()
                    .compute(0, rows, 0, MatMul.panels(c), wk.tile);
        }
    }

    /** How a latent value is transformed on its way in. */
    private enum Input {
        /** FULL: z / scaling_factor + shift_factor */
        SCALE,
        /** TINY: tanh(z / 3)·3 */
        TINY_CLAMP
    }

    /** [C, h, w] at src[off..] → the channel-last image (its interior if padded). */
    private void fromNchw(float[] src, int off, Hwc dst, Input mode) {
        float scaling = (float) spec.scalingFactor();
        float shift = (float) spec.shiftFactor();
        int plane = dst.h() * dst.w();
        for (int y = 0; y < dst.h(); y++) {
            for (int col = 0; col < dst.w(); col++) {
                int o = dst.offset(y, col);
                for (int ch = 0; ch < dst.c(); ch++) {
                    float v = src[off + ch * plane + y * dst.w() + col];
                    dst.data()[o + ch] = mode == Input.SCALE ? v / scaling + shift : DecoderMath.tinyClamp(v);
                }
            }
        }
    }

    /** The channel-last image → [C, h, w] at dst[off..]; TINY maps [0, 1] to [−1, 1] on the way. */
    private static void toNchw(Hwc src, float[] dst, int off, boolean tiny) {
        int plane = src.h() * src.w();
        for (int y = 0; y < src.h(); y++) {
            for (int col = 0; col < src.w(); col++) {
                int i = src.offset(y, col);
                for (int ch = 0; ch < src.c(); ch++) {
                    float v = src.data()[i + ch];
                    dst[off + ch * plane + y * src.w() + col] = tiny ? v * 2f - 1f : v;
                }
            }
        }
    }

    private static void copy(Hwc src, Hwc dst) {
        for (int y = 0; y < src.h(); y++) {
            for (int col = 0; col < src.w(); col++) {
                System.arraycopy(src.data(), src.offset(y, col), dst.data(), dst.offset(y, col), src.c());
            }
        }
    }

    private static void poll(Cancellation cancel) {
        if (cancel.isCancelled()) {
            throw new Stop();
        }
    }

    /** One worker thread's scratch. */
    private final class Worker {
        final MatMul mm = new MatMul();
        final float[] tile = new float[MatMul.TILE];
        final float[] lanes = new float[NARROW * L + NARROW]; // dot products: the lanes, then the scalar tails
        float[] sum = new float[0]; // GroupNorm row sums [C]
        float[] scores = new float[0]; // attention scores [ATTENTION_ROWS, tokens]

        void grow(Sizes s) {
            if (sum.length < s.channels()) {
                sum = new float[s.channels()];
            }
            scores = grown(scores, s.scores());
            normJob.grow(s.channels());
        }
    }

    /** Stops the pool and drops the activation buffers (the weights go with this object). */
    @Override
    public void close() {
        parallel.close();
        x = t = p = keys = values = new float[0];
        partial = new double[0];
        capacityH = 0;
        capacityW = 0;
    }
}
