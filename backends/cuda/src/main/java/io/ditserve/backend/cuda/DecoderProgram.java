package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderSpec;

/**
 * A latent decoder (docs/DECODERS.md) as a sequence of kernel launches and matrix products on a {@link DitOps}, read
 * top to bottom like diffusers' {@code Decoder.forward} (AutoencoderKL) and {@code DecoderTiny.forward}
 * (AutoencoderTiny); tools/dit/vae.py is the reference. It only queues work: the caller uploads the latent to
 * {@link DecoderBuffers.Addresses#latent} before and reads the image at the address {@link #run} returns after.
 *
 * <p>Activations are NCHW planes in three buffers that rotate roles (the running value x and two scratch buffers).
 * A convolution is im2col + one cuBLAS GEMM per tile (3×3; the nearest-neighbour upsampling before a convolution is
 * folded into its im2col) or a GEMM on the input itself (1×1); its bias, activation and residual are one
 * element-wise kernel after it. GroupNorm (+ SiLU) is one block per sample and group. The mid-block attention is
 * one head over the h·w positions: q | k | v from one GEMM with the packed weight ({@link DecoderWeights}), then
 * per chunk S = Q·Kᵀ, a row softmax with scale 1/√C, O = S·V, straight into channel planes.
 *
 * <p>{@code cancel} is polled before every layer (see {@link #pollsPerRun}).
 */
final class DecoderProgram {
    /** GroupNorm epsilon of every norm of the full decoder (diffusers' Decoder: resnet_eps = 1e-6). */
    static final float GROUP_NORM_EPS = 1e-6f;
    /**
     * The tiny decoder's soft clamp tanh(x / 3)·3: diffusers' DecoderTiny uses the constant 3, not the config's
     * latent_magnitude (an encode-side setting, 3 in every published config); docs/DECODERS.md.
     */
    static final float TINY_CLAMP = 3f;

    private final DecoderSpec spec;
    private final DecoderWeights weights;
    private final DevicePtr weightsBase;
    private final KernelArgs args = new KernelArgs();

    /** {@code weightsBase}: device address of the weight allocation laid out by {@code weights}. */
    DecoderProgram(DecoderSpec spec, DecoderWeights weights, DevicePtr weightsBase) {
        this.spec = spec;
        this.weights = weights;
        this.weightsBase = weightsBase;
    }

    /** How many times one run polls its cancellation flag: once before each layer. */
    static int pollsPerRun(DecoderSpec s) {
        if (s.kind() == DecoderSpec.Kind.FULL) {
            int stages = s.blockOutChannels().size();
            // conv_in; mid resnets (+ attention); each up block's resnets and upsampler; the output layers
            return 1 + 2 + (s.midBlockAttention() ? 1 : 0) + stages * (s.layersPerBlock() + 1) + (stages - 1) + 1;
        }
        int blocks = s.numBlocks().stream().mapToInt(Integer::intValue).sum();
        return 1 + blocks + s.numBlocks().size();
    }

    /** The state of one run: sizes and which buffer plays which role. */
    private final class Run {
        final DitOps ops;
        final DecoderBuffers.Addresses buf;
        final int n;
        final Cancellation cancel;
        int h;
        int w;
        DevicePtr x; // the running value
        DevicePtr a; // scratch
        DevicePtr b; // scratch

        Run(DitOps ops, DecoderBuffers.Addresses buf, int n, int h, int w, Cancellation cancel) {
            this.ops = ops;
            this.buf = buf;
            this.n = n;
            this.h = h;
            this.w = w;
            this.cancel = cancel;
            x = buf.x();
            a = buf.h1();
            b = buf.h2();
        }

        int hw() {
            return h * w;
        }

        void poll() throws BackendException {
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
        }

        /** The scratch buffer {@code b} becomes the running value. */
        void takeB() {
            DevicePtr t = x;
            x = b;
            b = t;
        }

