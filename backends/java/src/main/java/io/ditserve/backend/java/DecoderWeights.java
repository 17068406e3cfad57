package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.function.Function;

/**
 * The parameters of a latent decoder (docs/DECODERS.md) as a tree that follows the architecture, with the diffusers
 * key names. The tree is generic in how a convolution is held: {@link ScalarDecoder} keeps the checkpoint layout
 * ({@link Conv}), {@link VectorDecoder} packs each convolution for the matrix kernel as it is read. Each tensor is
 * copied from the file, converted, and its copy dropped before the next is read, so that one copy of the weights
 * lives in memory; the file is unmapped before {@link #load} returns.
 *
 * <p>Shapes in comments: C_lat = latent channels, C_i = output channels of up block i, c = the tiny decoder's width.
 *
 * @param <C> how the engine holds a convolution (or a linear layer, which is a 1×1 convolution here)
 */
final class DecoderWeights<C> {

    /** A convolution (or Linear, with k = 1) in the checkpoint layout: weight [out, in, k, k], bias [out] or null. */
    record Conv(float[] weight, float[] bias, int out, int in, int k) {}

    /** A GroupNorm's affine parameters: weight [C], bias [C]. */
    record Norm(float[] weight, float[] bias, int channels) {}

    /**
     * diffusers ResnetBlock2D: norm1, conv1 (3×3 in → out), norm2, conv2 (3×3 out → out), conv_shortcut
     * (1×1 in → out) or null when in = out.
     */
    record Resnet<C>(Norm norm1, C conv1, Norm norm2, C conv2, C convShortcut) {}

    /** The mid-block attention: group_norm, to_q, to_k, to_v, to_out.0 (Linear [C, C] each). */
    record Attention<C>(Norm groupNorm, C toQ, C toK, C toV, C toOut) {}

    /** up_blocks.i: resnets.0..layers_per_block, then upsamplers.0.conv (3×3 C_i → C_i), null for the last block. */
    record UpBlock<C>(List<Resnet<C>> resnets, C upsampler) {}

    /** AutoencoderKL's decode path. */
    record Full<C>(
            C postQuantConv, // post_quant_conv (C_lat, C_lat, 1, 1), or null
            C convIn, // decoder.conv_in (C_0, C_lat, 3, 3)
            Resnet<C> midResnet0, // decoder.mid_block.resnets.0 (C_0 → C_0)
            Attention<C> midAttention, // decoder.mid_block.attentions.0 (C_0), or null
            Resnet<C> midResnet1, // decoder.mid_block.resnets.1
            List<UpBlock<C>> upBlocks, // decoder.up_blocks.*
            Norm convNormOut, // decoder.conv_norm_out (C_last)
            C convOut) {} // decoder.conv_out (C_out, C_last, 3, 3)

    /** AutoencoderTinyBlock: relu(conv.4(relu(conv.2(relu(conv.0(x))))) + x), each conv (c, c, 3, 3) with bias. */
    record TinyBlock<C>(C conv0, C conv2, C conv4) {}

    /**
     * One stage of the tiny decoder: its blocks, then either the conv after the upsampling (c → c, no bias) or,
     * for the last stage, the output conv (c → C_out, with bias).
     */
    record TinyStage<C>(List<TinyBlock<C>> blocks, C conv) {}

    /** AutoencoderTiny's decoder: decoder.layers.0 (c, C_lat, 3, 3), ReLU, then the stages. */
    record Tiny<C>(C convIn, List<TinyStage<C>> stages) {}

    /** Exactly one of the two is set, by the spec's kind. */
    final Full<C> full;
    final Tiny<C> tiny;

    private DecoderWeights(Full<C> full, Tiny<C> tiny) {
        this.full = full;
        this.tiny = tiny;
    }

    /**
     * Opens the spec's weights file, validates it ({@link DecoderCheckpoint#resolve}: shapes, legacy attention
     * names), reads every tensor through {@code convert} ({@code convertUpsampler} for the convs that follow a
     * nearest-neighbour upsampling, which an engine may fold into the upsampling) and unmaps the file.
     */
    static <C> DecoderWeights<C> load(DecoderSpec spec, Function<Conv, C> convert, Function<Conv, C> convertUpsampler)
            throws BackendException {
        Path file = spec.weightsFile();
        try (Safetensors st = Safetensors.open(file)) {
            Reader<C> r = new Reader<>(st, DecoderCheckpoint.resolve(st, spec), convert, convertUpsampler);
            return spec.kind() == DecoderSpec.Kind.FULL
                    ? new DecoderWeights<>(full(spec, r), null)
                    : new DecoderWeights<>(null, tiny(spec, r));
        }
    }

