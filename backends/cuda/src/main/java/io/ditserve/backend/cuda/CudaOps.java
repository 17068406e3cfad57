package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.ditserve.backend.BackendException;
import java.lang.foreign.MemorySegment;

/**
 * {@link DitOps} on a {@link CudaDevice}: kernels through {@code cuLaunchKernel}, matrix products through cuBLAS,
 * all on the device's stream. The launch parameter block ({@code void**} and the values it points to) and the
 * alpha/beta scalars are allocated once and reused; nothing is allocated per launch.
 */
final class CudaOps implements DitOps {
    private final CudaDevice device;
    private final boolean debugSync;
    private final MemorySegment values; // one 8-byte slot per argument
    private final MemorySegment pointers; // void*[]: pointers[i] = &values[i]
    private final MemorySegment one;
    private final MemorySegment zero;

    /** {@code debugSync}: synchronise after each operation, so an asynchronous failure names its kernel. */
    CudaOps(CudaDevice device, boolean debugSync) {
        this.device = device;
        this.debugSync = debugSync;
        values = device.arena.allocate(8L * KernelArgs.MAX_ARGS, 8);
        pointers = device.arena.allocate(ADDRESS, KernelArgs.MAX_ARGS);
        for (int i = 0; i < KernelArgs.MAX_ARGS; i++) {
            pointers.setAtIndex(ADDRESS, i, values.asSlice(8L * i, 8));
        }
        one = device.arena.allocateFrom(JAVA_FLOAT, 1f);
        zero = device.arena.allocateFrom(JAVA_FLOAT, 0f);
    }

    @Override
    public void launch(LaunchConfig config, KernelArgs args) throws BackendException {
        Kernel kernel = args.kernel();
        for (int i = 0; i < args.count(); i++) {
            switch (args.kind(i)) {
                case POINTER -> values.set(JAVA_LONG, 8L * i, args.value(i));
                case INT -> values.set(JAVA_INT, 8L * i, args.intValue(i));
                case FLOAT -> values.set(JAVA_FLOAT, 8L * i, args.floatValue(i));
            }
        }
        device.driver.launch(device.function(kernel), config, device.stream(), pointers, kernel.symbol);
        if (debugSync) {
            device.synchronize("kernel " + kernel.symbol + " (grid " + config.grid() + ", block " + config.block()
                    + ")");
        }
    }

    @Override
    public void gemm(GemmCall call, DevicePtr a, DevicePtr b, DevicePtr c) throws BackendException {
        device.cublas.gemm(device.blasHandle(), call, one, a, b, zero, c);
        if (debugSync) {
            device.synchronize("matrix product " + call);
        }
    }
}
