package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * The cuda backend's options ({@code cuda.*} keys of {@link BackendOptions}), validated:
 *
 * <ul>
 *   <li>{@code cuda.precision}: {@code fp32} (default: float32 matrix products, CUBLAS_DEFAULT_MATH), {@code tf32}
 *       (tensor cores with TF32 inputs, CUBLAS_TF32_TENSOR_OP_MATH; about 1e-3 relative error) or {@code bf16}
 *       (cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_16BF: float32 matrices in memory, tensor cores allowed to round
 *       inputs to bfloat16 — or to TF32, which cuBLAS 13.1 chose on an H200: same error and speed as tf32; a path
 *       with bfloat16 weights and activations in memory is not written yet);
 *   <li>{@code cuda.max_batch}: the batch the activation buffers are sized for at load (default 32); a larger batch
 *       grows them once;
 *   <li>{@code cuda.device}: the device ordinal (default 0);
 *   <li>{@code cuda.lib_path}: colon-separated directories searched first for libcuda, cuBLAS and NVRTC;
 *   <li>{@code cuda.debug_sync}: {@code true} synchronises after every kernel and matrix product so that a failing
 *       one is named in the error (slow; for diagnosis).
 * </ul>
 *
 * An unknown {@code cuda.*} key fails with the list of known ones.
 */
record CudaOptions(Precision precision, int maxBatch, int device, String libPath, boolean debugSync) {
    static final String PRECISION = "cuda.precision";
    static final String MAX_BATCH = "cuda.max_batch";
    static final String DEVICE = "cuda.device";
    static final String DEBUG_SYNC = "cuda.debug_sync";
    static final List<String> KEYS = List.of(PRECISION, MAX_BATCH, DEVICE, CudaLibraries.LIB_PATH_OPTION, DEBUG_SYNC);

    /** Matrix-product precision: the cuBLAS math mode, and for bf16 the cublasGemmEx compute type. */
    enum Precision {
        FP32(Cublas.CUBLAS_DEFAULT_MATH, -1),
        TF32(Cublas.CUBLAS_TF32_TENSOR_OP_MATH, -1),
        BF16(Cublas.CUBLAS_DEFAULT_MATH, Cublas.CUBLAS_COMPUTE_32F_FAST_16BF);

        final int mathMode;
        /** A cublasComputeType_t for cublasGemmEx, or −1 for the plain float32 GEMM calls. */
        final int computeType;

        Precision(int mathMode, int computeType) {
            this.mathMode = mathMode;
            this.computeType = computeType;
        }

        String optionValue() {
            return name().toLowerCase(Locale.ROOT);
        }
    }

    static CudaOptions parse(BackendOptions options) throws BackendException {
        options.checkKeys("cuda", KEYS);
        String p = options.choice("cuda", PRECISION, knownPrecisions());
        Precision precision = Precision.valueOf(p.toUpperCase(Locale.ROOT));
        return new CudaOptions(precision, options.intAtLeast(MAX_BATCH, 32, 1), options.intAtLeast(DEVICE, 0, 0),
                options.options().get(CudaLibraries.LIB_PATH_OPTION), options.bool(DEBUG_SYNC, false));
    }

    private static List<String> knownPrecisions() {
        List<String> out = new ArrayList<>();
        for (Precision v : Precision.values()) {
            out.add(v.optionValue());
        }
        return out;
    }

}
