package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.onnx.OnnxGraph.Attr;
import java.util.List;

/**
 * The decode path of diffusers' AutoencoderKL (docs/DECODERS.md; reference tools/dit/vae.py FullDecoder) as an ONNX
 * graph, built from the spec and the folder's tensors, so that a diffusers {@code vae/} folder as downloaded (no
 * exported {@code decoder.onnx}) decodes on the onnx backend: SD3's 16-channel VAE among them.
 *
 * <p>Input {@code latent} float32 [N, C_latent, h, w], output {@code image} [N, C_out, f·h, f·w], N, h and w
 * symbolic (the same contract as an exported decoder.onnx, {@link OnnxDecoder}). The latent scaling is in the graph:
 * {@code latent / scaling_factor + shift_factor}, then {@code post_quant_conv} only when the config has it (SD3's
 * VAE has none). Opset {@value OnnxGraph#OPSET} has no GroupNormalization, so GroupNorm is written as torch exports
 * it: a reshape to [N, groups, rest], InstanceNormalization (scale 1, bias 0, eps 1e-6), the reshape back, then the
 * per-channel weight and bias. Upsampling is Resize nearest ×2 (asymmetric coordinates, floor: pixel i takes source
 * pixel ⌊i/2⌋, what torch's nearest interpolation does). The mid-block attention is one head of C channels over the
 * h·w positions in raster order, scale 1/√C.
 */
final class VaeDecoderGraph {
    static final String LATENT = "latent";
    static final String IMAGE = "image";
    private static final double GROUP_NORM_EPS = 1e-6;

    private final DecoderSpec spec;
    private final GraphOps ops;
    private final OnnxGraph g;
    private final String groupOnes;
    private final String groupZeros;

    private VaeDecoderGraph(DecoderSpec spec, GraphOps ops) {
        this.spec = spec;
        this.ops = ops;
        this.g = ops.g;
        int groups = spec.normGroups();
        this.groupOnes = g.constant("group_norm.ones", filled(groups, 1f), groups);
        this.groupZeros = g.constant("group_norm.zeros", filled(groups, 0f), groups);
    }

    /** The graph of {@code spec} (an AutoencoderKL), its weights external in {@code w}'s folder. */
    static byte[] build(DecoderSpec spec, OnnxGraph g, GraphWeights w) throws BackendException {
        if (spec.kind() != DecoderSpec.Kind.FULL) {
            throw new IllegalArgumentException("only AutoencoderKL decoders are built here, not " + spec.summary());
        }
        VaeDecoderGraph d = new VaeDecoderGraph(spec, new GraphOps(g, w));
        String latent = g.input(LATENT, OnnxGraph.FLOAT, "N", spec.latentChannels(), "h", "w");
        String z = d.ops.op("Div", "unscale", latent, d.ops.scalar("scaling_factor", (float) spec.scalingFactor()));
        if (spec.shiftFactor() != 0) {
            z = d.ops.add("unshift", z, d.ops.scalar("shift_factor", (float) spec.shiftFactor()));
        }
        if (spec.postQuantConv()) {
            z = d.conv("post_quant_conv", z, 1);
        }
        String x = d.conv("decoder.conv_in", z, 3);
        x = d.resnet("decoder.mid_block.resnets.0", x, false);
        if (spec.midBlockAttention()) {
            x = d.attention("decoder.mid_block.attentions.0", x, spec.upBlockChannels(0));
        }
        x = d.resnet("decoder.mid_block.resnets.1", x, false);
        int stages = spec.blockOutChannels().size();
        int prev = spec.upBlockChannels(0);
        for (int i = 0; i < stages; i++) {
            int out = spec.upBlockChannels(i);
            for (int j = 0; j <= spec.layersPerBlock(); j++) {
                x = d.resnet("decoder.up_blocks." + i + ".resnets." + j, x, j == 0 && prev != out);
            }
            if (i < stages - 1) {
                x = d.upsample("decoder.up_blocks." + i + ".upsamplers.0", x);
            }
            prev = out;
        }
        x = d.ops.silu("decoder.conv_act", d.groupNorm("decoder.conv_norm_out", x));
        String image = d.conv("decoder.conv_out", x, 3);
        g.output(image, IMAGE, OnnxGraph.FLOAT, "N", spec.outChannels(), "H", "W");
        return g.toBytes("ditserve onnx backend: AutoencoderKL decoder " + spec.summary());
    }

