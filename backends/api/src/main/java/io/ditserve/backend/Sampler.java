package io.ditserve.backend;

/**
 * The samplers (solvers) the server implements (the server's {@code sampling} package; docs/SAMPLERS.md,
 * docs/MODEL_FAMILIES.md), with the names a model's {@code config.json} uses for its default, and which model
 * processes each one can sample.
 */
public enum Sampler {
    /** Ancestral DDPM, the paper's sampler; learned-range or fixed-small variance per the model. VP models only. */
    DDPM("ddpm", false, true),
    /** DDIM; deterministic at eta 0. VP models only. */
    DDIM("ddim", false, true),
    /**
     * DPM-Solver++(2M): deterministic, second-order multistep in the data prediction; on VP models on DDIM's
     * respaced timesteps, on flow models on the Euler grid with α = 1 − s, σ = s. Stateful: each step uses the
     * previous step's data prediction.
     */
    DPMPP_2M("dpmpp_2m", true, true),
    /** Euler's method on the flow ODE dx/ds: one evaluation per step. Flow models only. */
    EULER("euler", true, false),
    /** Heun's second-order method (the last step is Euler's): 2N − 1 evaluations. Flow models only. */
    HEUN("heun", true, false),
    /** Euler–Maruyama on the reverse SDE of SiT/REPA's FID runs: N evaluations, noise from the seeds. Flow only. */
    EULER_MARUYAMA("euler_maruyama", true, false);

    private final String configName;
    private final boolean flow;
    private final boolean vp;

    Sampler(String configName, boolean flow, boolean vp) {
        this.configName = configName;
        this.flow = flow;
        this.vp = vp;
    }

    /** The name in config.json ({@code defaults.sampler}). */
    public String configName() {
        return configName;
    }

    /** Whether this sampler can sample a model of process {@code p}. */
    public boolean samples(ModelSpec.Process p) {
        return p.flow() ? flow : vp;
    }

    /** The samplers that can sample a model of process {@code p}, for error messages. */
    public static java.util.List<Sampler> forProcess(ModelSpec.Process p) {
        return java.util.Arrays.stream(values()).filter(s -> s.samples(p)).toList();
    }
}
