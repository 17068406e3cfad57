package io.ditserve.backend;

import java.util.Arrays;

/** The argument checks every {@link Backend#forward} implementation makes, in one place. */
public final class ForwardArguments {

    private ForwardArguments() {}

    /**
     * Checks x [N, C_in, H, W], out [N, C_out, H, W], N timesteps in 0..999 and N labels in 0..num_classes.
     *
     * @return the batch size N
     * @throws IllegalArgumentException naming the argument and what was expected
     */
    public static int check(ModelSpec spec, Tensor x, int[] t, int[] y, Tensor out) {
        int n = x.rank() == 4 ? x.dim(0) : -1;
        int size = spec.inputSize();
        checkShape("x", x, n, spec.inChannels(), size, size);
        checkShape("out", out, n, spec.outChannels(), size, size);
        if (t.length != n || y.length != n) {
            throw new IllegalArgumentException("batch of " + n + " needs " + n + " timesteps and labels, got "
                    + t.length + " and " + y.length);
        }
        for (int i = 0; i < n; i++) {
            if (t[i] < 0 || t[i] >= DitConstants.NUM_TIMESTEPS) {
                throw new IllegalArgumentException("t[" + i + "] = " + t[i] + " is outside 0.." + (DitConstants.NUM_TIMESTEPS - 1));
            }
            if (y[i] < 0 || y[i] > spec.nullClass()) {
                throw new IllegalArgumentException("y[" + i + "] = " + y[i] + " is outside 0.." + spec.nullClass()
                        + " (" + spec.nullClass() + " is the null class)");
            }
        }
        return n;
    }

    private static void checkShape(String what, Tensor tensor, int n, int c, int h, int w) {
        int[] expected = {n, c, h, w};
        if (n < 0 || !Arrays.equals(tensor.shape(), expected)) {
            throw new IllegalArgumentException(what + " has shape " + Arrays.toString(tensor.shape())
                    + ", expected [N, " + c + ", " + h + ", " + w + "]");
        }
    }
}
