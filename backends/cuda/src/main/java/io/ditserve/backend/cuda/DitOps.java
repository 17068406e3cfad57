package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;

/**
 * What {@link DitForward} asks of a device: kernel launches and matrix products on device addresses, queued in
 * order. {@link CudaOps} sends them to the GPU; the unit tests run them on a CPU emulation of the same kernels.
 */
interface DitOps {
    /**
     * Queues the kernel of {@code args} ({@link KernelArgs#kernel()}, which checks that every parameter has its
     * argument) with {@code config}.
     */
    void launch(LaunchConfig config, KernelArgs args) throws BackendException;

    /**
     * Queues C = op(A)·op(B) (column-major, alpha 1, beta 0) as {@code call} describes, with a plain GEMM when
     * {@code call.batch()} is 1 and a strided batched one otherwise.
     */
    void gemm(GemmCall call, DevicePtr a, DevicePtr b, DevicePtr c) throws BackendException;
}
