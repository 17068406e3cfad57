package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderArguments;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Tensor;
import java.util.Objects;

/**
 * A latent decoder (docs/DECODERS.md) in pure Java: the full VAE decoder or the tiny preview decoder, on the path
 * that {@code java.path} selects like for the DiT ({@code vector}, the default, on {@code threads} threads of a
 * pool this decoder owns; or {@code scalar}, the single-threaded reference loops).
 *
 * <p>Calls to {@link #decode} are serialised; {@link #close} waits for a running one and is idempotent.
 */
public final class JavaDecoder implements Decoder {
    private final DecoderSpec spec;
    private final DecoderEngine engine;
    private boolean closed;

    private JavaDecoder(DecoderSpec spec, DecoderEngine engine) {
        this.spec = spec;
        this.engine = engine;
    }

    /** Loads and validates the folder's weights; the file is unmapped again before this returns. */
    public static JavaDecoder create(DecoderSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        JavaDitBackend.checkKeys(options);
        String path = JavaDitBackend.path(options);
        DecoderEngine engine = switch (path) {
            case "vector" -> {
                int upsampling = spec.kind() == DecoderSpec.Kind.FULL ? 2 : spec.upsampling();
                yield new VectorDecoder(spec, DecoderWeights.load(spec, VectorDecoder.Packed::of,
                        c -> VectorDecoder.Packed.upsampling(c, upsampling)), options.threads());
            }
            case "scalar" -> new ScalarDecoder(spec, DecoderWeights.load(spec, c -> c, c -> c));
            default -> throw new BackendException("Unknown " + JavaDitBackend.PATH_OPTION + " [" + path
                    + "] of the java backend, known options [vector, scalar]");
        };
        return new JavaDecoder(spec, engine);
    }

    @Override
    public String backendName() {
        return JavaBackendProvider.NAME;
    }

    @Override
    public DecoderSpec spec() {
        return spec;
    }

    @Override
    public synchronized void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
        int n = DecoderArguments.checkOpen(closed, spec, latent, out);
        if (n > 0) {
            engine.decode(latent.data(), n, latent.dim(2), latent.dim(3), out.data(), cancel);
        }
    }

    /** The engine, for the package's tests and benchmark. */
    DecoderEngine engine() {
        return engine;
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            engine.close();
        }
    }
}
