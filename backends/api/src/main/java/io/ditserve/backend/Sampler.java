package io.ditserve.backend;

/**
 * The samplers the server implements (update rules in the server's {@code sampling/Samplers.java}; docs/SAMPLERS.md),
 * with the names a model's {@code config.json} uses for its default.
 */
public enum Sampler {
    /** Ancestral DDPM, the paper's sampler; learned-range or fixed-small variance per the model. */
    DDPM("ddpm"),
    /** DDIM; deterministic at eta 0. */
    DDIM("ddim"),
    /**
     * DPM-Solver++(2M): deterministic, second-order multistep in the data prediction, on the same respaced timesteps
     * as DDIM (docs/SAMPLERS.md). Stateful: each step uses the previous step's data prediction.
     */
    DPMPP_2M("dpmpp_2m");

    private final String configName;

    Sampler(String configName) {
        this.configName = configName;
    }

    /** The name in config.json ({@code defaults.sampler}). */
    public String configName() {
        return configName;
    }
}
