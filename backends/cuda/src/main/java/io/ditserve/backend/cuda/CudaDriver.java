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
 * The CUDA driver API functions the backend uses, bound from {@code libcuda.so.1} (signatures from cuda.h; the
 * exported names carry the {@code _v2} suffixes that cuda.h's macros add). Every call's CUresult is checked and a
 * failure throws a {@link BackendException} naming the function, the error's name and its description.
 *
 * <p>Types: CUresult, CUdevice, CUdevice_attribute and unsigned int are {@code int}; size_t and CUdeviceptr are
 * {@code long}; CUcontext, CUstream, CUmodule and CUfunction are opaque pointers ({@link MemorySegment}).
 */
final class CudaDriver {
    static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

    private static final FunctionDescriptor INT_OF_INT = FunctionDescriptor.of(JAVA_INT, JAVA_INT);
    private static final FunctionDescriptor INT_OF_PTR = FunctionDescriptor.of(JAVA_INT, ADDRESS);

    private final String library;
    private final MethodHandle cuGetErrorName;
    private final MethodHandle cuGetErrorString;
    private final MethodHandle cuInit;
    private final MethodHandle cuDriverGetVersion;
    private final MethodHandle cuDeviceGetCount;
    private final MethodHandle cuDeviceGet;
    private final MethodHandle cuDeviceGetName;
    private final MethodHandle cuDeviceGetAttribute;
    private final MethodHandle cuDevicePrimaryCtxRetain;
    private final MethodHandle cuDevicePrimaryCtxRelease;
    private final MethodHandle cuCtxSetCurrent;
    private final MethodHandle cuMemGetInfo;
    private final MethodHandle cuMemAlloc;
    private final MethodHandle cuMemFree;
    private final MethodHandle cuMemcpyHtoD;
    private final MethodHandle cuMemcpyHtoDAsync;
    private final MethodHandle cuMemcpyDtoHAsync;
    private final MethodHandle cuStreamCreate;
    private final MethodHandle cuStreamSynchronize;
    private final MethodHandle cuStreamDestroy;
    private final MethodHandle cuModuleLoadData;
    private final MethodHandle cuModuleGetFunction;
    private final MethodHandle cuModuleUnload;
    private final MethodHandle cuLaunchKernel;

    CudaDriver(NativeLibrary lib) throws BackendException {
        library = lib.name();
        FunctionDescriptor errorText = FunctionDescriptor.of(JAVA_INT, JAVA_INT, ADDRESS);
        cuGetErrorName = lib.function(errorText, "cuGetErrorName");
        cuGetErrorString = lib.function(errorText, "cuGetErrorString");
        cuInit = lib.function(INT_OF_INT, "cuInit");
        cuDriverGetVersion = lib.function(INT_OF_PTR, "cuDriverGetVersion");
        cuDeviceGetCount = lib.function(INT_OF_PTR, "cuDeviceGetCount");
        cuDeviceGet = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuDeviceGet");
        cuDeviceGetName = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT),
                "cuDeviceGetName");
        cuDeviceGetAttribute = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT),
                "cuDeviceGetAttribute");
        cuDevicePrimaryCtxRetain = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT),
                "cuDevicePrimaryCtxRetain");
        cuDevicePrimaryCtxRelease = lib.function(INT_OF_INT, "cuDevicePrimaryCtxRelease_v2",
                "cuDevicePrimaryCtxRelease");
        cuCtxSetCurrent = lib.function(INT_OF_PTR, "cuCtxSetCurrent");
        cuMemGetInfo = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuMemGetInfo_v2");
        cuMemAlloc = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG), "cuMemAlloc_v2");
        cuMemFree = lib.function(FunctionDescriptor.of(JAVA_INT, JAVA_LONG), "cuMemFree_v2");
        cuMemcpyHtoD = lib.function(FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG),
                "cuMemcpyHtoD_v2");
        cuMemcpyHtoDAsync = lib.function(FunctionDescriptor.of(JAVA_INT, JAVA_LONG, ADDRESS, JAVA_LONG, ADDRESS),
                "cuMemcpyHtoDAsync_v2");
        cuMemcpyDtoHAsync = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_LONG, JAVA_LONG, ADDRESS),
                "cuMemcpyDtoHAsync_v2");
        cuStreamCreate = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT), "cuStreamCreate");
        cuStreamSynchronize = lib.function(INT_OF_PTR, "cuStreamSynchronize");
        cuStreamDestroy = lib.function(INT_OF_PTR, "cuStreamDestroy_v2", "cuStreamDestroy");
        cuModuleLoadData = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "cuModuleLoadData");
        cuModuleGetFunction = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS),
                "cuModuleGetFunction");
        cuModuleUnload = lib.function(INT_OF_PTR, "cuModuleUnload");
        // f, gridDim x/y/z, blockDim x/y/z, sharedMemBytes, stream, kernelParams, extra
        cuLaunchKernel = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, JAVA_INT, JAVA_INT,
                JAVA_INT, JAVA_INT, JAVA_INT, JAVA_INT, ADDRESS, ADDRESS, ADDRESS), "cuLaunchKernel");
    }

    /** "CUDA_ERROR_X (description)" for a CUresult, or the number when the driver does not know it. */
    String describe(int result) {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment name = a.allocate(ADDRESS);
            MemorySegment text = a.allocate(ADDRESS);
            int r1 = (int) cuGetErrorName.invokeExact(result, name);
            int r2 = (int) cuGetErrorString.invokeExact(result, text);
            String n = r1 == 0 ? NativeLibrary.cString(name.get(ADDRESS, 0)) : "CUresult " + result;
            return r2 == 0 ? n + " (" + NativeLibrary.cString(text.get(ADDRESS, 0)) + ")" : n;
        } catch (Throwable t) {
            return "CUresult " + result;
        }
    }

    private void check(int result, String call) throws BackendException {
        if (result != 0) {
            throw new BackendException(call + " failed: " + describe(result));
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

    void init() throws BackendException {
        int r;
        try {
            r = (int) cuInit.invokeExact(0);
        } catch (Throwable t) {
            throw unexpected("cuInit", t);
        }
        check(r, "cuInit (" + library + ")");
    }

    /** The driver's CUDA version, e.g. 13000 for 13.0. */
    int driverVersion() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check((int) cuDriverGetVersion.invokeExact(v), "cuDriverGetVersion");
            return v.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDriverGetVersion", t);
        }
    }

    int deviceCount() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check((int) cuDeviceGetCount.invokeExact(v), "cuDeviceGetCount");
            return v.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDeviceGetCount", t);
        }
    }

    /** The CUdevice of an ordinal. */
    int device(int ordinal) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check((int) cuDeviceGet.invokeExact(v, ordinal), "cuDeviceGet(" + ordinal + ")");
            return v.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDeviceGet", t);
        }
    }

    String deviceName(int device) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(256);
            check((int) cuDeviceGetName.invokeExact(buf, 256, device), "cuDeviceGetName");
            return buf.getString(0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDeviceGetName", t);
        }
    }

    int attribute(int device, int attribute) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_INT);
            check((int) cuDeviceGetAttribute.invokeExact(v, attribute, device),
                    "cuDeviceGetAttribute(" + attribute + ")");
            return v.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDeviceGetAttribute", t);
        }
    }

    /** Retains the device's primary context (shared with other users of the device in this process). */
    MemorySegment primaryContextRetain(int device) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ADDRESS);
            check((int) cuDevicePrimaryCtxRetain.invokeExact(v, device), "cuDevicePrimaryCtxRetain");
            return v.get(ADDRESS, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuDevicePrimaryCtxRetain", t);
        }
    }

    void primaryContextRelease(int device) throws BackendException {
        int r;
        try {
            r = (int) cuDevicePrimaryCtxRelease.invokeExact(device);
        } catch (Throwable t) {
            throw unexpected("cuDevicePrimaryCtxRelease_v2", t);
        }
        check(r, "cuDevicePrimaryCtxRelease_v2");
    }

    /** Makes the context current on the calling thread (CUDA contexts are per thread). */
    void setCurrent(MemorySegment context) throws BackendException {
        int r;
        try {
            r = (int) cuCtxSetCurrent.invokeExact(context);
        } catch (Throwable t) {
            throw unexpected("cuCtxSetCurrent", t);
        }
        check(r, "cuCtxSetCurrent");
    }

    /** {free, total} device memory in bytes. */
    long[] memoryInfo() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment free = a.allocate(JAVA_LONG);
            MemorySegment total = a.allocate(JAVA_LONG);
            check((int) cuMemGetInfo.invokeExact(free, total), "cuMemGetInfo_v2");
            return new long[] {free.get(JAVA_LONG, 0), total.get(JAVA_LONG, 0)};
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuMemGetInfo_v2", t);
        }
    }

    /** Allocates device memory; {@code what} names it in the error message. */
    long alloc(long bytes, String what) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_LONG);
            int r = (int) cuMemAlloc.invokeExact(v, bytes);
            if (r != 0) {
                String free = "";
                try {
                    long[] info = memoryInfo();
                    free = "; " + info[0] / (1 << 20) + " MiB of " + info[1] / (1 << 20) + " MiB free";
                } catch (BackendException ignored) {
                    // the allocation error is the one to report
                }
                throw new BackendException("cuMemAlloc_v2(" + bytes + " bytes for " + what + ") failed: "
                        + describe(r) + free);
            }
            return v.get(JAVA_LONG, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuMemAlloc_v2", t);
        }
    }

    void free(long devicePtr) throws BackendException {
        int r;
        try {
            r = (int) cuMemFree.invokeExact(devicePtr);
        } catch (Throwable t) {
            throw unexpected("cuMemFree_v2", t);
        }
        check(r, "cuMemFree_v2");
    }

    /** Synchronous host-to-device copy (used at load time). */
    void copyToDevice(long dst, MemorySegment src, long bytes, String what) throws BackendException {
        int r;
        try {
            r = (int) cuMemcpyHtoD.invokeExact(dst, src, bytes);
        } catch (Throwable t) {
            throw unexpected("cuMemcpyHtoD_v2", t);
        }
        check(r, "cuMemcpyHtoD_v2(" + what + ", " + bytes + " bytes)");
    }

    /**
     * Host-to-device copy queued on a stream. From pageable host memory (our staging buffers) the driver copies the
     * source before returning, so the buffer may be reused at once.
     */
    void copyToDeviceAsync(long dst, MemorySegment src, long bytes, MemorySegment stream, String what)
            throws BackendException {
        int r;
        try {
            r = (int) cuMemcpyHtoDAsync.invokeExact(dst, src, bytes, stream);
        } catch (Throwable t) {
            throw unexpected("cuMemcpyHtoDAsync_v2", t);
        }
        check(r, "cuMemcpyHtoDAsync_v2(" + what + ", " + bytes + " bytes)");
    }

    /** Device-to-host copy queued on a stream; into pageable memory it returns when the copy is done. */
    void copyToHostAsync(MemorySegment dst, long src, long bytes, MemorySegment stream, String what)
            throws BackendException {
        int r;
        try {
            r = (int) cuMemcpyDtoHAsync.invokeExact(dst, src, bytes, stream);
        } catch (Throwable t) {
            throw unexpected("cuMemcpyDtoHAsync_v2", t);
        }
        check(r, "cuMemcpyDtoHAsync_v2(" + what + ", " + bytes + " bytes)");
    }

    /** A stream with default flags: ordered with the legacy default stream, which the load-time copies use. */
    MemorySegment streamCreate() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ADDRESS);
            check((int) cuStreamCreate.invokeExact(v, 0), "cuStreamCreate");
            return v.get(ADDRESS, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuStreamCreate", t);
        }
    }

    /** Waits for the stream's work; errors of earlier asynchronous work (a faulting kernel) surface here. */
    void streamSynchronize(MemorySegment stream, String after) throws BackendException {
        int r;
        try {
            r = (int) cuStreamSynchronize.invokeExact(stream);
        } catch (Throwable t) {
            throw unexpected("cuStreamSynchronize", t);
        }
        check(r, "cuStreamSynchronize after " + after);
    }

    void streamDestroy(MemorySegment stream) throws BackendException {
        int r;
        try {
            r = (int) cuStreamDestroy.invokeExact(stream);
        } catch (Throwable t) {
            throw unexpected("cuStreamDestroy_v2", t);
        }
        check(r, "cuStreamDestroy_v2");
    }

    /** Loads a module from a cubin or PTX image in host memory. */
    MemorySegment moduleLoadData(MemorySegment image) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ADDRESS);
            check((int) cuModuleLoadData.invokeExact(v, image), "cuModuleLoadData");
            return v.get(ADDRESS, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuModuleLoadData", t);
        }
    }

    MemorySegment moduleFunction(MemorySegment module, String name) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(ADDRESS);
            check((int) cuModuleGetFunction.invokeExact(v, module, a.allocateFrom(name)),
                    "cuModuleGetFunction(" + name + ")");
            return v.get(ADDRESS, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("cuModuleGetFunction", t);
        }
    }

    void moduleUnload(MemorySegment module) throws BackendException {
        int r;
        try {
            r = (int) cuModuleUnload.invokeExact(module);
        } catch (Throwable t) {
            throw unexpected("cuModuleUnload", t);
        }
        check(r, "cuModuleUnload");
    }

    /**
     * Queues a kernel on a 1-D grid. {@code params} is the {@code void**} array of pointers to each argument's
     * value; the driver copies the values during the call, so the array may be reused at once.
     */
    void launch(MemorySegment function, int grid, int block, MemorySegment stream, MemorySegment params,
            String what) throws BackendException {
        int r;
        try {
            r = (int) cuLaunchKernel.invokeExact(function, grid, 1, 1, block, 1, 1, 0, stream, params,
                    MemorySegment.NULL);
        } catch (Throwable t) {
            throw unexpected("cuLaunchKernel", t);
        }
        if (r != 0) {
            throw new BackendException("cuLaunchKernel(" + what + ", grid " + grid + ", block " + block
                    + ") failed: " + describe(r));
        }
    }
}
