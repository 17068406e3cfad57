package io.ditserve.backend.cuda;

/**
 * The arguments of one kernel launch: {@link #reset(Kernel)} names the kernel, then a chain of {@link #ptr},
 * {@link #i32} and {@link #f32} calls gives its arguments in order; reused from launch to launch (no allocation per
 * launch).
 *
 * <p>This is the one place where launch arguments are checked against the kernel's CUDA parameter list
 * ({@link Kernel}): each argument's kind when it is added, and the count when a launch reads {@link #kernel()}, which
 * every {@link DitOps#launch} does first. A wrong count or kind fails in Java with the kernel's name and parameter
 * list instead of corrupting a launch.
 */
final class KernelArgs {
    /** The most parameters of any kernel. */
    static final int MAX_ARGS = 16;

    private final long[] values = new long[MAX_ARGS];
    private Kernel kernel;
    private int count;

    /** Starts the arguments of a launch of {@code k}; returns this for chaining. */
    KernelArgs reset(Kernel k) {
        if (k.arity() > MAX_ARGS) {
            throw new IllegalArgumentException("kernel " + k.symbol + " has more than " + MAX_ARGS + " parameters");
        }
        kernel = k;
        count = 0;
        return this;
    }

    /** A device pointer. */
    KernelArgs ptr(DevicePtr p) {
        return add(Kernel.ArgKind.POINTER, p.address());
    }

    KernelArgs i32(int value) {
        return add(Kernel.ArgKind.INT, value);
    }

    KernelArgs f32(float value) {
        return add(Kernel.ArgKind.FLOAT, Float.floatToRawIntBits(value));
    }

    private KernelArgs add(Kernel.ArgKind kind, long value) {
        if (kernel == null) {
            throw new IllegalStateException("kernel arguments before reset(kernel)");
        }
        if (count == kernel.arity()) {
            throw mismatch("more than " + kernel.arity() + " arguments");
        }
        if (kernel.kind(count) != kind) {
            throw mismatch("argument " + count + " is " + kind + ", the parameter is " + kernel.kind(count));
        }
        values[count++] = value;
        return this;
    }

    private IllegalStateException mismatch(String what) {
        return new IllegalStateException("kernel " + kernel.symbol + "(" + kernel.parameters + "): " + what);
    }

    /** The kernel to launch; throws unless every one of its parameters has an argument. */
    Kernel kernel() {
        if (kernel == null) {
            throw new IllegalStateException("no kernel: reset(kernel) was not called");
        }
        if (count != kernel.arity()) {
            throw mismatch("launched with " + count + " of its " + kernel.arity() + " arguments");
        }
        return kernel;
    }

    int count() {
        return count;
    }

    /** The kind of argument i (that of the kernel's parameter i). */
    Kernel.ArgKind kind(int i) {
        return kernel.kind(i);
    }

    /** The pointer or int value of argument i; for a float argument its raw bits (see {@link #floatValue}). */
    long value(int i) {
        return values[i];
    }

    /** A pointer argument as a device address. */
    DevicePtr pointer(int i) {
        return new DevicePtr(values[i]);
    }

    int intValue(int i) {
        return (int) values[i];
    }

    float floatValue(int i) {
        return Float.intBitsToFloat((int) values[i]);
    }
}
