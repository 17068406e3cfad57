package io.ditserve.backend;

import java.util.Optional;

/**
 * The decoders of a latent model: the full VAE decoder (final images) and the tiny one (previews), each optional.
 * Read from the model's {@code config.json} by {@link ModelConfigs#loadDecoders}.
 */
public record ModelDecoders(DecoderSpec vaeSpec, DecoderSpec taesdSpec) {
    public static final ModelDecoders NONE = new ModelDecoders(null, null);

    public ModelDecoders {
        if (vaeSpec != null && vaeSpec.kind() != DecoderSpec.Kind.FULL) {
            throw new IllegalArgumentException("vae must be an AutoencoderKL, got " + vaeSpec.summary());
        }
        if (taesdSpec != null && taesdSpec.kind() != DecoderSpec.Kind.TINY) {
            throw new IllegalArgumentException("taesd must be an AutoencoderTiny, got " + taesdSpec.summary());
        }
    }

    public Optional<DecoderSpec> vae() {
        return Optional.ofNullable(vaeSpec);
    }

    public Optional<DecoderSpec> taesd() {
        return Optional.ofNullable(taesdSpec);
    }
}
