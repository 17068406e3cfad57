package io.ditserve.server.engine;

import io.ditserve.backend.StepCache;

/**
 * A generation's step-caching schedule (docs/STEP_CACHE.md): with interval k, the steps numbered 0, k, 2k, … (0 is
 * the first step taken) and the last step run every transformer block; the steps between skip blocks 1..depth−1
 * and reuse the residual those blocks added at the last step that ran them. Interval 0 is off.
 *
 * @param interval 0 (off) or ≥ 1 (1 runs every block at every step, like off)
 */
public record StepCaching(int interval) {
    public static final StepCaching OFF = new StepCaching(0);

    public StepCaching {
        if (interval < 0) {
            throw new IllegalArgumentException("interval " + interval + " < 0");
        }
    }

    public boolean enabled() {
        return interval > 0;
    }

    /** Whether step number {@code step} (0-based) of {@code steps} runs every block. */
    public boolean runsAllBlocks(int step, int steps) {
        return !enabled() || step % interval == 0 || step == steps - 1;
    }

    /**
     * What sample rows of step {@code step} do with the cached span: RUN when caching is off or no later step
     * reuses the result (the last step), STORE on the other steps that run every block, REUSE between.
     */
    public StepCache.Use use(int step, int steps) {
        if (!enabled() || step == steps - 1) {
            return StepCache.Use.RUN;
        }
        return runsAllBlocks(step, steps) ? StepCache.Use.STORE : StepCache.Use.REUSE;
    }

    /** Transformer-block evaluations per sample row over {@code steps} steps of a model with {@code depth} blocks. */
    public long blockEvaluations(int steps, int depth) {
        long total = 0;
        for (int s = 0; s < steps; s++) {
            total += runsAllBlocks(s, steps) ? depth : Math.min(depth, StepCache.FIRST_CACHED_BLOCK);
        }
        return total;
    }
}
