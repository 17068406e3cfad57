package io.ditserve.server.sampling;

/** The samplers the server implements (the update rules are in {@link Samplers}). */
public enum Sampler {
    /** Ancestral DDPM, the paper's sampler; learned-range or fixed-small variance per the model. */
    DDPM,
    /** DDIM; deterministic at eta 0. */
    DDIM
}
