package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The exported model against the PyTorch forward (tools/dit/model.py is the ground truth) and against the pure-Java
 * backend, the same conformance bar every backend passes.
 */
class ForwardConformanceTest {
    /** Tolerance: max |error| over max |reference output|. */
    private static final double TOLERANCE = 1e-4;

    @ParameterizedTest(name = "{0}")
    @FieldSource("io.ditserve.backend.onnx.Fixtures#MODELS")
    void matchesPyTorch(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = Fixtures.onnx(spec)) {
            Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(out.shape()).containsExactly(c.out().shape());
            assertThat(c.out().maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, c.out())).isLessThan(TOLERANCE);
        }
    }

    @ParameterizedTest(name = "{0}")
    @FieldSource("io.ditserve.backend.onnx.Fixtures#MODELS")
    void matchesJavaBackend(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.randomCase(spec, 6, 7);
        try (Backend onnx = Fixtures.onnx(spec);
                Backend java = Fixtures.provider("java").create(spec, BackendOptions.ofThreads(2))) {
            Tensor expected = Fixtures.run(java, c.x(), c.t(), c.y());
            Tensor out = Fixtures.run(onnx, c.x(), c.t(), c.y());
            assertThat(expected.maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, expected)).isLessThan(TOLERANCE);
        }
    }

    /** The optimization level changes the graph ONNX Runtime runs, never the result. */
    @ParameterizedTest(name = "onnx.optimization={0}")
    @ValueSource(strings = {"all", "extended", "basic", "none"})
    void everyOptimizationLevelMatchesPyTorch(String level) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        try (Backend b = Fixtures.onnx(spec, 1, Map.of(OnnxDitBackend.OPTIMIZATION_OPTION, level))) {
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(TOLERANCE);
        }
    }
}
