package io.ditserve.server.sampling;

/** The samplers the server implements (shared/DIT_SPEC-derived facts in docs/SAMPLING.md). */
public enum Sampler {
    /** Ancestral DDPM, the paper's sampler; learned-range or fixed-small variance per the model. */
    DDPM,
    /** DDIM; deterministic at eta 0. */
    DDIM
}
