package io.ditserve.server.sampling;

import io.ditserve.backend.Sampler;

/**
 * The noise levels a flow solver steps through, in double, as the reference computes them (docs/MODEL_FAMILIES.md):
 * s_i = 1 − i/N for i = 0..N (Euler, Heun, DPM-Solver++), or linspace(1, 0.04, N) followed by 0 (Euler–Maruyama,
 * whose last step is its mean), each point then shifted: s ↦ shift·s / (1 + (shift − 1)·s) (shift 1: unchanged).
 */
public final class FlowGrid {
    /** Where Euler–Maruyama's stochastic steps end; the last step goes from here to 0 without noise. */
    public static final double SDE_LAST = 0.04;

    private FlowGrid() {}

    /** Train steps of diffusers' FlowMatchEulerDiscreteScheduler (SD3's scheduler_config num_train_timesteps). */
    public static final int FLOW_MATCH_TRAIN_STEPS = 1000;

    /** The N + 1 grid points of {@code steps} steps of {@code sampler} on the model's grid kind. */
    public static double[] of(Sampler sampler, int steps, double shift, io.ditserve.backend.ModelSpec.Grid grid) {
        if (grid == io.ditserve.backend.ModelSpec.Grid.FLOW_MATCH_EULER && sampler != Sampler.EULER_MARUYAMA) {
            return flowMatchEuler(steps, shift, FLOW_MATCH_TRAIN_STEPS);
        }
        return of(sampler, steps, shift);
    }

    /**
     * diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps(N) as SD3's pipeline calls it (docs/TEXT_MODELS.md):
     * training sigmas i/T for i = T..1 shifted (σ_max = 1, σ_min = shift(1/T)), then linspace(σ_max·T, σ_min·T, N)/T
     * shifted again, and 0 appended. Float32 as diffusers' tensors: every shift is computed in float32 (the constant
     * shift − 1 in double first, as Python does), the linspace in double then rounded to float32; the values are
     * returned as doubles holding those float32 values, so σ·1000 and the step sizes come out as in the reference
     * (tools/sd3/scheduler.py).
     */
    public static double[] flowMatchEuler(int steps, double shift, int trainSteps) {
        float sigmaMax = shift32(1f, shift);
        float sigmaMin = shift32((float) 1 / (float) trainSteps, shift);
        double start = sigmaMax * (double) trainSteps;
        double end = sigmaMin * (double) trainSteps;
        double[] s = new double[steps + 1];
        for (int i = 0; i < steps; i++) {
            double t = steps == 1 ? start : i == steps - 1 ? end : start + i * ((end - start) / (steps - 1));
            s[i] = shift32((float) (t / trainSteps), shift);
        }
        s[steps] = 0.0;
        return s;
    }

    /** shift·σ / (1 + (shift − 1)·σ) in float32, the way torch evaluates it on a float32 tensor. */
    private static float shift32(float sigma, double shift) {
        float num = (float) shift * sigma;
        float den = 1f + (float) (shift - 1.0) * sigma;
        return num / den;
    }

    /** The N + 1 grid points of {@code steps} steps of {@code sampler} on the uniform grid, shifted. */
    public static double[] of(Sampler sampler, int steps, double shift) {
        double[] s = new double[steps + 1];
        if (sampler == Sampler.EULER_MARUYAMA) {
            for (int i = 0; i < steps; i++) {
                // numpy.linspace(1, 0.04, N): start + i·step, the last value exactly the end
                s[i] = steps == 1 ? 1.0 : i == steps - 1 ? SDE_LAST : 1.0 + i * ((SDE_LAST - 1.0) / (steps - 1));
            }
            s[steps] = 0.0;
        } else {
            for (int i = 0; i <= steps; i++) {
                s[i] = 1.0 - (double) i / steps;
            }
        }
        for (int i = 0; i <= steps; i++) {
            s[i] = shift(s[i], shift);
        }
        return s;
    }

    /** The timestep shift of SD3 and LightningDiT applied to one noise level. */
    public static double shift(double s, double shift) {
        // the ends stay exactly 1 and 0 (the formula gives 0.9999999999999998 at shift 1/0.3, which would hide the
        // pure-noise start from DPM-Solver++'s first-step rule)
        return shift == 1.0 || s == 0.0 || s == 1.0 ? s : shift * s / (1.0 + (shift - 1.0) * s);
    }
}
