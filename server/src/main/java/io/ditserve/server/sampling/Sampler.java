package io.ditserve.server.sampling;

/** The samplers the server implements (the update rules are in {@link Samplers}). */
public enum Sampler {
    /** Ancestral DDPM, the paper's sampler; learned-range or fixed-small variance per the model. */
    DDPM,
    /** DDIM; deterministic at eta 0. */
    DDIM,
    /**
     * DPM-Solver++(2M): deterministic, second-order multistep in the data prediction, on the same respaced timesteps
     * as DDIM (docs/SAMPLERS.md). Stateful: each step uses the previous step's data prediction.
     */
    DPMPP_2M
}
