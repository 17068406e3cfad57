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
 * exported names carry the {@code _v2} suffixes that cuda.h's macros add). Every call goes through
 * {@link NativeCalls}: its CUresult is checked and a failure throws a {@link BackendException} naming the function,
 * the error's name and its description.
 *
 * <p>Types: CUresult, CUdevice, CUdevice_attribute and unsigned int are {@code int}; size_t is {@code long}; a
 * CUdeviceptr is a {@link DevicePtr} (passed as its {@code long} address); CUcontext, CUstream, CUmodule and
 * CUfunction are opaque pointers ({@link MemorySegment}).
 */
final class CudaDriver {
    static final int CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
    static final int CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

    private static final FunctionDescriptor INT_OF_INT = FunctionDescriptor.of(JAVA_INT, JAVA_INT);
    private static final FunctionDescriptor INT_OF_PTR = FunctionDescriptor.of(JAVA_INT, ADDRESS);

    private final String library;
    private final NativeCalls calls = new NativeCalls(this::describe);
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
            int r1 = NativeCalls.invoke("cuGetErrorName", () -> (int) cuGetErrorName.invokeExact(result, name));
            int r2 = NativeCalls.invoke("cuGetErrorString", () -> (int) cuGetErrorString.invokeExact(result, text));
            String n = r1 == 0 ? NativeLibrary.cString(name.get(ADDRESS, 0)) : "CUresult " + result;
            return r2 == 0 ? n + " (" + NativeLibrary.cString(text.get(ADDRESS, 0)) + ")" : n;
        } catch (RuntimeException e) {
            return "CUresult " + result;
        }
    }

    void init() throws BackendException {
        calls.call("cuInit (" + library + ")", () -> (int) cuInit.invokeExact(0));
    }

    /** The driver's CUDA version, e.g. 13000 for 13.0. */
    int driverVersion() throws BackendException {
        return calls.outInt("cuDriverGetVersion", (v, a) -> (int) cuDriverGetVersion.invokeExact(v));
    }

    int deviceCount() throws BackendException {
        return calls.outInt("cuDeviceGetCount", (v, a) -> (int) cuDeviceGetCount.invokeExact(v));
    }

    /** The CUdevice of an ordinal. */
    int device(int ordinal) throws BackendException {
        return calls.outInt("cuDeviceGet(" + ordinal + ")", (v, a) -> (int) cuDeviceGet.invokeExact(v, ordinal));
    }

    String deviceName(int device) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment buf = a.allocate(256);
            calls.call("cuDeviceGetName", () -> (int) cuDeviceGetName.invokeExact(buf, 256, device));
            return buf.getString(0);
        }
    }

    int attribute(int device, int attribute) throws BackendException {
        return calls.outInt("cuDeviceGetAttribute(" + attribute + ")",
                (v, a) -> (int) cuDeviceGetAttribute.invokeExact(v, attribute, device));
    }

    /** Retains the device's primary context (shared with other users of the device in this process). */
    MemorySegment primaryContextRetain(int device) throws BackendException {
        return calls.outAddress("cuDevicePrimaryCtxRetain",
                (v, a) -> (int) cuDevicePrimaryCtxRetain.invokeExact(v, device));
    }

    void primaryContextRelease(int device) throws BackendException {
        calls.call("cuDevicePrimaryCtxRelease_v2", () -> (int) cuDevicePrimaryCtxRelease.invokeExact(device));
    }

    /** Makes the context current on the calling thread (CUDA contexts are per thread). */
    void setCurrent(MemorySegment context) throws BackendException {
        calls.call("cuCtxSetCurrent", () -> (int) cuCtxSetCurrent.invokeExact(context));
    }

    /** {free, total} device memory in bytes. */
    long[] memoryInfo() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment free = a.allocate(JAVA_LONG);
            MemorySegment total = a.allocate(JAVA_LONG);
            calls.call("cuMemGetInfo_v2", () -> (int) cuMemGetInfo.invokeExact(free, total));
            return new long[] {free.get(JAVA_LONG, 0), total.get(JAVA_LONG, 0)};
        }
    }

    /** Allocates device memory; {@code what} names it in the error message, with the free memory. */
    DevicePtr alloc(long bytes, String what) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment v = a.allocate(JAVA_LONG);
            int r = NativeCalls.invoke("cuMemAlloc_v2", () -> (int) cuMemAlloc.invokeExact(v, bytes));
            if (r != 0) {
                String free = "";
                try {
                    long[] info = memoryInfo();
                    free = "; " + info[0] / (1 << 20) + " MiB of " + info[1] / (1 << 20) + " MiB free";
                } catch (BackendException ignored) {
                    // the allocation error is the one to report
                }
                throw new BackendException(calls.failure(r, "cuMemAlloc_v2(" + bytes + " bytes for " + what + ")")
                        + free);
            }
            return new DevicePtr(v.get(JAVA_LONG, 0));
        }
    }

    void free(DevicePtr p) throws BackendException {
        calls.call("cuMemFree_v2", () -> (int) cuMemFree.invokeExact(p.address()));
    }

    /** Synchronous host-to-device copy (used at load time). */
    void copyToDevice(DevicePtr dst, MemorySegment src, long bytes, String what) throws BackendException {
        calls.call("cuMemcpyHtoD_v2(" + what + ", " + bytes + " bytes)",
                () -> (int) cuMemcpyHtoD.invokeExact(dst.address(), src, bytes));
    }

    /**
     * Host-to-device copy queued on a stream. From pageable host memory (our staging buffers) the driver copies the
     * source before returning, so the buffer may be reused at once.
     */
    void copyToDeviceAsync(DevicePtr dst, MemorySegment src, long bytes, MemorySegment stream, String what)
            throws BackendException {
        calls.call("cuMemcpyHtoDAsync_v2(" + what + ", " + bytes + " bytes)",
                () -> (int) cuMemcpyHtoDAsync.invokeExact(dst.address(), src, bytes, stream));
    }

    /** Device-to-host copy queued on a stream; into pageable memory it returns when the copy is done. */
    void copyToHostAsync(MemorySegment dst, DevicePtr src, long bytes, MemorySegment stream, String what)
            throws BackendException {
        calls.call("cuMemcpyDtoHAsync_v2(" + what + ", " + bytes + " bytes)",
                () -> (int) cuMemcpyDtoHAsync.invokeExact(dst, src.address(), bytes, stream));
    }

    /** A stream with default flags: ordered with the legacy default stream, which the load-time copies use. */
    MemorySegment streamCreate() throws BackendException {
        return calls.outAddress("cuStreamCreate", (v, a) -> (int) cuStreamCreate.invokeExact(v, 0));
    }

    /** Waits for the stream's work; errors of earlier asynchronous work (a faulting kernel) surface here. */
    void streamSynchronize(MemorySegment stream, String after) throws BackendException {
        calls.call("cuStreamSynchronize after " + after, () -> (int) cuStreamSynchronize.invokeExact(stream));
    }

    void streamDestroy(MemorySegment stream) throws BackendException {
        calls.call("cuStreamDestroy_v2", () -> (int) cuStreamDestroy.invokeExact(stream));
    }

    /** Loads a module from a cubin or PTX image in host memory. */
    MemorySegment moduleLoadData(MemorySegment image) throws BackendException {
        return calls.outAddress("cuModuleLoadData", (v, a) -> (int) cuModuleLoadData.invokeExact(v, image));
    }

    MemorySegment moduleFunction(MemorySegment module, String name) throws BackendException {
        return calls.outAddress("cuModuleGetFunction(" + name + ")",
                (v, a) -> (int) cuModuleGetFunction.invokeExact(v, module, a.allocateFrom(name)));
    }

    void moduleUnload(MemorySegment module) throws BackendException {
        calls.call("cuModuleUnload", () -> (int) cuModuleUnload.invokeExact(module));
    }

    /**
     * Queues a kernel on a 1-D grid. {@code params} is the {@code void**} array of pointers to each argument's
     * value; the driver copies the values during the call, so the array may be reused at once.
     */
    void launch(MemorySegment function, LaunchConfig config, MemorySegment stream, MemorySegment params,
            String what) throws BackendException {
        int r = NativeCalls.invoke("cuLaunchKernel", () -> (int) cuLaunchKernel.invokeExact(function, config.grid(),
                1, 1, config.block(), 1, 1, 0, stream, params, MemorySegment.NULL));
        if (r != 0) {
            // the message is built only on failure: this runs for every kernel of a pass
            calls.check(r, "cuLaunchKernel(" + what + ", grid " + config.grid() + ", block " + config.block() + ")");
        }
    }
}
