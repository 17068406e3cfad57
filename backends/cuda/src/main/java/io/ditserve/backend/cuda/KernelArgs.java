package io.ditserve.backend.cuda;

import java.util.Arrays;

/**
 * The arguments of one kernel launch, built with a chain of {@link #ptr}, {@link #i32} and {@link #f32} calls and
 * reused from launch to launch (no allocation per launch). {@link #check} compares them with the kernel's CUDA
 * parameter list, so a wrong count or kind fails in Java with the kernel's name instead of corrupting a launch.
 */
final class KernelArgs {
    static final int MAX_ARGS = 16;

    private final Kernel.ArgKind[] kinds = new Kernel.ArgKind[MAX_ARGS];
    private final long[] values = new long[MAX_ARGS];
    private int count;

    /** Clears the arguments; returns this for chaining. */
    KernelArgs reset() {
        count = 0;
        return this;
    }

    /** A device pointer. */
    KernelArgs ptr(long address) {
        return add(Kernel.ArgKind.POINTER, address);
    }

    KernelArgs i32(int value) {
        return add(Kernel.ArgKind.INT, value);
    }

    KernelArgs f32(float value) {
        return add(Kernel.ArgKind.FLOAT, Float.floatToRawIntBits(value));
    }

    private KernelArgs add(Kernel.ArgKind kind, long value) {
        if (count == MAX_ARGS) {
            throw new IllegalStateException("more than " + MAX_ARGS + " kernel arguments");
        }
        kinds[count] = kind;
        values[count++] = value;
        return this;
    }

    int count() {
        return count;
    }

    Kernel.ArgKind kind(int i) {
        return kinds[i];
    }

    /** The pointer or int value of argument i; for a float argument its raw bits (see {@link #floatValue}). */
    long value(int i) {
        return values[i];
    }

    int intValue(int i) {
        return (int) values[i];
    }

    float floatValue(int i) {
        return Float.intBitsToFloat((int) values[i]);
    }

    /** Throws if the arguments do not match the kernel's parameter list. */
    void check(Kernel k) {
        boolean ok = count == k.arity();
        for (int i = 0; ok && i < count; i++) {
            ok = kinds[i] == k.kind(i);
        }
        if (!ok) {
            throw new IllegalStateException("kernel " + k.symbol + "(" + k.parameters + ") launched with arguments "
                    + Arrays.toString(Arrays.copyOf(kinds, count)));
        }
    }
}