        /** The scratch buffer {@code a} becomes the running value. */
        void takeA() {
            DevicePtr t = x;
            x = a;
            a = t;
        }
    }

    /**
     * Queues the decoder over the first {@code n} samples of the latent buffer, latents of h × w.
     *
     * @return the device address of the image [n, C_out, f·h, f·w] (one of the activation buffers)
     */
    DevicePtr run(DitOps ops, DecoderBuffers.Addresses buf, int n, int h, int w, Cancellation cancel)
            throws BackendException {
        DecoderBuffers layout = buf.layout();
        if (n < 1 || n > layout.samples()) {
            throw new IllegalArgumentException("batch " + n + " outside 1.." + layout.samples());
        }
        if (h < 1 || w < 1 || (long) h * w > layout.pixels()) {
            throw new IllegalArgumentException("latent " + h + "×" + w + " larger than the buffers' "
                    + layout.pixels() + " positions");
        }
        Run r = new Run(ops, buf, n, h, w, cancel);
        if (spec.kind() == DecoderSpec.Kind.FULL) {
            full(r);
        } else {
            tiny(r);
        }
        return r.x;
    }

    // ---- AutoencoderKL -------------------------------------------------------------------------------------------

    private void full(Run r) throws BackendException {
        final int lat = spec.latentChannels();
        final int top = spec.upBlockChannels(0);
        r.poll();
        // z = latent / scaling_factor + shift_factor, then post_quant_conv (1×1) and conv_in
        int total = r.n * lat * r.hw();
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.LATENT_SCALE).ptr(r.buf.latent()).ptr(r.x)
                .i32(total).f32((float) spec.scalingFactor()).f32((float) spec.shiftFactor()));
        if (spec.postQuantConv()) {
            conv1x1(r, r.x, r.b, lat, lat, "post_quant_conv");
            bias(r, r.b, lat, "post_quant_conv.bias", false);
            r.takeB();
        }
        conv3x3(r, r.x, r.b, lat, top, 1, "decoder.conv_in");
        bias(r, r.b, top, "decoder.conv_in.bias", false);
        r.takeB();

        // mid block: resnet, attention, resnet
        r.poll();
        resnet(r, "decoder.mid_block.resnets.0", top, top);
        if (spec.midBlockAttention()) {
            r.poll();
            attention(r, top);
        }
        r.poll();
        resnet(r, "decoder.mid_block.resnets.1", top, top);

        // up blocks: layers_per_block + 1 resnets, then (all but the last) nearest ×2 and a 3×3 conv
        int stages = spec.blockOutChannels().size();
        int prev = top;
        for (int i = 0; i < stages; i++) {
            int out = spec.upBlockChannels(i);
            for (int j = 0; j <= spec.layersPerBlock(); j++) {
                r.poll();
                resnet(r, "decoder.up_blocks." + i + ".resnets." + j, j == 0 ? prev : out, out);
            }
            if (i < stages - 1) {
                r.poll();
                String p = "decoder.up_blocks." + i + ".upsamplers.0.conv";
                conv3x3(r, r.x, r.b, out, out, spec.upsampling(), p);
                r.h *= spec.upsampling();
                r.w *= spec.upsampling();
                bias(r, r.b, out, p + ".bias", false);
                r.takeB();
            }
            prev = out;
        }

        // conv_norm_out, SiLU, conv_out
        r.poll();
        groupNorm(r, r.x, r.a, prev, "decoder.conv_norm_out", true);
        conv3x3(r, r.a, r.b, prev, spec.outChannels(), 1, "decoder.conv_out");
        bias(r, r.b, spec.outChannels(), "decoder.conv_out.bias", false);
        r.takeB();
    }

    /**
     * ResnetBlock2D without time embedding: h = conv1(SiLU(norm1(x))), h = conv2(SiLU(norm2(h))),
     * out = shortcut(x) + h, shortcut = conv_shortcut (1×1) when the channels change, else x.
     */
    private void resnet(Run r, String p, int in, int out) throws BackendException {
        groupNorm(r, r.x, r.a, in, p + ".norm1", true);
        conv3x3(r, r.a, r.b, in, out, 1, p + ".conv1");
        bias(r, r.b, out, p + ".conv1.bias", false);
        groupNorm(r, r.b, r.a, out, p + ".norm2", true);
        conv3x3(r, r.a, r.b, out, out, 1, p + ".conv2");
        DevicePtr residual = r.x;
        if (in != out) {
            conv1x1(r, r.x, r.a, in, out, p + ".conv_shortcut"); // a is free: conv2's columns are built
            bias(r, r.a, out, p + ".conv_shortcut.bias", false);
            residual = r.a;
        }
        biasResidual(r, r.b, out, p + ".conv2.bias", residual, false);
        r.takeB();
    }

    /**
     * The mid block's attention, one head of C over the T = h·w positions: x + to_out(softmax(q·kᵀ/√C)·v) with
     * q, k, v = to_q, to_k, to_v of GroupNorm(x), all in channel planes [C, T].
     */
    private void attention(Run r, int c) throws BackendException {
        final String p = "decoder.mid_block.attentions.0.";
        final int t = r.hw();
        final long ct = (long) c * t;
        groupNorm(r, r.x, r.a, c, p + "group_norm", false);
        // q | k | v [n, 3C, T] = W_qkv [3C, C] · a [n, C, T], + the packed bias
        r.ops.gemm(GemmCall.convolution(t, 3 * c, c, t, t, ct, 3 * ct, r.n), r.a, w(DecoderWeights.QKV_WEIGHT), r.b);
        int total = Math.toIntExact(3 * ct * r.n);
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.CHANNEL_BIAS).ptr(r.b)
                .ptr(w(DecoderWeights.QKV_BIAS)).i32(total).i32(t).i32(3 * c).i32(0));
        float scale = (float) Math.pow(c, -0.5); // dim_head ** -0.5 with one head of C
        long capacity = r.buf.layout().length(DecoderBuffers.Buffer.SCORES);
        long square = (long) t * t;
        long qkvStride = 3 * ct;
        if (square <= capacity) {
            // chunks of whole samples; the output goes to a [n, C, T]
            int chunk = (int) Math.min(r.n, capacity / square);
            for (int s0 = 0; s0 < r.n; s0 += chunk) {
                int cnt = Math.min(chunk, r.n - s0);
                DevicePtr q = r.b.plusFloats(s0 * qkvStride);
                DevicePtr k = q.plusFloats(ct);
                DevicePtr v = k.plusFloats(ct);
                r.ops.gemm(GemmCall.channelScores(t, t, c, qkvStride, square, cnt), k, q, r.buf.scores());
                r.ops.launch(LaunchConfig.rows(cnt * t, t), args.reset(Kernel.SOFTMAX_ROWS).ptr(r.buf.scores())
                        .i32(t).f32(scale));
                r.ops.gemm(GemmCall.channelValues(t, t, c, square, qkvStride, ct, cnt), r.buf.scores(), v,
                        r.a.plusFloats(s0 * ct));
            }
        } else {
            // one sample at a time, in chunks of query rows
            int rows = aligned((int) (capacity / t));
            for (int s = 0; s < r.n; s++) {
                DevicePtr q = r.b.plusFloats(s * qkvStride);
                DevicePtr k = q.plusFloats(ct);
                DevicePtr v = k.plusFloats(ct);
                for (int i0 = 0; i0 < t; i0 += rows) {
                    int cnt = Math.min(rows, t - i0);
                    r.ops.gemm(GemmCall.channelScores(t, cnt, c, 0, 0, 1), k, q.plusFloats(i0), r.buf.scores());
                    r.ops.launch(LaunchConfig.rows(cnt, t), args.reset(Kernel.SOFTMAX_ROWS).ptr(r.buf.scores())
                            .i32(t).f32(scale));
                    r.ops.gemm(GemmCall.channelValues(t, cnt, c, 0, 0, 0, 1), r.buf.scores(), v,
                            r.a.plusFloats(s * ct + i0));
                }
            }
        }
        // to_out.0, + its bias, + the residual x
        conv1x1(r, r.a, r.b, c, c, p + "to_out.0");
        biasResidual(r, r.b, c, p + "to_out.0.bias", r.x, false);
        r.takeB();
    }

    // ---- AutoencoderTiny -----------------------------------------------------------------------------------------

    private void tiny(Run r) throws BackendException {
        final int lat = spec.latentChannels();
        final int c = spec.blockOutChannels().get(0);
        r.poll();
        // tanh(x / 3) · 3, conv + ReLU
        int total = r.n * lat * r.hw();
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.TANH_CLAMP).ptr(r.buf.latent()).ptr(r.x)
                .i32(total).f32(TINY_CLAMP));
        int k = 0;
        conv3x3(r, r.x, r.b, lat, c, 1, "decoder.layers." + k);
        bias(r, r.b, c, "decoder.layers." + k + ".bias", true);
        r.takeB();
        k += 2;
        int stages = spec.numBlocks().size();
        for (int i = 0; i < stages; i++) {
            for (int blk = 0; blk < spec.numBlocks().get(i); blk++) {
                r.poll();
                // relu(conv4(relu(conv2(relu(conv0(x))))) + x)
                String p = "decoder.layers." + k + ".conv.";
                conv3x3(r, r.x, r.a, c, c, 1, p + "0");
                bias(r, r.a, c, p + "0.bias", true);
                conv3x3(r, r.a, r.b, c, c, 1, p + "2");
                bias(r, r.b, c, p + "2.bias", true);
                conv3x3(r, r.b, r.a, c, c, 1, p + "4");
                biasResidual(r, r.a, c, p + "4.bias", r.x, true);
                r.takeA();
                k++;
            }
            r.poll();
            if (i < stages - 1) {
                k++; // the upsampling layer, folded into the next convolution's columns
                // nearest-neighbour upsampling, then a conv without bias
                conv3x3(r, r.x, r.b, c, c, spec.upsampling(), "decoder.layers." + k);
                r.h *= spec.upsampling();
                r.w *= spec.upsampling();
                r.takeB();
            } else {
                // the last conv, with bias; then [0, 1] → [-1, 1]
                int out = spec.outChannels();
                conv3x3(r, r.x, r.b, c, out, 1, "decoder.layers." + k);
                bias(r, r.b, out, "decoder.layers." + k + ".bias", false);
                int size = r.n * out * r.hw();
                r.ops.launch(LaunchConfig.elementwise(size), args.reset(Kernel.SCALE_SHIFT).ptr(r.b).i32(size)
                        .f32(2f).f32(-1f));
                r.takeB();
            }
            k++;
        }
    }

    // ---- layers --------------------------------------------------------------------------------------------------

    /**
     * dst [n, out, H, W] = the 3×3 convolution (stride 1, padding 1, no bias) of src [n, in, h, w] upsampled by
     * {@code up} (H = up·h): im2col into the columns buffer, then W [out, in·9] · columns, in as few tiles as the
     * buffer allows: all samples, groups of samples, or pixel ranges of one sample.
     */
    private void conv3x3(Run r, DevicePtr src, DevicePtr dst, int in, int out, int up, String prefix)
            throws BackendException {
        DevicePtr weight = w(prefix + ".weight");
        int k = in * 9;
        int hw = r.hw() * up * up;
        long inStride = (long) in * r.hw();
        long outStride = (long) out * hw;
        long perSample = (long) k * hw;
        long capacity = r.buf.layout().length(DecoderBuffers.Buffer.COL);
        if (perSample <= capacity) {
            int group = (int) Math.min(r.n, capacity / perSample);
            for (int s0 = 0; s0 < r.n; s0 += group) {
                int cnt = Math.min(group, r.n - s0);
                im2col(r, src.plusFloats(s0 * inStride), in, up, 0, hw, cnt);
                r.ops.gemm(GemmCall.convolution(hw, out, k, hw, hw, perSample, outStride, cnt), r.buf.col(), weight,
                        dst.plusFloats(s0 * outStride));
            }
        } else {
            int tile = aligned((int) (capacity / k));
            for (int s = 0; s < r.n; s++) {
                for (int p0 = 0; p0 < hw; p0 += tile) {
                    int cnt = Math.min(tile, hw - p0);
                    im2col(r, src.plusFloats(s * inStride), in, up, p0, cnt, 1);
                    r.ops.gemm(GemmCall.convolution(cnt, out, k, cnt, hw, 0, 0, 1), r.buf.col(), weight,
                            dst.plusFloats(s * outStride + p0));
                }
            }
        }
    }

    private void im2col(Run r, DevicePtr src, int in, int up, int firstPixel, int tile, int samples)
            throws BackendException {
        int total = Math.toIntExact((long) samples * in * 9 * tile);
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.IM2COL_3X3).ptr(src).ptr(r.buf.col())
                .i32(total).i32(in).i32(r.h).i32(r.w).i32(up).i32(firstPixel).i32(tile));
    }

    /** dst [n, out, h, w] = W [out, in] · src [n, in, h, w] (a 1×1 convolution or a Linear on channel planes). */
    private void conv1x1(Run r, DevicePtr src, DevicePtr dst, int in, int out, String prefix) throws BackendException {
        int hw = r.hw();
        r.ops.gemm(GemmCall.convolution(hw, out, in, hw, hw, (long) in * hw, (long) out * hw, r.n), src,
                w(prefix + ".weight"), dst);
    }

    private void bias(Run r, DevicePtr y, int c, String name, boolean relu) throws BackendException {
        int total = r.n * c * r.hw();
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.CHANNEL_BIAS).ptr(y).ptr(w(name)).i32(total)
                .i32(r.hw()).i32(c).i32(relu ? 1 : 0));
    }

    private void biasResidual(Run r, DevicePtr y, int c, String name, DevicePtr residual, boolean relu)
            throws BackendException {
        int total = r.n * c * r.hw();
        r.ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.CHANNEL_BIAS_RESIDUAL).ptr(y).ptr(w(name))
                .ptr(residual).i32(total).i32(r.hw()).i32(c).i32(relu ? 1 : 0));
    }

    /** dst = GroupNorm(src) with the norm's weight and bias (+ SiLU), one block per sample and group. */
    private void groupNorm(Run r, DevicePtr src, DevicePtr dst, int c, String prefix, boolean silu)
            throws BackendException {
        int groups = spec.normGroups();
        r.ops.launch(LaunchConfig.longRows(r.n * groups, c / groups * r.hw()), args.reset(Kernel.GROUP_NORM)
                .ptr(src).ptr(dst).ptr(w(prefix + ".weight")).ptr(w(prefix + ".bias")).i32(c).i32(r.hw())
                .i32(groups).f32(GROUP_NORM_EPS).i32(silu ? 1 : 0));
    }

    /**
     * A tile of pixels or query rows rounded down to a multiple of 64 when it holds at least 64, so that every
     * tile's first column (and the leading dimension of its columns) stays 256-byte aligned, as cuBLAS's fastest
     * kernels want.
     */
    static int aligned(int count) {
        return count >= WeightLayout.ALIGN ? count / WeightLayout.ALIGN * WeightLayout.ALIGN : count;
    }

    /** Device address of a weight slot. */
    private DevicePtr w(String name) {
        return weightsBase.plusFloats(weights.offset(name));
    }
}
