package io.ditserve.backend.onnx;

import io.ditserve.backend.ForwardBatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.BackendConformance;
import io.ditserve.backend.testkit.Fixtures;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The shared backend conformance suite on the onnx backend (parity 1e-4 on every fixture model), and what is the onnx
 * backend's own: agreement with the java backend, every optimization level, and a cancellation that reaches the
 * running session through RunOptions.setTerminate.
 */
class OnnxBackendConformanceTest extends BackendConformance {
    @Override
    protected Backend create(ModelSpec spec, int threads) throws BackendException {
        return Fixtures.provider(OnnxBackendProvider.NAME).create(spec, BackendOptions.ofThreads(threads));
    }

    /** The cancellation is seen by a watcher thread while the run is under way: a batch that runs a while. */
    @Override
    protected int cancellationBatch() {
        return 256;
    }

    @ParameterizedTest(name = "{0}")
    @FieldSource("io.ditserve.backend.testkit.Fixtures#MODELS")
    void matchesJavaBackend(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.randomCase(spec, 6, 7);
        try (Backend onnx = OnnxBackends.onnx(spec);
                Backend java = Fixtures.provider("java").create(spec, BackendOptions.ofThreads(2))) {
            Tensor expected = Fixtures.run(java, c.x(), c.t(), c.y());
            Tensor out = Fixtures.run(onnx, c.x(), c.t(), c.y());
            assertThat(expected.maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, expected)).isLessThan(tolerance());
        }
    }

    /**
     * A graph exported before float times (pixel-tiny's model.onnx takes int64 t) serves integral times as before and
     * refuses a fractional one naming the fix; a float-time graph (repa-tiny's) takes any time in range.
     */
    @Test
    void integerTimestepGraphsTakeIntegralTimesOnly() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
        try (Backend b = OnnxBackends.onnx(spec)) {
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out())).isLessThan(tolerance());
            float[] t = c.t().clone();
            t[1] = 136.5f;
            assertThatThrownBy(() -> Fixtures.run(b, c.x(), t, c.y()))
                    .isInstanceOf(io.ditserve.backend.BackendException.class)
                    .hasMessageContaining("takes integer timesteps").hasMessageContaining("time[1] = 136.5")
                    .hasMessageContaining("re-export it with tools/convert.py");
        }
        ModelSpec repa = Fixtures.spec("repa-tiny");
        Fixtures.Case r = Fixtures.forwardCase("repa-tiny");
        try (Backend b = OnnxBackends.onnx(repa)) {
            assertThat(Fixtures.relativeError(Fixtures.run(b, r.x(), r.t(), r.y()), r.out())).isLessThan(tolerance());
        }
    }

    /** The optimization level changes the graph ONNX Runtime runs, never the result. */
    @ParameterizedTest(name = "onnx.optimization={0}")
    @ValueSource(strings = {"all", "extended", "basic", "none"})
    void everyOptimizationLevelMatchesPyTorch(String level) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        try (Backend b = OnnxBackends.onnx(spec, 1, Map.of(OnnxDitBackend.OPTIMIZATION_OPTION, level))) {
            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), c.out()))
                    .isLessThan(tolerance());
        }
    }

    /**
     * A batch of 256 of the bundled model takes a few hundred milliseconds; a cancellation that fires after 20 ms
     * must stop it through RunOptions.setTerminate long before it would have finished, and the next forward works.
     */
    @Test
    void cancellationStopsARunningForward() throws Exception {
        ModelSpec spec = Fixtures.spec("fashion-dit");
        Fixtures.Case c = Fixtures.randomCase(spec, 256, 1);
        try (Backend b = OnnxBackends.onnx(spec)) {
            Tensor expected = Fixtures.run(b, c.x(), c.t(), c.y()); // warm-up: buffers, ORT's first-run allocations
            long start = System.nanoTime();
            Fixtures.run(b, c.x(), c.t(), c.y());
            double fullMs = (System.nanoTime() - start) / 1e6;
            assertThat(fullMs).as("an uncancelled run must be long enough to interrupt").isGreaterThan(100);

            start = System.nanoTime();
            long deadline = start + 20_000_000L;
            Cancellation after20ms = () -> System.nanoTime() - deadline > 0;
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, after20ms))
                    .isInstanceOf(BackendException.Cancelled.class);
            double cancelledMs = (System.nanoTime() - start) / 1e6;
            System.out.printf("batch 256: full run %.1f ms, cancelled after 20 ms returned at %.1f ms%n",
                    fullMs, cancelledMs);
            assertThat(cancelledMs).isLessThan(fullMs / 2);

            assertThat(Fixtures.relativeError(Fixtures.run(b, c.x(), c.t(), c.y()), expected)).isLessThan(1e-6);
        }
    }
}
