package io.ditserve.server.sampling;

import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;

/**
 * The flow-model solvers (docs/MODEL_FAMILIES.md): Euler, Heun, Euler–Maruyama and DPM-Solver++(2M), all in the
 * noise level s of x_s = (1 − s)·x_data + s·ε on a {@link FlowGrid}. The network's output becomes the derivative
 * D = dx/ds by the family's sign ({@link ModelSpec.Process#derivativeSign}), after guidance on its raw output
 * (guidance is linear, so guiding the output or D is the same). Every step's data estimate x̂ = x − s·D, from its
 * first evaluation, is what previews show and DPM-Solver++ extrapolates.
 *
 * <p>Float32 arithmetic with grid coefficients computed in double and cast to float once per step, in the order of
 * operations of the reference (tools/dit/flow.py), so that trajectories agree with it step by step.
 *
 * <p>Guidance interval: a step is guided when its start time τ(s_i) lies inside the interval; the decision holds
 * for every evaluation of that step, and an unguided step evaluates the conditional half only.
 */
final class FlowSolver implements Solver {
    private final ModelSpec.Process process;
    private final Sampler sampler;
    private final double[] s;
    private final int steps;
    private final float guidance;
    private final io.ditserve.backend.GuidanceMode mode;
    private final ModelSpec.GuidanceInterval interval;
    private final int n;
    private final int cIn;
    private final int hw;
    private final float sign;
    private final float[] guided;
    private final float[] d1;     // Heun: D(x_i, s_i); DPM-Solver++: unused
    private final float[] stage;  // Heun: x̃ = x_i + (s_{i+1} − s_i)·D(x_i, s_i)
    private final float[] prevX0; // DPM-Solver++: the previous step's data estimate
    private boolean secondStage;
    private int lastStep = -1;

    FlowSolver(ModelSpec spec, SolverSettings settings, int n) {
        this.process = spec.process();
        this.sampler = settings.sampler();
        this.steps = settings.steps();
        this.s = FlowGrid.of(sampler, steps, settings.shift(), settings.grid());
        this.guidance = settings.guidance();
        this.mode = settings.mode();
        this.interval = settings.interval();
        this.n = n;
        this.cIn = spec.inChannels();
        this.hw = spec.inputSize() * spec.inputSize();
        this.sign = process.derivativeSign();
        int len = n * cIn * hw;
        this.guided = Guidance.active(guidance) ? new float[len] : null;
        this.d1 = sampler == Sampler.HEUN ? new float[len] : null;
        this.stage = sampler == Sampler.HEUN ? new float[len] : null;
        this.prevX0 = sampler == Sampler.DPMPP_2M ? new float[len] : null;
    }

    @Override
    public int steps() {
        return steps;
    }

    @Override
    public int evaluations() {
        return Solvers.evaluations(new SolverSettings(sampler, steps, 0f, guidance, mode, interval, 1.0));
    }

    /** Whether {@code step}'s evaluations carry the unconditional half. */
    private boolean guidedStep(int step) {
        return Guidance.active(guidance) && (interval == null || interval.contains(process.tau(s[step])));
    }

    @Override
    public Evaluation next(int step, float[] x) {
        boolean g = guidedStep(step);
        if (secondStage) {
            return new Evaluation(stage, (float) process.networkTime(s[step + 1]), g);
        }
        return new Evaluation(x, (float) process.networkTime(s[step]), g);
    }

    @Override
    public boolean needsNoise(int step) {
        return sampler == Sampler.EULER_MARUYAMA && step < steps - 1;
    }

    @Override
    public int timestep(int step) {
        return -1;
    }

    @Override
    public float time(int step) {
        return (float) process.networkTime(s[step]);
    }

    /** The network output of this evaluation with guidance applied: [n, C, H, W]. */
    private float[] raw(int step, float[] out) {
        if (!guidedStep(step)) {
            return out;
        }
        Guidance.combine(out, n, cIn, cIn, hw, guidance, mode, guided);
        return guided;
    }

