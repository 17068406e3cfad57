package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.DecoderFixtures;
import java.nio.file.Path;
import java.util.Map;

/** The java backend and decoders on a chosen path ({@code scalar} or {@code vector}), for the tests. */
final class JavaBackends {
    private JavaBackends() {}

    static Backend backend(ModelSpec spec, String path, int threads) throws BackendException {
        return new JavaBackendProvider().create(spec,
                new BackendOptions(threads, Map.of(JavaDitBackend.PATH_OPTION, path)));
    }

    static Decoder decoder(Path dir, String path, int threads) throws BackendException {
        return new JavaBackendProvider().createDecoder(DecoderFixtures.spec(dir),
                new BackendOptions(threads, Map.of(JavaDitBackend.PATH_OPTION, path)));
    }
}
