package io.ditserve.backend.onnx;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import static io.ditserve.backend.onnx.OnnxModelWriter.FLOAT;
import static io.ditserve.backend.onnx.OnnxModelWriter.INT64;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.onnx.OnnxModelWriter.Value;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/** A model.onnx that is corrupt or does not match the contract or config.json fails at create(), naming the file. */
class ModelValidationTest {
    private static final Value X = new Value("x", FLOAT, "N", 1, 16, 16);
    private static final Value T = new Value("t", INT64, "N");
    private static final Value Y = new Value("y", INT64, "N");
    private static final Value OUT = new Value("out", FLOAT, "N", 1, 16, 16);

    @TempDir
    Path dir;

    /** pixel-tiny's config (1 channel, 16×16, no learned sigma) with the model file in the temporary folder. */
    private ModelSpec spec() throws BackendException {
        return OnnxBackends.with(Fixtures.spec("pixel-tiny"), dir, 1);
    }

    private Path write(List<Value> inputs, List<Value> outputs) throws Exception {
        return Files.write(dir.resolve(OnnxDitBackend.MODEL_FILE), OnnxModelWriter.identity(inputs, outputs));
    }

    /** The hand-written identity model passes the checks; growing and shrinking batches reuse the buffers right. */
    @Test
    void contractModelRunsOnGrowingAndShrinkingBatches() throws Exception {
        write(List.of(X, T, Y), List.of(OUT));
        try (Backend b = OnnxBackends.onnx(spec())) {
            for (int n : new int[] {2, 5, 1, 5}) {
                Fixtures.Case c = Fixtures.randomCase(b.model(), n, n);
                Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
                assertThat(out.data()).as("batch %d", n).containsExactly(c.x().data());
            }
        }
    }

