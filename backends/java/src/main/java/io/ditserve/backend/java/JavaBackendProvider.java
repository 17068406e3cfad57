package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import java.util.List;

/** The pure-Java backend: no native code, runs wherever the JVM runs (Vector API for speed). */
public final class JavaBackendProvider implements BackendProvider {
    public static final String NAME = "java";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String description() {
        return "pure Java (Vector API, " + JavaDitBackend.PATH_OPTION + "=vector|scalar), reads "
                + JavaDitBackend.WEIGHTS_FILE + " (DiT) or diffusers' " + MmditCheckpoint.SINGLE_FILE
                + " and its shards (SD3 MMDiT, vector path)";
    }

    @Override
    public List<String> requiredFiles() {
        return List.of(JavaDitBackend.WEIGHTS_FILE);
    }

    /** A DiT or an MMDiT, by {@link ModelSpec#architecture()} ({@link JavaDitBackend#create}). */
    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return JavaDitBackend.create(model, options);
    }

    /** The full VAE decoder or the tiny preview decoder, on the same {@code java.path} and thread count. */
    @Override
    public io.ditserve.backend.TextEncoder createTextEncoder(io.ditserve.backend.TextEncoderSpec encoder,
            BackendOptions options) throws BackendException {
        return JavaTextEncoders.create(encoder, options); // CLIP with projection, or the T5 v1.1 encoder
    }

    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return JavaDecoder.create(decoder, options);
    }
}
