package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.ditserve.backend.BackendException;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * The cuBLAS functions the backend uses (signatures from cublas_api.h, exported with the {@code _v2} names that
 * cublas_v2.h maps to), each through {@link NativeCalls}, so every status is checked.
 *
 * <p>Device matrix pointers are {@link DevicePtr}s, passed as their {@code long} address. alpha and beta are host
 * pointers (the default CUBLAS_POINTER_MODE_HOST).
 */
final class Cublas {
    /** cublasMath_t. */
    static final int CUBLAS_DEFAULT_MATH = 0;
    static final int CUBLAS_TF32_TENSOR_OP_MATH = 3;
    /** cublasComputeType_t: float32 in and out, tensor cores on inputs rounded to bfloat16. */
    static final int CUBLAS_COMPUTE_32F_FAST_16BF = 75;
    /** cudaDataType_t of float32 matrices. */
    static final int CUDA_R_32F = 0;
    /** cublasGemmAlgo_t: let cuBLAS choose. */
    static final int CUBLAS_GEMM_DEFAULT = -1;

    private final NativeLibrary lib;
    private final NativeCalls calls = new NativeCalls(Cublas::statusName);
    /** Set by {@link #useComputeType}: the products then go through cublasGemmEx with this compute type. */
    private int computeType = -1;
    private MethodHandle cublasGemmEx;
    private MethodHandle cublasGemmStridedBatchedEx;

    private final MethodHandle cublasCreate;
    private final MethodHandle cublasDestroy;
    private final MethodHandle cublasSetStream;
    private final MethodHandle cublasSetMathMode;
    private final MethodHandle cublasGetVersion;
    private final MethodHandle cublasSgemm;
    private final MethodHandle cublasSgemmStridedBatched;