    /**
     * A graph exported before step caching (x, t, y → out) still serves plain passes; it says it cannot cache steps,
     * and a pass that asks to is refused with what to do, not run wrong.
     */
    @Test
    void aGraphWithoutTheCacheInputsServesPlainPassesAndRefusesCaching() throws Exception {
        write(List.of(X, T, Y), List.of(OUT));
        try (Backend b = OnnxBackends.onnx(spec())) {
            assertThat(b.supportsStepCache()).isFalse();
            Fixtures.Case c = Fixtures.randomCase(b.model(), 2, 3);
            Tensor out = Tensor.zeros(c.out().shape());
            int len = StepCache.residualLength(b.model());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), new StepCache(new StepCache.Use[] {StepCache.Use.RUN, StepCache.Use.RUN}, new float[2][])), out, () -> false);
            assertThat(out.data()).containsExactly(c.x().data());
            StepCache reuse = new StepCache(new StepCache.Use[] {StepCache.Use.STORE, StepCache.Use.REUSE},
                    new float[][] {new float[len], new float[len]});
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), reuse), out, () -> false))
                    .isInstanceOf(BackendException.class)
                    .hasMessageContaining("has no step-cache inputs")
                    .hasMessageContaining("re-export it with tools/convert.py");
        }
    }

    static Stream<Arguments> contractViolations() {
        return Stream.of(
                Arguments.of("renamed input", List.of(new Value("image", FLOAT, "N", 1, 16, 16), T, Y), List.of(OUT),
                        "expected inputs [x, t, y], found [image, t, y]"),
                Arguments.of("x of rank 3", List.of(new Value("x", FLOAT, "N", 16, 16), T, Y),
                        List.of(new Value("out", FLOAT, "N", 16, 16)),
                        "input 'x': expected rank 4 [N, C_in, H, W], found rank 3 [N, 16, 16]"),
                // t is float32 (the float-time contract) or int64 (graphs exported before it); nothing else
                Arguments.of("double timesteps", List.of(X, new Value("t", OnnxModelWriter.DOUBLE, "N"), Y),
                        List.of(OUT), "input 't': expected INT64 elements, found DOUBLE"),
                Arguments.of("fixed batch", List.of(new Value("x", FLOAT, 2, 1, 16, 16), T, Y), List.of(OUT),
                        "input 'x': expected a dynamic batch dimension N, found the fixed size 2"),
                Arguments.of("wrong image size", List.of(new Value("x", FLOAT, "N", 1, 32, 32), T, Y),
                        List.of(new Value("out", FLOAT, "N", 1, 32, 32)),
                        "input 'x': expected 16 rows (input_size) as config.json says, found 32"),
                Arguments.of("renamed output", List.of(X, T, Y), List.of(new Value("eps", FLOAT, "N", 1, 16, 16)),
                        "expected one output [out], found [eps]"));
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("contractViolations")
    void contractViolationFailsAtCreate(String what, List<Value> inputs, List<Value> outputs, String expected)
            throws Exception {
        Path file = write(inputs, outputs);
        assertThatThrownBy(() -> OnnxBackends.onnx(spec()))
                .isInstanceOf(BackendException.class)
                .hasMessageStartingWith(file + ": ")
                .hasMessageContaining(expected);
    }

    /** A model that outputs twice the input channels, as if learn_sigma were on, for a config.json with it off. */
    @Test
    void outputChannelsThatDisagreeWithConfigFailAtCreate() throws Exception {
        Path file = Files.write(dir.resolve(OnnxDitBackend.MODEL_FILE), OnnxModelWriter.doubledChannels(
                List.of(X, T, Y), List.of(new Value("out", FLOAT, "N", 2, 16, 16))));
        assertThatThrownBy(() -> OnnxBackends.onnx(spec()))
                .isInstanceOf(BackendException.class)
                .hasMessage(file + ": output 'out': expected 1 channels (in_channels, doubled with learn_sigma) as"
                        + " config.json says, found 2 in [N, 2, 16, 16]");
    }

    /** Dims the model leaves symbolic pass at load; a wrong output shape then fails the run, naming the file. */
    @Test
    void symbolicOutputShapeIsCheckedWhenItRuns() throws Exception {
        Path file = Files.write(dir.resolve(OnnxDitBackend.MODEL_FILE), OnnxModelWriter.doubledChannels(
                List.of(new Value("x", FLOAT, "N", "C", 16, 16), T, Y),
                List.of(new Value("out", FLOAT, "N", "C2", 16, 16))));
        try (Backend b = OnnxBackends.onnx(spec())) {
            Fixtures.Case c = Fixtures.randomCase(b.model(), 2, 5);
            assertThatThrownBy(() -> Fixtures.run(b, c.x(), c.t(), c.y()))
                    .isInstanceOf(BackendException.class)
                    .hasMessageStartingWith(file + ": ONNX Runtime run failed: ")
                    .hasMessageContaining("shape verification failed");
        }
    }

    /** The real exported pixel-tiny model (1 channel) against a config.json that says 4 channels. */
    @Test
    void modelThatDisagreesWithConfigFailsAtCreate() throws Exception {
        ModelSpec real = Fixtures.spec("pixel-tiny");
        ModelSpec fourChannels = OnnxBackends.with(real, real.directory(), 4);
        assertThatThrownBy(() -> OnnxBackends.onnx(fourChannels))
                .isInstanceOf(BackendException.class)
                .hasMessageStartingWith(real.file(OnnxDitBackend.MODEL_FILE) + ": input 'x': ")
                .hasMessageContaining("expected 4 channels (in_channels)")
                .hasMessageContaining("found 1 in [N, 1, 16, 16]");
    }

    @Test
    void truncatedModelFailsAtCreateWithOrtReason() throws Exception {
        byte[] model = Files.readAllBytes(Fixtures.modelDir("pixel-tiny").resolve(OnnxDitBackend.MODEL_FILE));
        Path file = Files.write(dir.resolve(OnnxDitBackend.MODEL_FILE), Arrays.copyOf(model, 1000));
        assertThatThrownBy(() -> OnnxBackends.onnx(spec()))
                .isInstanceOf(BackendException.class)
                .hasMessageStartingWith(file + ": ONNX Runtime cannot load it: ")
                .hasMessageContaining("Protobuf parsing failed");
    }

    @Test
    void missingModelFailsAtCreate() {
        assertThatThrownBy(() -> OnnxBackends.onnx(spec()))
                .isInstanceOf(BackendException.class)
                .hasMessage(dir.resolve(OnnxDitBackend.MODEL_FILE) + ": missing (the onnx backend needs the exported"
                        + " model)");
    }
}
