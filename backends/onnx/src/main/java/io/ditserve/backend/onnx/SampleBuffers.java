package io.ditserve.backend.onnx;

import io.ditserve.backend.ModelSpec;
import java.nio.FloatBuffer;

/**
 * The direct, native-order I/O buffers that every transformer pass on ONNX Runtime has ({@link OnnxDitBackend},
 * {@link OnnxMmditBackend}): x [N, C_in, H, W], the float times t [N] and out [N, C_out, H, W], sized for the
 * largest batch seen ({@link #ensure}). ONNX Runtime reads the inputs from them and writes the output into
 * them without a copy of its own. Not thread-safe: the backends use it under their own lock.
 */
final class SampleBuffers {
    private final ModelSpec spec;
    private int capacity;
    private FloatBuffer x;
    private FloatBuffer t;
    private FloatBuffer out;

    SampleBuffers(ModelSpec spec) {
        this.spec = spec;
    }

    /**
     * Grows the buffers to hold {@code n} samples unless they do already; returns whether they grew, so that a
     * backend grows its own per-sample buffers with them.
     */
    boolean ensure(int n) {
        if (n <= capacity) {
            return false;
        }
        int pixels = spec.inputSize() * spec.inputSize();
        x = OnnxRunner.directBytes(4L * n * spec.inChannels() * pixels).asFloatBuffer();
        t = OnnxRunner.directBytes(4L * n).asFloatBuffer();
        out = OnnxRunner.directBytes(4L * n * spec.outChannels() * pixels).asFloatBuffer();
        capacity = n;
        return true;
    }

    FloatBuffer x() {
        return x;
    }

    FloatBuffer t() {
        return t;
    }

    FloatBuffer out() {
        return out;
    }

    /** Drops the buffers (a closed backend's memory goes back at the next collection); a later pass regrows them. */
    void release() {
        x = null;
        t = null;
        out = null;
        capacity = 0;
    }
}