    Cublas(NativeLibrary lib) throws BackendException {
        this.lib = lib;
        cublasCreate = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS), "cublasCreate_v2");
        cublasDestroy = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS), "cublasDestroy_v2");
        cublasSetStream = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cublasSetStream_v2");
        cublasSetMathMode = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cublasSetMathMode");
        cublasGetVersion = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cublasGetVersion_v2");
        // handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc
        cublasSgemm = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT),
                "cublasSgemm_v2");
        // handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batch
        cublasSgemmStridedBatched = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT, JAVA_LONG,
                ADDRESS, JAVA_LONG, JAVA_INT, JAVA_LONG, JAVA_INT), "cublasSgemmStridedBatched");
    }

    /**
     * Routes every product through {@code cublasGemmEx} / {@code cublasGemmStridedBatchedEx} with float32 matrices
     * and this compute type (e.g. {@link #CUBLAS_COMPUTE_32F_FAST_16BF}). The functions are looked up only here, so
     * a cuBLAS without them still serves fp32 and tf32.
     */
    void useComputeType(int type) throws BackendException {
        // handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C, Ctype, ldc, compute, algo
        cublasGemmEx = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT), "cublasGemmEx");
        // ... the same with strideA after lda, strideB after ldb, strideC after ldc, then batchCount
        cublasGemmStridedBatchedEx = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_LONG, JAVA_INT,
                JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_LONG, JAVA_INT, JAVA_INT, JAVA_INT),
                "cublasGemmStridedBatchedEx");
        computeType = type;
    }

    /** The name of a cublasStatus_t, with a hint for the statuses that have a usual cause. */
    static String statusName(int status) {
        return switch (status) {
            case 0 -> "CUBLAS_STATUS_SUCCESS";
            case 1 -> "CUBLAS_STATUS_NOT_INITIALIZED (no usable CUDA context or driver)";
            case 3 -> "CUBLAS_STATUS_ALLOC_FAILED (out of device or host memory)";
            case 7 -> "CUBLAS_STATUS_INVALID_VALUE (an invalid size, leading dimension or enum value)";
            case 8 -> "CUBLAS_STATUS_ARCH_MISMATCH (the GPU lacks a feature this call needs)";
            case 11 -> "CUBLAS_STATUS_MAPPING_ERROR";
            case 13 -> "CUBLAS_STATUS_EXECUTION_FAILED (a kernel failed to launch or run)";
            case 14 -> "CUBLAS_STATUS_INTERNAL_ERROR";
            case 15 -> "CUBLAS_STATUS_NOT_SUPPORTED";
            case 16 -> "CUBLAS_STATUS_LICENSE_ERROR";
            default -> "cublasStatus_t " + status;
        };
    }

    /** Creates a handle; needs the CUDA context current on this thread. */
    MemorySegment create() throws BackendException {
        return calls.outAddress("cublasCreate_v2", (v, a) -> (int) cublasCreate.invokeExact(v));
    }

    void destroy(MemorySegment handle) throws BackendException {
        calls.call("cublasDestroy_v2", () -> (int) cublasDestroy.invokeExact(handle));
    }

    void setStream(MemorySegment handle, MemorySegment stream) throws BackendException {
        calls.call("cublasSetStream_v2", () -> (int) cublasSetStream.invokeExact(handle, stream));
    }

    void setMathMode(MemorySegment handle, int mode) throws BackendException {
        calls.call("cublasSetMathMode(" + mode + ")", () -> (int) cublasSetMathMode.invokeExact(handle, mode));
    }

    /** The library version, e.g. 130100 for 13.1.0. */
    int version(MemorySegment handle) throws BackendException {
        return calls.outInt("cublasGetVersion_v2", (v, a) -> (int) cublasGetVersion.invokeExact(handle, v));
    }

    /**
     * Queues {@code C = alpha·op(A)·op(B) + beta·C} as {@code g} describes: {@code cublasSgemm_v2} for one product,
     * {@code cublasSgemmStridedBatched} for several; after {@link #useComputeType}, {@code cublasGemmEx} and
     * {@code cublasGemmStridedBatchedEx}. alpha and beta point to host floats.
     */
    void gemm(MemorySegment handle, GemmCall g, MemorySegment alpha, DevicePtr a, DevicePtr b, MemorySegment beta,
            DevicePtr c) throws BackendException {
        long pa = a.address();
        long pb = b.address();
        long pc = c.address();
        int ct = computeType;
        int r;
        String function;
        if (ct >= 0 && g.batched()) {
            function = "cublasGemmStridedBatchedEx";
            r = NativeCalls.invoke(function, () -> (int) cublasGemmStridedBatchedEx.invokeExact(handle, g.opA(),
                    g.opB(), g.m(), g.n(), g.k(), alpha, pa, CUDA_R_32F, g.lda(), g.strideA(), pb, CUDA_R_32F,
                    g.ldb(), g.strideB(), beta, pc, CUDA_R_32F, g.ldc(), g.strideC(), g.batch(), ct,
                    CUBLAS_GEMM_DEFAULT));
        } else if (ct >= 0) {
            function = "cublasGemmEx";
            r = NativeCalls.invoke(function, () -> (int) cublasGemmEx.invokeExact(handle, g.opA(), g.opB(), g.m(),
                    g.n(), g.k(), alpha, pa, CUDA_R_32F, g.lda(), pb, CUDA_R_32F, g.ldb(), beta, pc, CUDA_R_32F,
                    g.ldc(), ct, CUBLAS_GEMM_DEFAULT));
        } else if (g.batched()) {
            function = "cublasSgemmStridedBatched";
            r = NativeCalls.invoke(function, () -> (int) cublasSgemmStridedBatched.invokeExact(handle, g.opA(),
                    g.opB(), g.m(), g.n(), g.k(), alpha, pa, g.lda(), g.strideA(), pb, g.ldb(), g.strideB(), beta,
                    pc, g.ldc(), g.strideC(), g.batch()));
        } else {
            function = "cublasSgemm_v2";
            r = NativeCalls.invoke(function, () -> (int) cublasSgemm.invokeExact(handle, g.opA(), g.opB(), g.m(),
                    g.n(), g.k(), alpha, pa, g.lda(), pb, g.ldb(), beta, pc, g.ldc()));
        }
        if (r != 0) {
            // the message is built only on failure: this runs for every product of a pass
            calls.check(r, function + "(" + g + (ct >= 0 ? ", compute type " + ct : "") + ")");
        }
    }
}