    private static float[] filled(int n, float v) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, v);
        return a;
    }

    /** A k×k convolution with bias, stride 1, padding k/2 ("same"). */
    private String conv(String prefix, String x, int k) throws BackendException {
        long pad = k / 2;
        return g.node("Conv", prefix, List.of(x, ops.w.f32(prefix + ".weight"), ops.w.f32(prefix + ".bias")),
                Attr.ints("kernel_shape", k, k), Attr.ints("pads", pad, pad, pad, pad), Attr.ints("strides", 1, 1));
    }

    /** GroupNorm(norm_num_groups, eps 1e-6) with the affine weight and bias of {@code prefix}. */
    private String groupNorm(String prefix, String x) throws BackendException {
        String grouped = ops.reshape(prefix + ".grouped", x, 0, spec.normGroups(), -1);
        String normed = g.node("InstanceNormalization", prefix + ".normed", List.of(grouped, groupOnes, groupZeros),
                Attr.of("epsilon", (float) GROUP_NORM_EPS));
        String back = ops.op("Reshape", prefix + ".back", normed, ops.op("Shape", prefix + ".shape", x));
        String weight = ops.reshape(prefix + ".weight_c11", ops.w.f32(prefix + ".weight"), -1, 1, 1);
        String bias = ops.reshape(prefix + ".bias_c11", ops.w.f32(prefix + ".bias"), -1, 1, 1);
        return ops.add(prefix, ops.mul(prefix + ".scaled", back, weight), bias);
    }

    /**
     * ResnetBlock2D without time embedding: conv2(silu(norm2(conv1(silu(norm1(x)))))) added to x, or to
     * conv_shortcut(x) (1×1) where the width changes.
     */
    private String resnet(String prefix, String x, boolean shortcut) throws BackendException {
        String h = conv(prefix + ".conv1", ops.silu(prefix + ".act1", groupNorm(prefix + ".norm1", x)), 3);
        h = conv(prefix + ".conv2", ops.silu(prefix + ".act2", groupNorm(prefix + ".norm2", h)), 3);
        String skip = shortcut ? conv(prefix + ".conv_shortcut", x, 1) : x;
        return ops.add(prefix, skip, h);
    }

    /** The mid block's self-attention: x + to_out.0(softmax(q·kᵀ/√C)·v) over group_norm(x)'s positions. */
    private String attention(String prefix, String x, int channels) throws BackendException {
        String h = groupNorm(prefix + ".group_norm", x);
        String tokens = ops.transpose(prefix + ".tokens", ops.reshape(prefix + ".flat", h, 0, 0, -1), 0, 2, 1);
        String q = ops.unsqueeze(prefix + ".q", ops.linear(tokens, prefix + ".to_q"), 1);
        String k = ops.unsqueeze(prefix + ".k", ops.linear(tokens, prefix + ".to_k"), 1);
        String v = ops.unsqueeze(prefix + ".v", ops.linear(tokens, prefix + ".to_v"), 1);
        String att = ops.attention(prefix + ".sdpa", q, k, v, (float) Math.pow(channels, -0.5), null);
        String out = ops.linear(ops.op("Squeeze", prefix + ".head", att, g.longs(1)), prefix + ".to_out.0");
        String chw = ops.transpose(prefix + ".channels", out, 0, 2, 1);
        String back = ops.op("Reshape", prefix + ".back", chw, ops.op("Shape", prefix + ".shape", x));
        return ops.add(prefix, x, back);
    }

    /** Nearest-neighbour ×2, then the 3×3 conv. */
    private String upsample(String prefix, String x) throws BackendException {
        String scales = g.constant(prefix + ".scales", new float[] {1f, 1f, 2f, 2f}, 4);
        String up = g.node("Resize", prefix + ".nearest", List.of(x, "", scales), Attr.str("mode", "nearest"),
                Attr.str("coordinate_transformation_mode", "asymmetric"), Attr.str("nearest_mode", "floor"));
        return conv(prefix + ".conv", up, 3);
    }
}
