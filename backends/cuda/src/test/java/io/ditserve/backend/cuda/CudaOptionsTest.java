package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import java.util.Map;
import org.junit.jupiter.api.Test;

class CudaOptionsTest {
    private static CudaOptions parse(Map<String, String> o) throws BackendException {
        return CudaOptions.parse(new BackendOptions(2, o));
    }

    @Test
    void defaults() throws Exception {
        assertThat(parse(Map.of())).isEqualTo(new CudaOptions(CudaOptions.Precision.FP32, 32, 0, null, false));
    }

    @Test
    void everyOption() throws Exception {
        CudaOptions o = parse(Map.of("cuda.precision", "TF32", "cuda.max_batch", "8", "cuda.device", "1",
                "cuda.lib_path", "/a:/b", "cuda.debug_sync", "true", "java.path", "scalar"));
        assertThat(o).isEqualTo(new CudaOptions(CudaOptions.Precision.TF32, 8, 1, "/a:/b", true));
        assertThat(o.precision().mathMode).isEqualTo(Cublas.CUBLAS_TF32_TENSOR_OP_MATH);
        assertThat(CudaOptions.Precision.FP32.mathMode).isEqualTo(Cublas.CUBLAS_DEFAULT_MATH);
    }

    @Test
    void badValuesFailWithTheKnownOptions() throws Exception {
        assertThatThrownBy(() -> parse(Map.of("cuda.precision", "fp8")))
                .isInstanceOf(BackendException.class).hasMessageContaining("[fp8]").hasMessageContaining("tf32");
        assertThat(parse(Map.of("cuda.precision", "bf16")).precision().computeType)
                .isEqualTo(Cublas.CUBLAS_COMPUTE_32F_FAST_16BF);
        assertThatThrownBy(() -> parse(Map.of("cuda.max_batch", "0")))
                .isInstanceOf(BackendException.class).hasMessageContaining("cuda.max_batch");
        assertThatThrownBy(() -> parse(Map.of("cuda.precison", "tf32")))
                .isInstanceOf(BackendException.class).hasMessageContaining("cuda.precison")
                .hasMessageContaining("cuda.precision");
        assertThatThrownBy(() -> parse(Map.of("cuda.debug_sync", "yes")))
                .isInstanceOf(BackendException.class).hasMessageContaining("cuda.debug_sync");
    }
}
