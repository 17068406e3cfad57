package io.ditserve.backend;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * A decoder folder's {@code config.json} (diffusers layout, read by {@link DecoderConfigs}), validated. The field
 * names follow the diffusers config keys; docs/DECODERS.md lists them.
 *
 * @param directory the folder (holds {@link #WEIGHTS_FILE}, and {@link #ONNX_FILE} for the onnx backend)
 * @param kind which of the two architectures
 * @param latentChannels channels of the latent (4 for the SD VAE)
 * @param outChannels channels of the image (3)
 * @param blockOutChannels FULL: {@code block_out_channels} (the decoder runs them reversed); TINY:
 *     {@code decoder_block_out_channels} (all equal)
 * @param layersPerBlock FULL: {@code layers_per_block} (each up block has one more resnet); TINY: unused (0)
 * @param numBlocks TINY: {@code num_decoder_blocks}, blocks per stage; FULL: empty
 * @param normGroups FULL: {@code norm_num_groups}; TINY: 0
 * @param scalingFactor FULL: the latent is divided by it before decoding; TINY: 1
 * @param shiftFactor FULL: added after the division (0 when the config has none)
 * @param postQuantConv FULL: whether the 1×1 {@code post_quant_conv} runs first
 * @param midBlockAttention FULL: whether the mid block has its attention layer
 * @param upsampling TINY: {@code upsampling_scaling_factor} between stages; FULL: 2
 * @param latentMagnitude TINY: {@code latent_magnitude} from the config (3 in every published TAESD); the decoders
 *     soft-clamp with diffusers' fixed constant, {@code tanh(x / 3) · 3}, as docs/DECODERS.md explains; FULL: 0
 */
public record DecoderSpec(
        Path directory,
        Kind kind,
        int latentChannels,
        int outChannels,
        List<Integer> blockOutChannels,
        int layersPerBlock,
        List<Integer> numBlocks,
        int normGroups,
        double scalingFactor,
        double shiftFactor,
        boolean postQuantConv,
        boolean midBlockAttention,
        int upsampling,
        double latentMagnitude) {

    public static final String WEIGHTS_FILE = "diffusion_pytorch_model.safetensors";
    /** The decoder as an ONNX graph (made by {@code tools/make_decoder_fixtures.py} / {@code tools/convert.py}). */
    public static final String ONNX_FILE = "decoder.onnx";

    /** The two decoder architectures, by their diffusers class names. */
    public enum Kind {
        FULL("AutoencoderKL"),
        TINY("AutoencoderTiny");

        private final String className;

        Kind(String className) {
            this.className = className;
        }

        public String className() {
            return className;
        }
    }

    public DecoderSpec {
        Objects.requireNonNull(directory, "directory");
        Objects.requireNonNull(kind, "kind");
        blockOutChannels = List.copyOf(blockOutChannels);
        numBlocks = List.copyOf(numBlocks);
    }

    /** Image pixels per latent position along each side (8 for the SD VAE and for TAESD). */
    public int scaleFactor() {
        int stages = kind == Kind.FULL ? blockOutChannels.size() : numBlocks.size();
        int f = 1;
        for (int i = 1; i < stages; i++) {
            f *= upsampling;
        }
        return f;
    }

    public Path weightsFile() {
        return directory.resolve(WEIGHTS_FILE);
    }

    public Path onnxFile() {
        return directory.resolve(ONNX_FILE);
    }

    /** FULL: the output channels of up block i (block_out_channels reversed). */
    public int upBlockChannels(int i) {
        return blockOutChannels.get(blockOutChannels.size() - 1 - i);
    }

    /** Multiply-accumulates of decoding one latent of h × w positions (convolutions, attention, linear layers). */
    public long macsPerImage(int h, int w) {
        return DecoderCheckpoint.macs(this, h, w);
    }

    /** Short description for listings, e.g. {@code AutoencoderKL f=8 [128, 256, 512, 512]}. */
    public String summary() {
        return kind.className() + " f=" + scaleFactor() + " " + blockOutChannels;
    }
}
