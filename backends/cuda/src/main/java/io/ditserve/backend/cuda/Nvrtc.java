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

    private final NativeCalls calls = new NativeCalls(this::describe);
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
            calls.call("nvrtcVersion", () -> (int) nvrtcVersion.invokeExact(major, minor));
            return major.get(JAVA_INT, 0) + "." + minor.get(JAVA_INT, 0);
        }
    }

    /**
     * Compiles {@code source} (named {@code name} in messages) to a cubin with {@code options}; a compile error
     * throws with NVRTC's log.
     */
    byte[] compileToCubin(String source, String name, List<String> options) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            MemorySegment prog = calls.outAddress("nvrtcCreateProgram", (slot, arena) -> (int) nvrtcCreateProgram
                    .invokeExact(slot, arena.allocateFrom(source), arena.allocateFrom(name), 0, MemorySegment.NULL,
                            MemorySegment.NULL));
            try {
                MemorySegment opts = a.allocate(ADDRESS, options.size());
                for (int i = 0; i < options.size(); i++) {
                    opts.setAtIndex(ADDRESS, i, a.allocateFrom(options.get(i)));
                }
                String call = "nvrtcCompileProgram(" + name + ", " + String.join(" ", options) + ")";
                int r = NativeCalls.invoke(call, () -> (int) nvrtcCompileProgram.invokeExact(prog, options.size(),
                        opts));
                if (r != 0) {
                    throw new BackendException(calls.failure(r, call) + "\n" + log(prog));
                }
                long size = calls.outLong("nvrtcGetCUBINSize",
                        (v, arena) -> (int) nvrtcGetCUBINSize.invokeExact(prog, v));
                MemorySegment cubin = a.allocate(size);
                calls.call("nvrtcGetCUBIN", () -> (int) nvrtcGetCUBIN.invokeExact(prog, cubin));
                return cubin.toArray(JAVA_BYTE);
            } finally {
                MemorySegment slot = a.allocateFrom(ADDRESS, prog);
                int ignored = NativeCalls.invoke("nvrtcDestroyProgram",
                        () -> (int) nvrtcDestroyProgram.invokeExact(slot));
            }
        }
    }

    /** NVRTC's log of a program's compilation, or "(no log)". */
    private String log(MemorySegment prog) {
        try (Arena a = Arena.ofConfined()) {
            long size = calls.outLong("nvrtcGetProgramLogSize",
                    (v, arena) -> (int) nvrtcGetProgramLogSize.invokeExact(prog, v));
            MemorySegment log = a.allocate(Math.max(1, size));
            calls.call("nvrtcGetProgramLog", () -> (int) nvrtcGetProgramLog.invokeExact(prog, log));
            return log.getString(0);
        } catch (BackendException e) {
            return "(no log)";
        }
    }

    /** NVRTC's text for an nvrtcResult. */
    private String describe(int result) {
        try {
            return NativeLibrary.cString(NativeCalls.invoke("nvrtcGetErrorString",
                    () -> (MemorySegment) nvrtcGetErrorString.invokeExact(result)));
        } catch (RuntimeException e) {
            return "nvrtcResult " + result;
        }
    }
}
