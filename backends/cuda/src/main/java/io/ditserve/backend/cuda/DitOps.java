package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;

/**
 * What {@link DitForward} asks of a device: kernel launches and matrix products on device addresses, queued in
 * order. {@link CudaOps} sends them to the GPU; the unit tests run them on a CPU emulation of the same kernels.
 */
interface DitOps {
    /** Queues a kernel; the arguments are checked against the kernel's parameter list first. */
    void launch(Kernel kernel, LaunchConfig config, KernelArgs args) throws BackendException;

    /**
     * Queues C = op(A)·op(B) (column-major, alpha 1, beta 0) as {@code call} describes, with a plain GEMM when
     * {@code call.batch()} is 1 and a strided batched one otherwise. a, b and c are device addresses.
     */
    void gemm(GemmCall call, long a, long b, long c) throws BackendException;
}
