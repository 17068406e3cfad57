package io.ditserve.backend;

import java.util.Arrays;
import java.util.Objects;

/**
 * A dense float32 tensor in row-major (C) order: a flat array and a shape. Activations and latents are small
 * (megabytes), so a heap array is the simplest correct representation; model weights are not Tensors (backends map
 * them from the weights file).
 */
public final class Tensor {
    private final int[] shape;
    private final float[] data;

    public Tensor(float[] data, int... shape) {
        this.shape = shape.clone();
        this.data = Objects.requireNonNull(data, "data");
        long n = numel(shape);
        if (n != data.length) {
            throw new IllegalArgumentException(
                    "shape " + Arrays.toString(shape) + " needs " + n + " values, got " + data.length);
        }
    }

    public static Tensor zeros(int... shape) {
        long n = numel(shape);
        if (n > Integer.MAX_VALUE - 8) {
            throw new IllegalArgumentException("tensor too large: " + Arrays.toString(shape));
        }
        return new Tensor(new float[(int) n], shape);
    }

    private static long numel(int[] shape) {
        long n = 1;
        for (int d : shape) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in " + Arrays.toString(shape));
            }
            n *= d;
        }
        return n;
    }

    public int[] shape() {
        return shape.clone();
    }

    public int dim(int i) {
        return shape[i];
    }

    public int rank() {
        return shape.length;
    }

    /** The backing array (not a copy). */
    public float[] data() {
        return data;
    }

    public int size() {
        return data.length;
    }

    /** Number of values per index of the first dimension. */
    public int stride0() {
        return shape.length == 0 || shape[0] == 0 ? 0 : data.length / shape[0];
    }

    public Tensor copy() {
        return new Tensor(data.clone(), shape);
    }

    /** Largest absolute value, 0 for an empty tensor. */
    public float maxAbs() {
        float m = 0;
        for (float v : data) {
            m = Math.max(m, Math.abs(v));
        }
        return m;
    }

    @Override
    public String toString() {
        return "Tensor" + Arrays.toString(shape);
    }
}
