package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.MmditConformance;
import io.ditserve.backend.testkit.TextFixtures;
import io.ditserve.backend.testkit.TextFixtures.MmditCase;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;

/**
 * SD3's MMDiT on the cuda backend ({@link CudaMmditBackend}, {@link CudaMmditForward}: host code, buffers, launch
 * sequence) run on {@link EmulatedDevice}, the Java mirror of the kernels and of cuBLAS, in the shared suite
 * ({@link MmditConformance}: parity with tools/sd3/mmdit.py on the fixtures of tools/make_mmdit_fixtures.py with the
 * java backend's measure and tolerance, the java backend's output on random batches of several prompts, each sample
 * alone with the same bytes, buffer growth, cancellation, arguments, close); and here attention in chunks (the
 * provider's dispatch to it: {@link CudaBackendProviderTest}). {@link FakeCudaTest} runs the same pass through the
 * native bindings on the real kernel source.
 */
class CudaMmditConformanceTest extends MmditConformance {
    static CudaMmditBackend emulated(ModelSpec spec) throws BackendException {
        return Emulation.mmdit(spec, ActivationLayout.SCORES_BUDGET);
    }

    /** The emulation has no threads of its own: {@code threads} is not used. */
    @Override
    protected Backend create(ModelSpec spec, int threads) throws BackendException {
        return emulated(spec);
    }

    @Override
    protected double batchTolerance() {
        return 0;
    }

    /** Attention in chunks of one sample (a scores budget of one float) gives the bytes of attention in one go. */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#MMDITS")
    void attentionInChunksGivesTheSameBytes(String name) throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec(name);
        MmditCase c = TextFixtures.randomCase(spec, 5, 11, 5);
        try (Backend b = emulated(spec); Backend chunked = Emulation.mmdit(spec, 1)) {
            assertThat(TextFixtures.run(chunked, c).data()).as("attention one sample at a time")
                    .isEqualTo(TextFixtures.run(b, c).data());
        }
    }
}
