package io.ditserve.backend;

import java.util.Arrays;
import java.util.Objects;

/**
 * The inputs of one forward pass over a batch of N samples, each with its own time and conditioning, so that a
 * caller may mix requests, solver stages and guidance halves in one pass.
 *
 * @param x the noisy samples [N, C_in, H, W]
 * @param time per sample, the exact value the network's timestep embedder receives, as the model's family defines
 *     it ({@link ModelSpec.Process#networkTime}): the integer timestep 0..999 of DiT as a float, τ ∈ [0, 1] for SiT
 *     and REPA (docs/MODEL_FAMILIES.md)
 * @param conditioning per sample
 * @param cache step caching (docs/STEP_CACHE.md); null for a plain pass
 */
public record ForwardBatch(Tensor x, float[] time, Conditioning conditioning, StepCache cache) {

    public ForwardBatch {
        Objects.requireNonNull(x, "x");
        Objects.requireNonNull(time, "time");
        Objects.requireNonNull(conditioning, "conditioning");
    }

    /** A class-conditional pass without step caching. */
    public static ForwardBatch ofLabels(Tensor x, float[] time, int[] labels) {
        return new ForwardBatch(x, time, new Conditioning.ClassLabels(labels), null);
    }

    /** The same batch with step caching. */
    public ForwardBatch withCache(StepCache c) {
        return new ForwardBatch(x, time, conditioning, c);
    }

    /** Whether the pass runs every block of every sample (no cache, or a plain one). */
    public boolean plain() {
        return cache == null || cache.plain();
    }

    /** The class ids; an IllegalArgumentException for other conditioning kinds. */
    public int[] labels() {
        if (conditioning instanceof Conditioning.ClassLabels c) {
            return c.ids();
        }
        throw new IllegalArgumentException("this pass is conditioned on " + conditioning.getClass().getSimpleName()
                + ", not on class labels");
    }

    /**
     * Checks the batch against the model and the output: x [N, C_in, H, W], out [N, C_out, H, W], N finite times in
     * the family's range, N conditionings of the kind the model takes, each in range, and the step cache.
     *
     * @return the batch size N
     * @throws IllegalArgumentException naming the argument and what was expected
     */
    public int check(ModelSpec spec, Tensor out) {
        int n = x.rank() == 4 ? x.dim(0) : -1;
        int size = spec.inputSize();
        checkShape("x", x, n, spec.inChannels(), size, size);
        checkShape("out", out, n, spec.outChannels(), size, size);
        if (time.length != n || conditioning.size() != n) {
            throw new IllegalArgumentException("batch of " + n + " needs " + n + " times and conditionings, got "
                    + time.length + " and " + conditioning.size());
        }
        ModelSpec.Process p = spec.process();
        for (int i = 0; i < n; i++) {
            if (!(time[i] >= p.minTime() && time[i] <= p.maxTime())) { // also false for NaN
                throw new IllegalArgumentException("time[" + i + "] = " + time[i] + " is outside " + p.minTime()
                        + ".." + p.maxTime() + " (" + p.timeInput().configName() + ")");
            }
        }
        switch (conditioning) {
            case Conditioning.ClassLabels c -> {
                if (spec.text() != null) {
                    throw new IllegalArgumentException("model " + spec.name() + " is conditioned on text, not on"
                            + " class labels");
                }
                for (int i = 0; i < n; i++) {
                    int y = c.ids()[i];
                    if (y < 0 || y > spec.nullClass()) {
                        throw new IllegalArgumentException("y[" + i + "] = " + y + " is outside 0.." + spec.nullClass()
                                + " (" + spec.nullClass() + " is the null class)");
                    }
                }
            }
            case Conditioning.TextEmbeddings e -> {
                ModelSpec.TextConditioning tc = spec.text();
                if (tc == null) {
                    throw new IllegalArgumentException("model " + spec.name() + " takes class labels, not text");
                }
                if (e.width() != tc.jointAttentionDim() || e.pooledWidth() != tc.pooledProjectionDim()) {
                    throw new IllegalArgumentException("text embeddings of width " + e.width() + " and pooled width "
                            + e.pooledWidth() + "; model " + spec.name() + " takes " + tc.jointAttentionDim()
                            + " and " + tc.pooledProjectionDim());
                }
            }
        }
        if (cache != null) {
            cache.check(spec, n);
        }
        return n;
    }

    /**
     * What every backend's {@link Backend#forward} checks first: that the backend is still open ({@code closed}
     * true: an IllegalStateException naming the model), then the batch ({@link #check}).
     *
     * @return the batch size N; 0 leaves nothing to compute
     */
    public int checkOpen(boolean closed, ModelSpec spec, Tensor out) {
        if (closed) {
            throw new IllegalStateException("backend for " + spec.name() + " is closed");
        }
        return check(spec, out);
    }

    private static void checkShape(String what, Tensor tensor, int n, int c, int h, int w) {
        int[] expected = {n, c, h, w};
        if (n < 0 || !Arrays.equals(tensor.shape(), expected)) {
            throw new IllegalArgumentException(what + " has shape " + Arrays.toString(tensor.shape())
                    + ", expected [N, " + c + ", " + h + ", " + w + "]");
        }
    }
}
