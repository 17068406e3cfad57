package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.EnumMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * One GPU as the backend uses it: the device's primary context, a stream, a cuBLAS handle on that stream, and the
 * kernels compiled by NVRTC and loaded as a module; plus the device allocations made through it.
 *
 * <p>Everything acquired is released by {@link #close}, in reverse order, also when {@link #open} fails half-way.
 * CUDA contexts are current per thread, so callers run {@link #makeCurrent} on the thread they use it from. Native
 * memory of the FFM calls comes from an arena this object owns (shared, since a backend is used from whichever
 * thread calls it); it is closed last.
 */
final class CudaDevice implements Device {
    private static final System.Logger LOG = System.getLogger(CudaDevice.class.getName());

    /** A release step registered when something is acquired. */
    private interface Release {
        void run() throws BackendException;
    }

    final Arena arena = Arena.ofShared();
    final CudaDriver driver;
    final Cublas cublas;
    private final Deque<Release> releases = new ArrayDeque<>();
    private final Map<DevicePtr, String> allocations = new LinkedHashMap<>();
    private final Map<Kernel, MemorySegment> functions = new EnumMap<>(Kernel.class);
    private MemorySegment context;
    private MemorySegment stream;
    private MemorySegment blasHandle;
    private CudaOps ops;
    private String description = "";
    private boolean closed;

    private CudaDevice(CudaDriver driver, Cublas cublas) {
        this.driver = driver;
        this.cublas = cublas;
    }

    /** Opens the GPU that {@code options} select, with this process's environment ({@link #open}). */
    static Device.Opener opener(CudaOptions options) {
        return () -> open(options, System.getenv());
    }

    /**
     * Finds the libraries (see {@link CudaLibraries}), initialises the driver, takes the device's primary
     * context, creates the stream and the cuBLAS handle with the precision's math mode, and compiles and loads the
     * kernels. Fails with what is missing or what failed.
     */
    static CudaDevice open(CudaOptions options, Map<String, String> env) throws BackendException {
        List<Path> dirs = CudaLibraries.searchDirs(options.libPath(), env, Path.of("/"));
        CudaLibraries.Loaded libs = CudaLibraries.load(dirs);
        CudaDriver driver = new CudaDriver(libs.driver());
        Cublas cublas = new Cublas(libs.cublas());
        Nvrtc nvrtc = new Nvrtc(libs.nvrtc());
        driver.init();
        int count = driver.deviceCount();
        if (count == 0) {
            throw new BackendException("the cuda backend cannot run here: the CUDA driver (" + libs.driver().name()
                    + ") sees no CUDA device (check nvidia-smi and CUDA_VISIBLE_DEVICES)");
        }
        if (options.device() >= count) {
            throw new BackendException(CudaOptions.DEVICE + "=" + options.device() + " but the driver sees only "
                    + count + " CUDA device(s) (ordinals 0.." + (count - 1) + ")");
        }
        CudaDevice d = new CudaDevice(driver, cublas);
        try {
            d.init(options, libs, nvrtc, count);
            return d;
        } catch (BackendException | RuntimeException e) {
            d.close();
            throw e;
        }
    }

    private void init(CudaOptions options, CudaLibraries.Loaded libs, Nvrtc nvrtc, int count)
            throws BackendException {
        int dev = driver.device(options.device());
        context = driver.primaryContextRetain(dev);
        releases.push(() -> driver.primaryContextRelease(dev));
        driver.setCurrent(context);
        stream = driver.streamCreate();
        MemorySegment s = stream;
        releases.push(() -> driver.streamDestroy(s));
        blasHandle = cublas.create();
        MemorySegment h = blasHandle;
        releases.push(() -> cublas.destroy(h));
        cublas.setStream(blasHandle, stream);
        cublas.setMathMode(blasHandle, options.precision().mathMode);
        if (options.precision().computeType >= 0) {
            cublas.useComputeType(options.precision().computeType);
        }

        int major = driver.attribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
        int minor = driver.attribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
        List<String> nvrtcOptions = Nvrtc.options(major, minor);
        byte[] cubin = nvrtc.compileToCubin(Nvrtc.kernelSource(), Nvrtc.KERNELS_RESOURCE, nvrtcOptions);
        MemorySegment image = arena.allocate(cubin.length, 16);
        MemorySegment.copy(cubin, 0, image, ValueLayout.JAVA_BYTE, 0, cubin.length);
        MemorySegment module = driver.moduleLoadData(image);
        releases.push(() -> driver.moduleUnload(module));
        for (Kernel k : Kernel.values()) {
            functions.put(k, driver.moduleFunction(module, k.symbol));
        }
        ops = new CudaOps(this, options.debugSync());
        int driverVersion = driver.driverVersion();
        long[] mem = driver.memoryInfo();
        description = "device " + options.device() + " of " + count + ": " + driver.deviceName(dev)
                + ", compute capability " + major + "." + minor + ", "
                + driver.attribute(dev, CudaDriver.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) + " SMs, "
                + mem[1] / (1 << 20) + " MiB (" + mem[0] / (1 << 20) + " free); driver CUDA "
                + driverVersion / 1000 + "." + driverVersion % 1000 / 10 + " (" + libs.driver().name() + "); cuBLAS "
                + cublas.version(blasHandle) + " (" + libs.cublas().name() + "); NVRTC " + nvrtc.version() + " ("
                + libs.nvrtc().name() + ", " + String.join(" ", nvrtcOptions) + "); precision "
                + options.precision().optionValue();
    }

    @Override
    public DitOps ops() {
        return ops;
    }

    @Override
    public String description() {
        return description;
    }

    @Override
    public void makeCurrent() throws BackendException {
        driver.setCurrent(context);
    }

    MemorySegment stream() {
        return stream;
    }

    MemorySegment blasHandle() {
        return blasHandle;
    }

    MemorySegment function(Kernel k) {
        return functions.get(k);
    }

    @Override
    public DevicePtr alloc(long bytes, String what) throws BackendException {
        DevicePtr p = driver.alloc(bytes, what);
        allocations.put(p, what);
        return p;
    }

    @Override
    public void free(DevicePtr devicePtr) throws BackendException {
        if (allocations.remove(devicePtr) != null) {
            driver.free(devicePtr);
        }
    }

    @Override
    public void copyToDevice(DevicePtr dst, MemorySegment src, long bytes, String what) throws BackendException {
        driver.copyToDevice(dst, src, bytes, what);
    }

    @Override
    public void copyToDeviceAsync(DevicePtr dst, MemorySegment src, long bytes, String what) throws BackendException {
        driver.copyToDeviceAsync(dst, src, bytes, stream, what);
    }

    @Override
    public void copyToHostAsync(MemorySegment dst, DevicePtr src, long bytes, String what) throws BackendException {
        driver.copyToHostAsync(dst, src, bytes, stream, what);
    }

    /** Waits for the stream. */
    @Override
    public void synchronize(String after) throws BackendException {
        driver.streamSynchronize(stream, after);
    }

    /** Frees the allocations, then releases the rest in reverse order of acquisition. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        try {
            if (context != null) {
                driver.setCurrent(context);
                if (stream != null) {
                    driver.streamSynchronize(stream, "the last queued work, at close");
                }
            }
        } catch (BackendException e) {
            LOG.log(System.Logger.Level.WARNING, "cuda backend close: " + e.getMessage());
        }
        for (Map.Entry<DevicePtr, String> a : allocations.entrySet()) {
            try {
                driver.free(a.getKey());
            } catch (BackendException e) {
                LOG.log(System.Logger.Level.WARNING, "cuda backend close, freeing " + a.getValue() + ": "
                        + e.getMessage());
            }
        }
        allocations.clear();
        while (!releases.isEmpty()) {
            try {
                releases.pop().run();
            } catch (BackendException | RuntimeException e) {
                LOG.log(System.Logger.Level.WARNING, "cuda backend close: " + e.getMessage());
            }
        }
        arena.close();
    }
}
