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

    /** The N + 1 grid points of {@code steps} steps of {@code sampler}, shifted. */
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
        return shift == 1.0 ? s : shift * s / (1.0 + (shift - 1.0) * s);
    }
}
