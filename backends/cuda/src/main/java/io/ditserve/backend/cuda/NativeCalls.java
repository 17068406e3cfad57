package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_INT;
import static java.lang.foreign.ValueLayout.JAVA_LONG;

import io.ditserve.backend.BackendException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.util.function.IntFunction;

/**
 * The one shape of every binding wrapper ({@link CudaDriver}, {@link Cublas}, {@link Nvrtc}, {@link NativeLibrary}):
 * invoke a downcall handle, turn what {@code invokeExact} declares ({@code Throwable}) into what can really happen,
 * check the returned status, and read an out-parameter.
 *
 * <p>A downcall throws only what the Java side throws (a wrong argument type is a {@code WrongMethodTypeException},
 * an unchecked exception; native code cannot throw into Java); so {@link #invoke} passes runtime exceptions and
 * errors on as they are and wraps anything else, which would be a bug, in an {@link IllegalStateException} naming the
 * call. A non-zero status becomes a {@link BackendException} "CALL failed: DESCRIPTION", the description from the
 * library's own status text.
 */
final class NativeCalls {
    /** A downcall returning a status (CUresult, cublasStatus_t, nvrtcResult). */
    @FunctionalInterface
    interface Status {
        int call() throws Throwable;
    }

    /** A downcall writing its result to {@code out}, with {@code arena} for other arguments (names, strings). */
    @FunctionalInterface
    interface Out {
        int call(MemorySegment out, Arena arena) throws Throwable;
    }

    /** Any downcall, returning what the native function returns. */
    @FunctionalInterface
    interface Native<T> {
        T call() throws Throwable;
    }

    private final IntFunction<String> describe;

    /** {@code describe}: the library's text for a non-zero status. */
    NativeCalls(IntFunction<String> describe) {
        this.describe = describe;
    }

    /** Runs a downcall; see the class comment for what it throws. */
    static <T> T invoke(String call, Native<T> c) {
        try {
            return c.call();
        } catch (RuntimeException | Error e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException(call, t);
        }
    }

    /** "CALL failed: DESCRIPTION" for a non-zero status. */
    String failure(int status, String call) {
        return call + " failed: " + describe.apply(status);
    }

    /** Throws "CALL failed: DESCRIPTION" for a non-zero status. */
    void check(int status, String call) throws BackendException {
        if (status != 0) {
            throw new BackendException(failure(status, call));
        }
    }

    /** Runs a downcall and checks its status. */
    void call(String call, Status c) throws BackendException {
        check(invoke(call, c::call), call);
    }

    /** Runs a downcall that writes an int (a count, a version, a CUdevice) and returns it. */
    int outInt(String call, Out c) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            return out(call, c, a, JAVA_INT).get(JAVA_INT, 0);
        }
    }

    /** Runs a downcall that writes a 64-bit value (a size_t, a CUdeviceptr) and returns it. */
    long outLong(String call, Out c) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            return out(call, c, a, JAVA_LONG).get(JAVA_LONG, 0);
        }
    }

    /** Runs a downcall that writes a handle (CUcontext, CUstream, CUmodule, a cuBLAS handle) and returns it. */
    MemorySegment outAddress(String call, Out c) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            return out(call, c, a, ADDRESS).get(ADDRESS, 0);
        }
    }

    private MemorySegment out(String call, Out c, Arena a, MemoryLayout layout) throws BackendException {
        MemorySegment slot = a.allocate(layout);
        check(invoke(call, () -> c.call(slot, a)), call);
        return slot;
    }
}