    @Override
    public boolean consume(int step, float[] x, float[] out, float[] noise, float[] x0, float[] xNext) {
        if (!secondStage && step != lastStep + 1) {
            throw new IllegalStateException(sampler.configName() + " step " + step + " after step " + lastStep
                    + ": flow steps run in order from 0");
        }
        float[] v = raw(step, out);
        float si = (float) s[step];
        float dt = (float) (s[step + 1] - s[step]);
        int len = n * cIn * hw;
        boolean done = true;
        switch (sampler) {
            case EULER -> {
                for (int k = 0; k < len; k++) {
                    float d = sign * v[k];
                    x0[k] = x[k] - si * d;
                    xNext[k] = x[k] + dt * d;
                }
            }
            case HEUN -> done = heun(step, x, v, si, dt, x0, xNext, len);
            case EULER_MARUYAMA -> {
                boolean last = step == steps - 1;
                float drift = (float) (2.0 - s[step]);
                float diffusion = last ? 0f : (float) (Math.sqrt(2.0 * s[step]) * Math.sqrt(Math.abs(s[step + 1]
                        - s[step])));
                for (int k = 0; k < len; k++) {
                    float d = sign * v[k];
                    float f = drift * d + x[k];
                    x0[k] = x[k] - si * d;
                    float next = x[k] + f * dt;
                    xNext[k] = last ? next : next + diffusion * noise[k];
                }
            }
            case DPMPP_2M -> dpmpp(step, x, v, si, x0, xNext, len);
            default -> throw new IllegalStateException(sampler + " is not a flow solver");
        }
        if (done) {
            lastStep = step;
        }
        return done;
    }

    private boolean heun(int step, float[] x, float[] v, float si, float dt, float[] x0, float[] xNext, int len) {
        if (!secondStage) {
            for (int k = 0; k < len; k++) {
                float d = sign * v[k];
                d1[k] = d;
                x0[k] = x[k] - si * d;
                stage[k] = x[k] + dt * d;
            }
            if (step == steps - 1) { // the last step is Euler's: x_N = x̃
                System.arraycopy(stage, 0, xNext, 0, len);
                return true;
            }
            secondStage = true;
            return false;
        }
        for (int k = 0; k < len; k++) {
            float d2 = sign * v[k];
            xNext[k] = x[k] + dt * (0.5f * (d1[k] + d2));
        }
        secondStage = false;
        return true;
    }

    /**
     * DPM-Solver++(2M) with α = 1 − s, σ = s, λ = log(α/σ). The step to s = 0 returns the data estimate; the step
     * from s = 1 (α = 0, λ = −∞) is first order: x = σ_t·x + α_t·x̂; the one after it too (its previous step size in
     * λ is infinite).
     */
    private void dpmpp(int step, float[] x, float[] v, float si, float[] x0, float[] xNext, int len) {
        double sS = s[step];
        double sT = s[step + 1];
        double cx;
        double cd;
        double kk = 0;
        if (sT == 0.0) {
            cx = 0;
            cd = 1;
        } else if (sS == 1.0) {
            cx = sT;
            cd = 1.0 - sT;
        } else {
            double h = lambda(sT) - lambda(sS);
            cx = sT / sS;
            cd = -(1.0 - sT) * Math.expm1(-h);
            if (step > 0 && s[step - 1] < 1.0) {
                double h0 = lambda(sS) - lambda(s[step - 1]);
                kk = h / (2.0 * h0);
            }
        }
        float fx = (float) cx;
        float fd = (float) cd;
        float fk = (float) kk;
        boolean second = kk != 0.0;
        for (int k = 0; k < len; k++) {
            float d = sign * v[k];
            float est = x[k] - si * d;
            float dd = second ? est + fk * (est - prevX0[k]) : est;
            x0[k] = est;
            xNext[k] = fx * x[k] + fd * dd;
        }
        System.arraycopy(x0, 0, prevX0, 0, len);
    }

    private static double lambda(double s) {
        return Math.log(1.0 - s) - Math.log(s);
    }
}
