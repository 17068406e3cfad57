package io.ditserve.backend.java;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/**
 * Zeroed native memory from the C library ({@code calloc}), freed ({@code free}) once the segment is unreachable,
 * for the weights kept off the heap ({@link Panels}, {@link Table}).
 *
 * <p>Why not {@code Arena.allocate}: the JDK counts that memory against {@code -XX:MaxDirectMemorySize}, which
 * defaults to the maximum heap size; SD3-medium's 15 GB of BF16 weights then failed to load in a JVM with a 3 GB heap
 * ("Cannot reserve … bytes of direct buffer memory"), although the heap only needs to hold activations. Memory
 * from the C library has no such cap: the limit is the machine's.
 */
final class NativeMemory {
    private static final MethodHandle CALLOC;
    private static final MethodHandle FREE;

    static {
        Linker linker = Linker.nativeLinker();
        var libc = linker.defaultLookup();
        CALLOC = linker.downcallHandle(libc.find("calloc").orElseThrow(),
                FunctionDescriptor.of(ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG));
        FREE = linker.downcallHandle(libc.find("free").orElseThrow(), FunctionDescriptor.ofVoid(ValueLayout.ADDRESS));
    }

    private NativeMemory() {}

    /** {@code bytes} zeroed bytes, returned to the C library when the segment becomes unreachable. */
    static MemorySegment zeroed(long bytes) {
        MemorySegment p;
        try {
            p = (MemorySegment) CALLOC.invokeExact(1L, Math.max(1L, bytes));
        } catch (Throwable t) {
            throw new IllegalStateException("calloc failed", t);
        }
        if (p.equals(MemorySegment.NULL)) {
            throw new OutOfMemoryError("calloc: cannot allocate " + bytes + " bytes of native memory for weights");
        }
        return p.reinterpret(bytes, Arena.ofAuto(), NativeMemory::free);
    }

    private static void free(MemorySegment p) {
        try {
            FREE.invokeExact(p);
        } catch (Throwable t) {
            throw new IllegalStateException("free failed", t);
        }
    }
}
