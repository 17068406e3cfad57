package io.ditserve.backend;

import java.util.Arrays;
import java.util.Objects;

/**
 * Step caching for one forward pass (docs/STEP_CACHE.md). Blocks 1..depth−1 are the <em>cached span</em>; block 0,
 * the embeddings and the final layer always run with each sample's own t and y. Per sample, the span is
 * <ul>
 *   <li>{@link Use#RUN}: run as usual (no residual is read or written);
 *   <li>{@link Use#STORE}: run, and write {@code residual = h_after_span − h_before_span} into the sample's array;
 *   <li>{@link Use#REUSE}: skipped: the sample continues with {@code h_before_span + residual}.
 * </ul>
 * A sample that runs the span continues with {@code h_after_span} itself, so its output does not depend on whether
 * it stores. The residual arrays ([tokens, hidden] row-major, {@link #residualLength}) belong to the caller, which
 * keeps one per sample row between steps; backends keep no state between passes.
 */
public final class StepCache {
    /** The first block of the cached span; the span ends with the last block. */
    public static final int FIRST_CACHED_BLOCK = 1;

    public enum Use { RUN, STORE, REUSE }

    private final Use[] uses;
    private final float[][] residuals;

    /**
     * @param uses one per sample of the batch
     * @param residuals one per sample; may be null where the use is {@link Use#RUN}
     */
    public StepCache(Use[] uses, float[][] residuals) {
        this.uses = Objects.requireNonNull(uses, "uses");
        this.residuals = Objects.requireNonNull(residuals, "residuals");
        if (uses.length != residuals.length) {
            throw new IllegalArgumentException(uses.length + " uses but " + residuals.length + " residuals");
        }
    }

    /** Floats of one sample's residual: tokens × hidden. */
    public static int residualLength(ModelSpec spec) {
        return spec.tokens() * spec.hiddenSize();
    }

    /** Whether a model has a span to cache (depth ≥ 2). */
    public static boolean cacheable(ModelSpec spec) {
        return spec.depth() > FIRST_CACHED_BLOCK;
    }

    public int size() {
        return uses.length;
    }

    public Use use(int sample) {
        return uses[sample];
    }

    public float[] residual(int sample) {
        return residuals[sample];
    }

    /** Whether every sample runs the span without storing: the pass is a plain forward pass. */
    public boolean plain() {
        for (Use u : uses) {
            if (u != Use.RUN) {
                return false;
            }
        }
        return true;
    }

    /** How many samples run the span. */
    public int running() {
        int m = 0;
        for (Use u : uses) {
            m += u == Use.REUSE ? 0 : 1;
        }
        return m;
    }

    /**
     * Checks the cache against a batch of {@code n} samples of {@code spec}.
     *
     * @throws IllegalArgumentException naming what is wrong
     */
    public void check(ModelSpec spec, int n) {
        if (uses.length != n) {
            throw new IllegalArgumentException("step cache for " + uses.length + " samples, batch of " + n);
        }
        if (!plain() && !cacheable(spec)) {
            throw new IllegalArgumentException("model " + spec.name() + " has depth " + spec.depth()
                    + ": step caching needs at least 2 blocks");
        }
        int len = residualLength(spec);
        for (int i = 0; i < n; i++) {
            Objects.requireNonNull(uses[i], "use of sample " + i);
            if (uses[i] != Use.RUN && (residuals[i] == null || residuals[i].length != len)) {
                throw new IllegalArgumentException("residual of sample " + i + " has "
                        + (residuals[i] == null ? "no array" : residuals[i].length + " floats") + ", expected "
                        + len + " (tokens × hidden)");
            }
        }
    }

    @Override
    public String toString() {
        return "StepCache" + Arrays.toString(uses);
    }
}
