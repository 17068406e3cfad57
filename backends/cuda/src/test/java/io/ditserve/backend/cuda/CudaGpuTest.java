package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The cuda backend on a real GPU (the checks of {@link CudaParityCheck}); every test is skipped, with the reason,
 * where the backend cannot be created.
 */
class CudaGpuTest {
    private static final CudaParityCheck CHECK = new CudaParityCheck(Map.of());
    private static String unavailable;

    @BeforeAll
    static void probe() {
        try (Backend b = CHECK.cuda("pixel-tiny", Map.of())) {
            System.out.println("GPU tests on " + ((CudaDitBackend) b).deviceDescription());
        } catch (BackendException e) {
            unavailable = e.getMessage();
        }
    }

    @BeforeEach
    void requireGpu() {
        assumeTrue(unavailable == null, () -> "no usable CUDA device, GPU tests skipped: " + unavailable);
    }

    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({
        "pixel-tiny, fp32", "latent-tiny, fp32", "fashion-dit, fp32",
        "pixel-tiny, tf32", "latent-tiny, tf32", "fashion-dit, tf32",
        "pixel-tiny, bf16", "latent-tiny, bf16", "fashion-dit, bf16"
    })
    void matchesPyTorch(String model, String precision) throws Exception {
        assertThat(CHECK.fixtureError(model, Map.of(CudaOptions.PRECISION, precision)))
                .isLessThan(CudaParityCheck.tolerance(precision));
    }

    @ParameterizedTest(name = "{0}")
    @CsvSource({"pixel-tiny", "latent-tiny", "fashion-dit"})
    void stepCacheMatchesPyTorch(String model) throws Exception {
        assertThat(CHECK.cacheError(model, Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    /** SD3's MMDiT and text encoders ({@link CudaParityCheck#textChecks}). */
    @Test
    void sd3ChecksPass() {
        List<CudaParityCheck.Outcome> outcomes = CudaParityCheck.run(CHECK.textChecks());
        assertThat(outcomes).allSatisfy(o -> assertThat(o.passed()).as(o.line()).isTrue());
    }

    @Test
    void matchesTheJavaBackendOnAMixedBatch() throws Exception {
        assertThat(CHECK.javaBackendError("latent-tiny", Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void perKernelSynchronisationGivesTheSameResult() throws Exception {
        assertThat(CHECK.fixtureError("pixel-tiny", Map.of(CudaOptions.DEBUG_SYNC, "true")))
                .isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void buffersGrowForALargerBatch() throws Exception {
        assertThat(CHECK.fixtureError("fashion-dit", Map.of(CudaOptions.MAX_BATCH, "1")))
                .isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void cancellationStopsBetweenBlocks() throws Exception {
        assertThat(CHECK.cancellationProblem("latent-tiny")).isNull();
    }

    @Test
    void closeIsIdempotentAndForwardAfterCloseFails() throws Exception {
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        Backend b = CHECK.cuda("pixel-tiny", Map.of());
        assertThat(b.name()).isEqualTo("cuda");
        b.close();
        b.close();
        assertThatThrownBy(() -> CudaParityCheck.run(b, c.x(), c.t(), c.y())).isInstanceOf(IllegalStateException.class);
    }

    // ---- decoders (the real-shape ones need `/usr/bin/python3 tools/make_decoder_fixtures.py --real
    // target/decoder-fixtures`; tools/gpu/run_cuda_checks.sh --decoders also checks 256 and 512 px images)

    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({
        "vae-small, fp32", "vae-small-legacy, fp32", "taesd-small, fp32", "vae, fp32", "taesd, fp32",
        "vae-small, tf32", "taesd-small, tf32", "vae, tf32", "taesd, tf32"
    })
    void decodersMatchPyTorch(String fixture, String precision) throws Exception {
        assertThat(CHECK.decoderError(fixture, Map.of(CudaOptions.PRECISION, precision)))
                .isLessThan(CudaParityCheck.decoderTolerance(precision));
    }

    @Test
    void decoderInRunsTilesAndChunks() throws Exception {
        Path dir = DecoderFixtures.small("vae-small");
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        DecoderBuffers.Budgets small = CudaParityCheck.smallBudgets(DecoderFixtures.spec(dir),
                (long) c.latent().dim(2) * c.latent().dim(3));
        assertThat(CHECK.decoderError("vae-small", Map.of(), small)).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void decoderBuffersGrow() throws Exception {
        assertThat(CHECK.decoderGrowthError("vae-small")).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void decoderCancellationStopsBetweenLayers() throws Exception {
        assertThat(CHECK.decoderCancellationProblem("taesd-small")).isNull();
    }
}
