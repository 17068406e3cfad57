package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.ServiceLoader;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A weights file that does not match config.json fails at create() with the file and the tensor named. */
class WeightsValidationTest {
    @TempDir
    Path dir;

    private Map<String, SafetensorsWriter.F32> tensors;

    /** Copies pixel-tiny's config and tensors; each test breaks the copy and writes it to {@code dir}. */
    @BeforeEach
    void copyFixture() throws Exception {
        Path src = Fixtures.modelDir("pixel-tiny");
        Files.copy(src.resolve(ModelConfigs.CONFIG_FILE), dir.resolve(ModelConfigs.CONFIG_FILE));
        tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(src.resolve(JavaDitBackend.WEIGHTS_FILE))) {
            for (Safetensors.Entry e : st.entries().values()) {
                tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
            }
        }
    }

    private void create() throws Exception {
        SafetensorsWriter.write(weightsFile(), tensors);
        ModelSpec spec = ModelConfigs.load(dir);
        new JavaBackendProvider().create(spec, BackendOptions.ofThreads(1)).close();
    }

    private Path weightsFile() {
        return dir.resolve(JavaDitBackend.WEIGHTS_FILE);
    }

    @Test
    void unchangedCopyLoads() throws Exception {
        create();
    }

    @Test
    void wrongShapeNamesFileAndTensor() {
        String name = "blocks.1.attn.proj.weight";
        tensors.put(name, new SafetensorsWriter.F32(new long[] {64, 32}, new float[64 * 32]));
        assertThatThrownBy(this::create).isInstanceOf(BackendException.class)
                .hasMessageContaining(weightsFile().toString())
                .hasMessageContaining(name)
                .hasMessageContaining("[64, 32]")
                .hasMessageContaining("[64, 64]");
    }

    @Test
    void missingTensorNamesFileAndTensor() {
        String name = "blocks.0.mlp.fc2.bias";
        tensors.remove(name);
        assertThatThrownBy(this::create).isInstanceOf(BackendException.class)
                .hasMessageContaining(weightsFile().toString())
                .hasMessageContaining(name)
                .hasMessageContaining("missing");
    }

    @Test
    void tensorOfADeeperModelIsRejected() {
        String name = "blocks.2.attn.proj.bias";
        tensors.put(name, new SafetensorsWriter.F32(new long[] {64}, new float[64]));
        assertThatThrownBy(this::create).isInstanceOf(BackendException.class)
                .hasMessageContaining(weightsFile().toString())
                .hasMessageContaining(name)
                .hasMessageContaining("unexpected");
    }

    @Test
    void missingWeightsFileIsNamed() throws Exception {
        ModelSpec spec = ModelConfigs.load(dir);
        assertThatThrownBy(() -> new JavaBackendProvider().create(spec, BackendOptions.ofThreads(1)))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining(weightsFile().toString());
    }

    @Test
    void unknownPathFailsWithTheOptions() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> new JavaBackendProvider().create(spec,
                new BackendOptions(1, Map.of(JavaDitBackend.PATH_OPTION, "gpu"))))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("[gpu]")
                .hasMessageContaining("[vector, scalar]");
    }

    @Test
    void badMaxBatchFails() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> new JavaBackendProvider().create(spec,
                new BackendOptions(1, Map.of(JavaDitBackend.MAX_BATCH_OPTION, "0"))))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining(JavaDitBackend.MAX_BATCH_OPTION);
    }

    @Test
    void providerIsDiscoverable() {
        BackendProvider p = ServiceLoader.load(BackendProvider.class).stream()
                .map(ServiceLoader.Provider::get)
                .filter(b -> b.name().equals("java"))
                .findFirst().orElseThrow();
        assertThat(p).isInstanceOf(JavaBackendProvider.class);
        assertThat(p.requiredFiles()).containsExactly("weights.safetensors");
    }

    @Test
    void parameterCountFollowsTheSpec() throws Exception {
        // the numbers PyTorch reports for the same architectures (requires_grad parameters: all but pos_embed)
        assertThat(io.ditserve.backend.DitCheckpoint.parameterCount(
                ModelConfigs.load(Fixtures.repoRoot().resolve("models/fashion-dit")))).isEqualTo(7_375_376L);
        ModelSpec xl = new ModelSpec(dir, "xl", "", 32, 2, 4, 1152, 28, 16, 4.0, 1000, true, java.util.List.of(),
                ModelSpec.Space.LATENT, io.ditserve.backend.GuidanceMode.FIRST_THREE,
                new ModelSpec.Defaults(io.ditserve.backend.Sampler.DDPM, 250, 4.0, 0.0));
        assertThat(io.ditserve.backend.DitCheckpoint.parameterCount(xl)).isEqualTo(674_834_720L);
    }
}
