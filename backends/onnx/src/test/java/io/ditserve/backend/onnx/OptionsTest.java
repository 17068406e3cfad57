package io.ditserve.backend.onnx;

import io.ditserve.backend.ForwardBatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.testkit.Fixtures;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Options that cannot work fail at create(), with the allowed values where there is a list. */
class OptionsTest {

    /**
     * The build's onnxruntime jar is the CPU one, so CUDA is never available here: create() must say so rather than
     * run on the CPU. (On a machine with the onnxruntime_gpu jar and a device this would load; no test here needs one.)
     */
    @Test
    void cudaWithoutTheCudaProviderFailsLoudly() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1, Map.of(OnnxDitBackend.PROVIDER_OPTION, "cuda")))
                .isInstanceOf(BackendException.class)
                .hasMessageStartingWith("CUDA execution provider not available: ")
                .hasMessageContaining("CUDA");
    }

    @Test
    void unknownOptimizationLevelListsTheKnownOnes() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1, Map.of(OnnxDitBackend.OPTIMIZATION_OPTION, "bogus")))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown onnx.optimization [bogus] of the onnx backend, known options"
                        + " [all, extended, basic, none]");
    }

    @Test
    void unknownProviderListsTheKnownOnes() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1, Map.of(OnnxDitBackend.PROVIDER_OPTION, "tpu")))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown onnx.provider [tpu] of the onnx backend, known options [cpu, cuda]");
    }

    @Test
    void misspelledOptionIsNotIgnored() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1, Map.of("onnx.optimisation", "none")))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown option [onnx.optimisation] of the onnx backend, known options"
                        + " [onnx.provider, onnx.cuda.device, onnx.optimization, onnx.spinning, onnx.graph_cache,"
                        + " onnx.graph_cache_dir, onnx.graph_cache_max_mb]");
    }

    @Test
    void spinningIsABooleanAndBothValuesRun() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1, Map.of("onnx.spinning", "yes")))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown onnx.spinning [yes] of the onnx backend, known options [false, true]");
        for (String v : new String[] {"false", "true"}) {
            try (var b = OnnxBackends.onnx(spec, 2, Map.of("onnx.spinning", v))) {
                Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
                io.ditserve.backend.Tensor out = io.ditserve.backend.Tensor.zeros(c.out().shape());
                b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> false);
                assertThat(Fixtures.relativeError(out, c.out())).as("spinning " + v)
                        .isLessThan(1e-4);
            }
        }
    }


    @Test
    void invalidCudaDeviceIsRejected() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        assertThatThrownBy(() -> OnnxBackends.onnx(spec, 1,
                        Map.of(OnnxDitBackend.PROVIDER_OPTION, "cuda", OnnxDitBackend.CUDA_DEVICE_OPTION, "gpu0")))
                .isInstanceOf(BackendException.class)
                .hasMessage("onnx.cuda.device must be an integer >= 0, found 'gpu0'");
    }
}
