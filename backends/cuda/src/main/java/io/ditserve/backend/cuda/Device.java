package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import java.lang.foreign.MemorySegment;

/**
 * What {@link CudaDitBackend}, {@link CudaMmditBackend}, {@link CudaTextEncoder} and {@link CudaDecoder} ask of a GPU
 * beyond {@link DitOps}: device memory, copies between it and host memory, and waiting for the queued work.
 * {@link CudaDevice} is the GPU; the unit tests run these classes, host logic included, on a CPU emulation of the
 * same operations.
 *
 * <p>Addresses are device addresses ({@link DevicePtr}, in bytes) and sizes are in bytes; the asynchronous copies are
 * queued in order with the operations of {@link #ops}, and their host memory must stay untouched until
 * {@link #synchronize} returns.
 */
interface Device extends AutoCloseable {
    /** Opens a device, once the model's files have been checked. */
    interface Opener {
        Device open() throws BackendException;

        /**
         * Opens a device and gives it to {@code load} (which uploads a model's weights and builds the model on it);
         * the device is closed again if that fails.
         */
        default <T> T load(Load<T> load) throws BackendException {
            Device device = open();
            try {
                return load.on(device);
            } catch (BackendException | RuntimeException e) {
                device.close();
                throw e;
            }
        }
    }

    /** What {@link Opener#load} does with the device it opens. */
    interface Load<T> {
        T on(Device device) throws BackendException;
    }

    /** The kernel launches and matrix products, queued on this device. */
    DitOps ops();

    /** One line: the device, the library versions and paths, the precision. */
    String description();

    /** Makes the device usable from the calling thread (CUDA contexts are current per thread). */
    void makeCurrent() throws BackendException;

    /** Allocates device memory, freed by {@link #free} or at the latest by {@link #close}. */
    DevicePtr alloc(long bytes, String what) throws BackendException;

    void free(DevicePtr address) throws BackendException;

    /** Copies {@code bytes} of host memory to the device and returns when done (weights, at load). */
    void copyToDevice(DevicePtr dst, MemorySegment src, long bytes, String what) throws BackendException;

    /** Queues a copy of host memory to the device. */
    void copyToDeviceAsync(DevicePtr dst, MemorySegment src, long bytes, String what) throws BackendException;

    /** Queues a copy of device memory to the host. */
    void copyToHostAsync(MemorySegment dst, DevicePtr src, long bytes, String what) throws BackendException;

    /** Waits for everything queued; {@code after} says what was queued, for the error message. */
    void synchronize(String after) throws BackendException;

    /** Frees the allocations and releases the device. Idempotent. */
    @Override
    void close();
}
