package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.MmditConformance;
import io.ditserve.backend.testkit.TextFixtures;
import io.ditserve.backend.testkit.TextFixtures.MmditCase;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SD3's MMDiT on the onnx backend, its graph built at load from the diffusers folder, in the shared suite
 * ({@link MmditConformance}: parity with tools/sd3/mmdit.py on the fixtures of tools/make_mmdit_fixtures.py, the
 * tolerance of the java backend's MmditConformanceTest; the java backend's output on random batches; batches, buffers,
 * cancellation before the run, arguments, close); and here the checkpoint's validation before any graph is built and
 * the 16-bit shards read in place.
 */
class OnnxMmditConformanceTest extends MmditConformance {
    @Override
    protected Backend create(ModelSpec spec, int threads) throws BackendException {
        return OnnxBackends.onnx(spec, threads, Map.of());
    }

    /** A Cancellation terminates the run (OnnxRunner): it is checked before the run, not at fixed points in it. */
    @Override
    protected int polls(int layers) {
        return -1;
    }

    /** The checkpoint is validated as on the java backend before any graph is built: a missing tensor is named. */
    @Test
    void aMissingShardIsNamed(@TempDir Path dir) throws Exception {
        Path src = TextFixtures.dir("mmdit-x-tiny");
        for (Path f : Files.list(src).toList()) {
            if (!f.getFileName().toString().endsWith("00002-of-00003.safetensors")) {
                Files.copy(f, dir.resolve(f.getFileName()));
            }
        }
        assertThatThrownBy(() -> create(TextFixtures.mmditSpec(dir), 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("diffusion_pytorch_model-00002-of-00003.safetensors");
    }

    /**
     * The BF16 shards are read in place as BF16 (the graph's initializers are external data into them with their
     * stored type, cast in the graph) and give the values the F32 reference was computed from.
     */
    @Test
    void sixteenBitShardsLoadInPlace() throws Exception {
        Map<String, MmditCheckpoint.Located> located = MmditCheckpoint.locate(TextFixtures.dir("mmdit-x-tiny"));
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo("BF16"));
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-x-tiny");
        try (Backend backend = create(spec, 1)) {
            assertThat(backend).isInstanceOf(OnnxMmditBackend.class);
            OnnxMmditBackend b = (OnnxMmditBackend) backend;
            assertThat(b.externalData().tensors()).isEqualTo(located.size());
            assertThat(b.externalData().bytesByFile().keySet()).containsExactlyInAnyOrder(
                    "diffusion_pytorch_model-00001-of-00003.safetensors",
                    "diffusion_pytorch_model-00002-of-00003.safetensors",
                    "diffusion_pytorch_model-00003-of-00003.safetensors");
            long stored = located.values().stream().mapToLong(t -> t.entry().byteLength()).sum();
            long elements = located.values().stream().mapToLong(t -> t.entry().numel()).sum();
            assertThat(stored).as("2 bytes per weight").isEqualTo(2 * elements);
            assertThat(b.externalData().bytesByFile().values().stream().mapToLong(Long::longValue).sum())
                    .isEqualTo(stored);
            MmditCase c = TextFixtures.mmditCase("mmdit-x-tiny");
            assertThat(Fixtures.relativeError(TextFixtures.run(b, c), c.out())).isLessThan(tolerance());
        }
        assertThat(Arrays.stream(spec.directory().toFile().list()).filter(f -> f.endsWith(".onnx"))).isEmpty();
    }

    /**
     * With onnx.optimization=none ONNX Runtime folds nothing: the BF16 initializers stay BF16 in its memory and the
     * graph's Casts run in every pass (with any optimisation it folds them into float32 constants at load;
     * docs/TEXT_MODELS.md). The function is the same.
     */
    @Test
    void unoptimisedTheCastsRunInEveryPass() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-x-tiny");
        MmditCase c = TextFixtures.mmditCase("mmdit-x-tiny");
        try (Backend b = OnnxBackends.onnx(spec, 1, Map.of(OnnxRunner.OPTIMIZATION_OPTION, "none"))) {
            assertThat(Fixtures.relativeError(TextFixtures.run(b, c), c.out())).isLessThan(tolerance());
        }
    }
}
