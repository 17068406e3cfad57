package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.testkit.DecoderConformance;
import java.util.Map;
import org.junit.jupiter.api.Nested;

/**
 * The shared decoder conformance suite on both java paths. The java decoders promise more than the shared bar: the
 * small fixtures within 1e-5 (measured max |diff| / max |ref|: vae-small vector 6.2e-7, scalar 1.0e-6, legacy the
 * same; taesd-small vector 9.8e-7, scalar 1.2e-6), the real shapes within 1e-4 (vae vector 1.7e-6, scalar 3.3e-6;
 * taesd vector 2.2e-6, scalar 2.8e-6), and batch invariance bit for bit.
 */
class JavaDecoderConformanceTest {

    private static Decoder decoder(DecoderSpec spec, String path) throws BackendException {
        return new JavaBackendProvider().createDecoder(spec,
                new BackendOptions(2, Map.of(JavaDitBackend.PATH_OPTION, path)));
    }

    @Nested
    class VectorPath extends DecoderConformance {
        @Override
        protected Decoder create(DecoderSpec spec) throws BackendException {
            return decoder(spec, "vector");
        }

        @Override
        protected double smallTolerance() {
            return 1e-5;
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }

    @Nested
    class ScalarPath extends DecoderConformance {
        @Override
        protected Decoder create(DecoderSpec spec) throws BackendException {
            return decoder(spec, "scalar");
        }

        @Override
        protected double smallTolerance() {
            return 1e-5;
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }
}
