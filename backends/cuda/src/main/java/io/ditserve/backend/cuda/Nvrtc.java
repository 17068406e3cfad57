package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.MemorySegment;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.util.List;

/**
 * Compiles the backend's CUDA C source at run time with NVRTC (signatures from nvrtc.h), to a cubin for the
 * device's exact architecture.
 *
 * <p>Why a cubin ({@code --gpu-architecture=sm_XY}) and not PTX ({@code compute_XY}): PTX is compiled again by the
 * driver, which rejects PTX from an NVRTC newer than itself (CUDA_ERROR_UNSUPPORTED_PTX_VERSION), while a cubin
 * from NVRTC loads on any driver of the same major CUDA version (minor-version compatibility).
 */
final class Nvrtc {
    /** The kernels' source, a resource of this package. */
    static final String KERNELS_RESOURCE = "dit_kernels.cu";

    private final MethodHandle nvrtcVersion;
    private final MethodHandle nvrtcGetErrorString;
    private final MethodHandle nvrtcCreateProgram;
    private final MethodHandle nvrtcCompileProgram;
    private final MethodHandle nvrtcGetProgramLogSize;
    private final MethodHandle nvrtcGetProgramLog;
    private final MethodHandle nvrtcGetCUBINSize;
    private final MethodHandle nvrtcGetCUBIN;
    private final MethodHandle nvrtcDestroyProgram;

    Nvrtc(NativeLibrary lib) throws BackendException {
        nvrtcVersion = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "nvrtcVersion");
        nvrtcGetErrorString = lib.function(FunctionDescriptor.of(ADDRESS, JAVA_INT), "nvrtcGetErrorString");
        // prog*, src, name, numHeaders, headers, includeNames
        nvrtcCreateProgram = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS, ADDRESS, JAVA_INT,
                ADDRESS, ADDRESS), "nvrtcCreateProgram");
        nvrtcCompileProgram = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, JAVA_INT, ADDRESS),
                "nvrtcCompileProgram");
        nvrtcGetProgramLogSize = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS),
                "nvrtcGetProgramLogSize");
        nvrtcGetProgramLog = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "nvrtcGetProgramLog");
        nvrtcGetCUBINSize = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "nvrtcGetCUBINSize");
        nvrtcGetCUBIN = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS, ADDRESS), "nvrtcGetCUBIN");
        nvrtcDestroyProgram = lib.function(FunctionDescriptor.of(JAVA_INT, ADDRESS), "nvrtcDestroyProgram");
    }

    /** The options of the backend's compilation for compute capability major.minor. */
    static List<String> options(int major, int minor) {
        // -default-device: functions without a space qualifier are device functions; no --use_fast_math, so
        // expf, tanhf, sqrtf and the division keep their IEEE accuracy (parity with the reference)
        return List.of("--gpu-architecture=sm_" + major + minor, "-default-device");
    }

    /** The kernels' CUDA C source. */
    static String kernelSource() throws BackendException {
        try (InputStream in = Nvrtc.class.getResourceAsStream(KERNELS_RESOURCE)) {
            if (in == null) {
                throw new BackendException("resource " + KERNELS_RESOURCE + " is missing from the cuda backend's jar");
            }
            return new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new BackendException("cannot read resource " + KERNELS_RESOURCE + ": " + e.getMessage(), e);
        }
    }

    /** "major.minor" of the library. */
    String version() throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment major = a.allocate(JAVA_INT);
            MemorySegment minor = a.allocate(JAVA_INT);
            check((int) nvrtcVersion.invokeExact(major, minor), "nvrtcVersion", null);
            return major.get(JAVA_INT, 0) + "." + minor.get(JAVA_INT, 0);
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("nvrtcVersion", t);
        }
    }

    /**
     * Compiles {@code source} (named {@code name} in messages) to a cubin with {@code options}; a compile error
     * throws with NVRTC's log.
     */
    byte[] compileToCubin(String source, String name, List<String> options) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment progSlot = a.allocate(ADDRESS);
            check((int) nvrtcCreateProgram.invokeExact(progSlot, a.allocateFrom(source), a.allocateFrom(name), 0,
                    MemorySegment.NULL, MemorySegment.NULL), "nvrtcCreateProgram", null);
            MemorySegment prog = progSlot.get(ADDRESS, 0);
            try {
                MemorySegment opts = a.allocate(ADDRESS, options.size());
                for (int i = 0; i < options.size(); i++) {
                    opts.setAtIndex(ADDRESS, i, a.allocateFrom(options.get(i)));
                }
                int r = (int) nvrtcCompileProgram.invokeExact(prog, options.size(), opts);
                if (r != 0) {
                    check(r, "nvrtcCompileProgram(" + name + ", " + String.join(" ", options) + ")", log(prog, a));
                }
                MemorySegment size = a.allocate(JAVA_LONG);
                check((int) nvrtcGetCUBINSize.invokeExact(prog, size), "nvrtcGetCUBINSize", null);
                MemorySegment cubin = a.allocate(size.get(JAVA_LONG, 0));
                check((int) nvrtcGetCUBIN.invokeExact(prog, cubin), "nvrtcGetCUBIN", null);
                return cubin.toArray(JAVA_BYTE);
            } finally {
                int ignored = (int) nvrtcDestroyProgram.invokeExact(progSlot);
            }
        } catch (BackendException e) {
            throw e;
        } catch (Throwable t) {
            throw unexpected("nvrtc", t);
        }
    }

    private String log(MemorySegment prog, Arena a) throws Throwable {
        MemorySegment size = a.allocate(JAVA_LONG);
        if ((int) nvrtcGetProgramLogSize.invokeExact(prog, size) != 0) {
            return "(no log)";
        }
        MemorySegment log = a.allocate(Math.max(1, size.get(JAVA_LONG, 0)));
        if ((int) nvrtcGetProgramLog.invokeExact(prog, log) != 0) {
            return "(no log)";
        }
        return log.getString(0);
    }

    private void check(int result, String call, String log) throws BackendException {
        if (result != 0) {
            String text;
            try {
                text = NativeLibrary.cString((MemorySegment) nvrtcGetErrorString.invokeExact(result));
            } catch (Throwable t) {
                text = "nvrtcResult " + result;
            }
            throw new BackendException(call + " failed: " + text + (log == null ? "" : "\n" + log));
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
}
