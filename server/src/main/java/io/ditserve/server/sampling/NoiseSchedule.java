package io.ditserve.server.sampling;

import java.util.Arrays;

/**
 * The DiT noise schedule (linear betas 1e-4..0.02 over 1000 steps) respaced to N sampling steps, with every
 * coefficient the samplers need. Computed in double, as the reference does; the samplers cast each coefficient to
 * float before it touches a tensor value, so Java and PyTorch trajectories agree step by step.
 *
 * <p>Index i runs over the kept timesteps in ascending order; sampling goes from i = N−1 down to 0 and calls the
 * model with the ORIGINAL timestep {@code timesteps[i]}.
 */
public final class NoiseSchedule {
    public static final int TRAIN_STEPS = io.ditserve.backend.DitConstants.NUM_TIMESTEPS;
    public static final double BETA_START = 1e-4;
    public static final double BETA_END = 0.02;

    final int[] timesteps;
    final double[] betas;
    final double[] alphasCumprod;
    final double[] alphasCumprodPrev;
    final double[] sqrtRecipAc;
    final double[] sqrtRecipm1Ac;
    final double[] postCoef1;
    final double[] postCoef2;
    final double[] postLogVarClipped;
    final double[] logBetas;

    private NoiseSchedule(int[] timesteps) {
        double[] base = trainAlphasCumprod();
        int n = timesteps.length;
        this.timesteps = timesteps;
        betas = new double[n];
        double last = 1.0;
        for (int i = 0; i < n; i++) {
            betas[i] = 1.0 - base[timesteps[i]] / last;
            last = base[timesteps[i]];
        }
        alphasCumprod = new double[n];
        alphasCumprodPrev = new double[n];
        double acc = 1.0;
        for (int i = 0; i < n; i++) {
            alphasCumprodPrev[i] = acc;
            acc *= 1.0 - betas[i];
            alphasCumprod[i] = acc;
        }
        sqrtRecipAc = new double[n];
        sqrtRecipm1Ac = new double[n];
        postCoef1 = new double[n];
        postCoef2 = new double[n];
        postLogVarClipped = new double[n];
        logBetas = new double[n];
        double[] postVar = new double[n];
        for (int i = 0; i < n; i++) {
            double a = alphasCumprod[i];
            double ap = alphasCumprodPrev[i];
            double b = betas[i];
            sqrtRecipAc[i] = Math.sqrt(1.0 / a);
            sqrtRecipm1Ac[i] = Math.sqrt(1.0 / a - 1.0);
            postVar[i] = b * (1.0 - ap) / (1.0 - a);
            postCoef1[i] = b * Math.sqrt(ap) / (1.0 - a);
            postCoef2[i] = (1.0 - ap) * Math.sqrt(1.0 - b) / (1.0 - a);
            logBetas[i] = Math.log(b);
        }
        for (int i = 0; i < n; i++) {
            // the posterior variance is 0 at i = 0; the reference uses the value at i = 1 there ("clipped")
            postLogVarClipped[i] = n == 1 ? Math.log(betas[0]) : Math.log(i == 0 ? postVar[1] : postVar[i]);
        }
    }

    /** ᾱ of the 1000-step training schedule. */
    public static double[] trainAlphasCumprod() {
        double[] ac = new double[TRAIN_STEPS];
        double acc = 1.0;
        for (int i = 0; i < TRAIN_STEPS; i++) {
            // numpy.linspace: start + i·step, with the last value exactly the end
            double beta = i == TRAIN_STEPS - 1 ? BETA_END
                    : BETA_START + i * ((BETA_END - BETA_START) / (TRAIN_STEPS - 1));
            acc *= 1.0 - beta;
            ac[i] = acc;
        }
        return ac;
    }

    /**
     * The kept timesteps for N sampling steps: a double accumulator starting at 0.0 stepped by 999/(N−1), each
     * value rounded half to even (N = 1 keeps only 0). Accumulating matters: it differs from rounding k·999/(N−1).
     */
    public static int[] respace(int steps) {
        if (steps < 1 || steps > TRAIN_STEPS) {
            throw new IllegalArgumentException("steps must be in 1.." + TRAIN_STEPS + ", got " + steps);
        }
        if (steps == 1) {
            return new int[] {0};
        }
        double stride = (TRAIN_STEPS - 1) / (double) (steps - 1);
        double cur = 0.0;
        int[] kept = new int[steps];
        for (int k = 0; k < steps; k++) {
            kept[k] = (int) Math.rint(cur);
            cur += stride;
        }
        return kept;
    }

    public static NoiseSchedule respaced(int steps) {
        return new NoiseSchedule(respace(steps));
    }

    public int size() {
        return timesteps.length;
    }

    /** Original-schedule timestep of sampling index i. */
    public int timestep(int i) {
        return timesteps[i];
    }

    public int[] timesteps() {
        return timesteps.clone();
    }

    public double alphaCumprod(int i) {
        return alphasCumprod[i];
    }

    @Override
    public String toString() {
        return "NoiseSchedule" + Arrays.toString(timesteps);
    }
}
