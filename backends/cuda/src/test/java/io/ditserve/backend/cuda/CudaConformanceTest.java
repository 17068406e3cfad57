package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.BackendConformance;
import io.ditserve.backend.testkit.DecoderConformance;
import org.junit.jupiter.api.Nested;

/**
 * The shared conformance suites on the cuda backend's host code and GPU programs ({@link CudaDitBackend},
 * {@link CudaDecoder}, {@link DitForward}, {@link DecoderProgram}) run on {@link EmulatedDevice}, the Java mirror
 * of the kernels and of cuBLAS: parity 1e-4 with PyTorch, step caching, cancellation, argument checks, lifecycle.
 * The emulation computes each sample's rows the same wherever the sample is in the batch, so batch invariance holds
 * bit for bit. {@link FakeCudaTest} runs the same suites through the native bindings and the real kernel source.
 */
class CudaConformanceTest {

    @Nested
    class EmulatedBackend extends BackendConformance {
        /** Buffers for 4 samples: the fixture batch fits, the batches of 5 and 7 make them grow. */
        @Override
        protected Backend create(ModelSpec spec, int threads) throws BackendException {
            return Emulation.backend(spec, 4);
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }

    @Nested
    class EmulatedDecoders extends DecoderConformance {
        @Override
        protected Decoder create(DecoderSpec spec) throws BackendException {
            return Emulation.decoder(spec, DecoderBuffers.DEFAULT_BUDGETS);
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }
}
