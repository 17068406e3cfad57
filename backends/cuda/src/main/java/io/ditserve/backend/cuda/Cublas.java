package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.ditserve.backend.BackendException;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;

/**
 * The cuBLAS functions the backend uses (signatures from cublas_api.h, exported with the {@code _v2} names that
 * cublas_v2.h maps to), with every status checked.
 *
 * <p>Device matrix pointers are passed as {@code long}: on the 64-bit ABIs CUDA supports, a pointer and a 64-bit
 * integer travel the same way, and device addresses are not host memory a {@link MemorySegment} could describe.
 * alpha and beta are host pointers (the default CUBLAS_POINTER_MODE_HOST).
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

    private static void check(int status, String call) throws BackendException {
        if (status != 0) {
            throw new BackendException(call + " failed: " + statusName(status));
        }
    }

    private static RuntimeException unexpected(String call, Throwable t) {
        if (t instanceof RuntimeException r) {
            return r;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException(call, t);
    }

    /** Creates a handle; needs the CUDA context current on this thread. */
    MemorySegment create() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ADDRESS);
            check((int) cublasCreate.invokeExact(v), "cublasCreate_v2");
            return v.get(ADDRESS, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cublasCreate_v2", t);
        }
    }

    void destroy(MemorySegment handle) throws BackendException {
        int r;
        try {
            r = (int) cublasDestroy.invokeExact(handle);
        } catch (Throwable t) {
            throw unexpected("cublasDestroy_v2", t);
        }
        check(r, "cublasDestroy_v2");
    }

    void setStream(MemorySegment handle, MemorySegment stream) throws BackendException {
        int r;
        try {
            r = (int) cublasSetStream.invokeExact(handle, stream);
        } catch (Throwable t) {
            throw unexpected("cublasSetStream_v2", t);
        }
        check(r, "cublasSetStream_v2");
    }

    void setMathMode(MemorySegment handle, int mode) throws BackendException {
        int r;
        try {
            r = (int) cublasSetMathMode.invokeExact(handle, mode);
        } catch (Throwable t) {
            throw unexpected("cublasSetMathMode", t);
        }
        check(r, "cublasSetMathMode(" + mode + ")");
    }

    /** The library version, e.g. 130100 for 13.1.0. */
    int version(MemorySegment handle) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check((int) cublasGetVersion.invokeExact(handle, v), "cublasGetVersion_v2");
            return v.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cublasGetVersion_v2", t);
        }
    }

    /**
     * Queues {@code C = alpha·op(A)·op(B) + beta·C} as {@code g} describes: {@code cublasSgemm_v2} for one product,
     * {@code cublasSgemmStridedBatched} for several. alpha and beta point to host floats.
     */
    void gemm(MemorySegment handle, GemmCall g, MemorySegment alpha, long a, long b, MemorySegment beta, long c)
            throws BackendException {
        if (computeType >= 0) {
            gemmEx(handle, g, alpha, a, b, beta, c);
            return;
        }
        int r;
        try {
            if (g.batched()) {
                r = (int) cublasSgemmStridedBatched.invokeExact(handle, g.opA(), g.opB(), g.m(), g.n(), g.k(),
                        alpha, a, g.lda(), g.strideA(), b, g.ldb(), g.strideB(), beta, c, g.ldc(), g.strideC(),
                        g.batch());
            } else {
                r = (int) cublasSgemm.invokeExact(handle, g.opA(), g.opB(), g.m(), g.n(), g.k(),
                        alpha, a, g.lda(), b, g.ldb(), beta, c, g.ldc());
            }
        } catch (Throwable t) {
            throw unexpected("cublasSgemm", t);
        }
        if (r != 0) {
            check(r, (g.batched() ? "cublasSgemmStridedBatched" : "cublasSgemm_v2") + "(" + g + ")");
        }
    }

    private void gemmEx(MemorySegment handle, GemmCall g, MemorySegment alpha, long a, long b, MemorySegment beta,
            long c) throws BackendException {
        int r;
        try {
            if (g.batched()) {
                r = (int) cublasGemmStridedBatchedEx.invokeExact(handle, g.opA(), g.opB(), g.m(), g.n(), g.k(),
                        alpha, a, CUDA_R_32F, g.lda(), g.strideA(), b, CUDA_R_32F, g.ldb(), g.strideB(), beta, c,
                        CUDA_R_32F, g.ldc(), g.strideC(), g.batch(), computeType, CUBLAS_GEMM_DEFAULT);
            } else {
                r = (int) cublasGemmEx.invokeExact(handle, g.opA(), g.opB(), g.m(), g.n(), g.k(), alpha, a,
                        CUDA_R_32F, g.lda(), b, CUDA_R_32F, g.ldb(), beta, c, CUDA_R_32F, g.ldc(), computeType,
                        CUBLAS_GEMM_DEFAULT);
            }
        } catch (Throwable t) {
            throw unexpected("cublasGemmEx", t);
        }
        if (r != 0) {
            check(r, (g.batched() ? "cublasGemmStridedBatchedEx" : "cublasGemmEx") + "(" + g + ", compute type "
                    + computeType + ")");
        }
    }
}