    private static <C> Full<C> full(DecoderSpec s, Reader<C> r) throws BackendException {
        int lat = s.latentChannels();
        int top = s.upBlockChannels(0);
        C postQuant = s.postQuantConv() ? r.conv("post_quant_conv", lat, lat, 1, true) : null;
        C convIn = r.conv("decoder.conv_in", top, lat, 3, true);
        String mid = "decoder.mid_block.";
        Resnet<C> mid0 = resnet(r, mid + "resnets.0", top, top);
        Attention<C> attention = null;
        if (s.midBlockAttention()) {
            String a = mid + "attentions.0.";
            attention = new Attention<>(r.norm(a + "group_norm", top), r.conv(a + "to_q", top, top, 1, true),
                    r.conv(a + "to_k", top, top, 1, true), r.conv(a + "to_v", top, top, 1, true),
                    r.conv(a + "to_out.0", top, top, 1, true));
        }
        Resnet<C> mid1 = resnet(r, mid + "resnets.1", top, top);
        List<UpBlock<C>> blocks = new ArrayList<>();
        int stages = s.blockOutChannels().size();
        int prev = top;
        for (int i = 0; i < stages; i++) {
            int out = s.upBlockChannels(i);
            String b = "decoder.up_blocks." + i + ".";
            List<Resnet<C>> resnets = new ArrayList<>();
            for (int j = 0; j <= s.layersPerBlock(); j++) {
                resnets.add(resnet(r, b + "resnets." + j, j == 0 ? prev : out, out));
            }
            C up = i < stages - 1 ? r.upsamplerConv(b + "upsamplers.0.conv", out, out, true) : null;
            blocks.add(new UpBlock<>(List.copyOf(resnets), up));
            prev = out;
        }
        Norm normOut = r.norm("decoder.conv_norm_out", prev);
        C convOut = r.conv("decoder.conv_out", s.outChannels(), prev, 3, true);
        return new Full<>(postQuant, convIn, mid0, attention, mid1, List.copyOf(blocks), normOut, convOut);
    }

    private static <C> Resnet<C> resnet(Reader<C> r, String p, int in, int out) throws BackendException {
        return new Resnet<>(r.norm(p + ".norm1", in), r.conv(p + ".conv1", out, in, 3, true),
                r.norm(p + ".norm2", out), r.conv(p + ".conv2", out, out, 3, true),
                in != out ? r.conv(p + ".conv_shortcut", out, in, 1, true) : null);
    }

    /** Layer numbering of decoder.layers.K as in DecoderCheckpoint: ReLU and Upsample have no parameters. */
    private static <C> Tiny<C> tiny(DecoderSpec s, Reader<C> r) throws BackendException {
        int c = s.blockOutChannels().get(0);
        C convIn = r.conv("decoder.layers.0", c, s.latentChannels(), 3, true);
        int k = 2; // after the conv and its ReLU
        List<TinyStage<C>> stages = new ArrayList<>();
        int count = s.numBlocks().size();
        for (int i = 0; i < count; i++) {
            List<TinyBlock<C>> blocks = new ArrayList<>();
            for (int b = 0; b < s.numBlocks().get(i); b++) {
                String p = "decoder.layers." + k + ".conv.";
                blocks.add(new TinyBlock<>(r.conv(p + "0", c, c, 3, true), r.conv(p + "2", c, c, 3, true),
                        r.conv(p + "4", c, c, 3, true)));
                k++;
            }
            boolean last = i == count - 1;
            if (!last) {
                k++; // the upsampling
            }
            String name = "decoder.layers." + k;
            C conv = last ? r.conv(name, s.outChannels(), c, 3, true) : r.upsamplerConv(name, c, c, false);
            k++;
            stages.add(new TinyStage<>(List.copyOf(blocks), conv));
        }
        return new Tiny<>(convIn, List.copyOf(stages));
    }

    /** Reads tensors by canonical name through the file's actual names. */
    private record Reader<C>(Safetensors st, Map<String, String> names, Function<Conv, C> convert,
            Function<Conv, C> convertUpsampler) {
        private float[] floats(String canonical) throws BackendException {
            String actual = names.get(canonical);
            if (actual == null) {
                throw new IllegalStateException("no checkpoint entry for " + canonical); // resolve lists them all
            }
            return st.floats(actual);
        }

        /** A conv (k×k) or, with k = 1, also a Linear [out, in]: both are [out, in·k·k] row-major. */
        C conv(String prefix, int out, int in, int k, boolean bias) throws BackendException {
            return convert.apply(new Conv(floats(prefix + ".weight"), bias ? floats(prefix + ".bias") : null,
                    out, in, k));
        }

        /** A 3×3 conv that runs on the output of a nearest-neighbour upsampling. */
        C upsamplerConv(String prefix, int out, int in, boolean bias) throws BackendException {
            return convertUpsampler.apply(new Conv(floats(prefix + ".weight"),
                    bias ? floats(prefix + ".bias") : null, out, in, 3));
        }

        Norm norm(String prefix, int channels) throws BackendException {
            return new Norm(floats(prefix + ".weight"), floats(prefix + ".bias"), channels);
        }
    }
}
