package io.ditserve.backend;

/**
 * A compute backend plugin, discovered with {@link java.util.ServiceLoader} (register the implementation in
 * {@code META-INF/services/io.ditserve.backend.BackendProvider}).
 *
 * <p>Discovery must be cheap: constructing a provider and calling {@link #name()} must not load native libraries
 * or touch a device. Everything expensive happens in {@link #create}, which is called only for the backend the
 * configuration selects.
 */
public interface BackendProvider {

    /** Short unique name used in the configuration, e.g. {@code java}, {@code onnx}, {@code cuda}. */
    String name();

    /** One line for listings and error messages. */
    String description();

    /**
     * Files of the model folder this backend needs (e.g. {@code weights.safetensors} or {@code model.onnx}); the
     * server checks they exist before {@link #create} so that a missing file fails at start-up with its name.
     */
    java.util.List<String> requiredFiles();

    /**
     * Loads the model and returns a ready backend. Throws with a message naming the file and the reason when the
     * model files are missing, corrupt or do not match the spec, or when the backend cannot run here (no device,
     * no native library): never falls back silently.
     */
    Backend create(ModelSpec model, BackendOptions options) throws BackendException;

    /**
     * Files of a decoder folder this backend needs besides {@code config.json}; checked before
     * {@link #createDecoder} like {@link #requiredFiles()}.
     */
    default java.util.List<String> requiredDecoderFiles() {
        return java.util.List.of(DecoderSpec.WEIGHTS_FILE);
    }

    /**
     * Loads a latent decoder (the full VAE decoder or the tiny preview decoder) on this backend, validated like
     * {@link #create}. A backend without decoders says so; the server then refuses to start with the model's name.
     */
    default Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        throw new BackendException("backend '" + name() + "' cannot run latent decoders (" + decoder.summary()
                + " in " + decoder.directory() + ")");
    }

    /**
     * Loads a text encoder of a text-to-image pipeline on this backend (docs/TEXT_MODELS.md), validated like
     * {@link #create}. A backend without text encoders says so; the server then refuses to start with the model's name.
     */
    default TextEncoder createTextEncoder(TextEncoderSpec encoder, BackendOptions options) throws BackendException {
        throw new BackendException("backend '" + name() + "' cannot run text encoders (" + encoder.summary() + " in "
                + encoder.directory() + ")");
    }
}
