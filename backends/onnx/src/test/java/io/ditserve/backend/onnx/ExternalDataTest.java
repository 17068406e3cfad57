package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assertions.fail;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.Fixtures;
import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A model folder whose graph keeps its weights in {@code model.onnx.data}, the form tools/convert.py gives a graph
 * over 2 GB (DiT-XL/2), made here from the small latent-tiny fixture with {@code --onnx-external-data}:
 * converter → onnx backend → the PyTorch forward of the fixture. Then what a broken data file does at load.
 */
class ExternalDataTest {
    static final String COMMAND = "/usr/bin/python3 tools/convert.py tools/fixtures/latent-tiny/weights.safetensors "
            + "target/onnx-external-data/latent-tiny --num-heads 3 --onnx-external-data";
    private static final double TOLERANCE = 1e-4;

    @TempDir
    Path tmp;

    /** The converted folder; fails, naming the command that writes it (tools/test.sh runs it), when absent. */
    static Path converted() {
        Path dir = Fixtures.repoRoot().resolve("target/onnx-external-data/latent-tiny");
        for (String f : List.of("config.json", OnnxDitBackend.MODEL_FILE, OnnxDitBackend.DATA_FILE)) {
            if (!Files.isRegularFile(dir.resolve(f))) {
                fail("external-data fixture missing: " + dir.resolve(f) + " (tools/test.sh writes it; run `" + COMMAND
                        + "` in the repository root)");
            }
        }
        return dir;
    }

    private Path copy(Path from) throws IOException {
        Path to = tmp.resolve("latent-tiny");
        Files.createDirectories(to);
        try (Stream<Path> files = Files.list(from)) {
            for (Path f : files.toList()) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
        return to;
    }

    @Test
    void convertedFolderHoldsTheGraphAndOneDataFileOnly() throws Exception {
        try (Stream<Path> files = Files.list(converted())) {
            assertThat(files.map(p -> p.getFileName().toString()))
                    .containsExactlyInAnyOrder("config.json", "weights.safetensors", "model.onnx", "model.onnx.data");
        }
        ExternalData.Summary s = ExternalData.check(converted().resolve(OnnxDitBackend.MODEL_FILE));
        assertThat(s.bytesByFile()).containsOnlyKeys(OnnxDitBackend.DATA_FILE);
        // every weight matrix is outside the graph: the data file holds nearly all of weights.safetensors
        assertThat(s.bytesByFile().get(OnnxDitBackend.DATA_FILE))
                .isGreaterThan(Files.size(converted().resolve("weights.safetensors")) * 9 / 10);
        assertThat(Files.size(converted().resolve(OnnxDitBackend.MODEL_FILE)))
                .isLessThan(Files.size(converted().resolve(OnnxDitBackend.DATA_FILE)) / 10);
    }

    @Test
    void matchesPyTorchThroughTheOnnxBackend() throws Exception {
        ModelSpec spec = ModelConfigs.load(converted());
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        try (Backend b = OnnxBackends.onnx(spec)) {
            Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(c.out().maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, c.out())).isLessThan(TOLERANCE);
        }
    }

    @Test
    void missingDataFileFailsAtLoadNamingIt() throws Exception {
        Path dir = copy(converted());
        Files.delete(dir.resolve(OnnxDitBackend.DATA_FILE));
        ModelSpec spec = ModelConfigs.load(dir);
        assertThatThrownBy(() -> OnnxBackends.onnx(spec)).isInstanceOf(BackendException.class)
                .hasMessageStartingWith(dir.resolve(OnnxDitBackend.DATA_FILE) + ": missing")
                .hasMessageContaining("external-data file");
    }

    @Test
    void truncatedDataFileFailsAtLoadNamingIt() throws Exception {
        Path dir = copy(converted());
        Path data = dir.resolve(OnnxDitBackend.DATA_FILE);
        try (RandomAccessFile f = new RandomAccessFile(data.toFile(), "rw")) {
            f.setLength(f.length() - 4096);
        }
        ModelSpec spec = ModelConfigs.load(dir);
        assertThatThrownBy(() -> OnnxBackends.onnx(spec)).isInstanceOf(BackendException.class)
                .hasMessageStartingWith(data + ": truncated");
    }

    @Test
    void contractErrorsMentionTheDataFile() throws Exception {
        Path dir = copy(converted());
        Path config = dir.resolve("config.json");
        Files.writeString(config, Files.readString(config).replace("\"input_size\": 16", "\"input_size\": 8"));
        ModelSpec spec = ModelConfigs.load(dir);
        assertThatThrownBy(() -> OnnxBackends.onnx(spec)).isInstanceOf(BackendException.class)
                .hasMessageContaining(dir.resolve(OnnxDitBackend.MODEL_FILE) + " (its weights in model.onnx.data (")
                .hasMessageContaining("expected 8 rows (input_size)");
    }

    @Test
    void inlineGraphsHaveNoExternalData() throws Exception {
        assertThat(ExternalData.check(Fixtures.modelDir("latent-tiny").resolve(OnnxDitBackend.MODEL_FILE)).isEmpty())
                .isTrue();
    }
}
