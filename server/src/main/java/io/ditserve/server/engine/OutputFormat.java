package io.ditserve.server.engine;

/** What a result carries. */
public enum OutputFormat {
    /** An 8-bit PNG of the final image (decoded with the VAE for latent models that have one). */
    PNG,
    /** The sampler's output as floats (the latent, for latent models). */
    TENSOR,
    /** The decoded image as floats (latent models with a VAE; the sample itself for pixel models). */
    IMAGE_TENSOR
}
