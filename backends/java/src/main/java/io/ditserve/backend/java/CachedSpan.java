package io.ditserve.backend.java;

import io.ditserve.backend.StepCache;

/**
 * Step caching (docs/STEP_CACHE.md) as both compute paths do it: after block 0 the samples that run the cached span
 * are moved to the front of the batch ({@link #order}, {@link #gather}), the span runs on those only, and then
 * {@link #finish} applies the cache rule to every sample before {@link #scatter} restores the batch order. Rows of
 * a sample are independent of their position in the batch, so the reordering changes no bit of any sample.
 */
final class CachedSpan {
    private CachedSpan() {}

    /** Fills perm with the samples that run the span (in batch order), then those that reuse; returns how many run. */
    static int order(StepCache cache, int n, int[] perm) {
        int m = 0;
        for (int b = 0; b < n; b++) {
            if (cache.use(b) != StepCache.Use.REUSE) {
                perm[m++] = b;
            }
        }
        int k = m;
        for (int b = 0; b < n; b++) {
            if (cache.use(b) == StepCache.Use.REUSE) {
                perm[k++] = b;
            }
        }
        return m;
    }

    /** dst row k = src row perm[k], for k &lt; n (rows of {@code width} floats). */
    static void gather(float[] src, int[] perm, int n, int width, float[] dst) {
        for (int k = 0; k < n; k++) {
            System.arraycopy(src, perm[k] * width, dst, k * width, width);
        }
    }

    /** dst row perm[k] = src row k, for k &lt; n. */
    static void scatter(float[] src, int[] perm, int n, int width, float[] dst) {
        for (int k = 0; k < n; k++) {
            System.arraycopy(src, k * width, dst, perm[k] * width, width);
        }
    }

    /** Before the span, x in gathered order: each storing sample's residual array takes a copy of its rows. */
    static void beforeSpan(StepCache cache, int[] perm, int m, float[] x, int width) {
        for (int k = 0; k < m; k++) {
            if (cache.use(perm[k]) == StepCache.Use.STORE) {
                System.arraycopy(x, k * width, cache.residual(perm[k]), 0, width);
            }
        }
    }

    /**
     * After the span (which ran on the first m samples): a storing sample's residual becomes x_after − x_before;
     * a reusing sample's rows become x_before + residual.
     */
    static void finish(StepCache cache, int[] perm, int n, int m, float[] x, int width) {
        for (int k = 0; k < n; k++) {
            StepCache.Use use = cache.use(perm[k]);
            if (use == StepCache.Use.RUN) {
                continue;
            }
            float[] r = cache.residual(perm[k]);
            int off = k * width;
            if (use == StepCache.Use.STORE) {
                for (int i = 0; i < width; i++) {
                    r[i] = x[off + i] - r[i];
                }
            } else {
                for (int i = 0; i < width; i++) {
                    x[off + i] += r[i];
                }
            }
        }
    }
}
