package io.ditserve.server.model;

import io.ditserve.backend.Backend;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.ModelSpec;
import java.util.Objects;
import java.util.Optional;

/**
 * A model served by one backend, with its latent decoders when it has them (both on the model's backend).
 *
 * @param vaeDecoder the full VAE decoder (final images), or null
 * @param tinyDecoder the tiny decoder (previews), or null
 */
public record LoadedModel(ModelSpec spec, Backend backend, long parameters, Decoder vaeDecoder, Decoder tinyDecoder,
        TextPipeline text) {
    public LoadedModel {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(backend, "backend");
        if ((text != null) != (spec.text() != null)) {
            throw new IllegalArgumentException("model " + spec.name() + ": a text pipeline goes with a text model");
        }
    }

    public LoadedModel(ModelSpec spec, Backend backend, long parameters) {
        this(spec, backend, parameters, null, null, null);
    }

    public LoadedModel(ModelSpec spec, Backend backend, long parameters, Decoder vaeDecoder, Decoder tinyDecoder) {
        this(spec, backend, parameters, vaeDecoder, tinyDecoder, null);
    }

    /** Whether requests give a prompt (text-to-image) rather than a class. */
    public boolean textConditioned() {
        return text != null;
    }

    public String name() {
        return spec.name();
    }

    public boolean latent() {
        return spec.space() == ModelSpec.Space.LATENT;
    }

    public Optional<Decoder> vae() {
        return Optional.ofNullable(vaeDecoder);
    }

    public Optional<Decoder> taesd() {
        return Optional.ofNullable(tinyDecoder);
    }

    /** Side of the final image in pixels: the sample size, times the VAE's scale factor when there is one. */
    public int outputImageSize() {
        return vaeDecoder == null ? spec.inputSize() : spec.inputSize() * vaeDecoder.spec().scaleFactor();
    }

    /** Releases the text encoders and decoders, then the backend. */
    public void close() {
        if (text != null) {
            text.close();
        }
        if (tinyDecoder != null) {
            tinyDecoder.close();
        }
        if (vaeDecoder != null) {
            vaeDecoder.close();
        }
        backend.close();
    }
}
