package io.ditserve.server.engine;

/** How preview frames of a latent model are made from the clean-latent estimate. */
public enum PreviewDecoder {
    /** No decoder: the estimate itself (pixel models), or the linear latent → RGB map (latent models). */
    LINEAR,
    /** The model's tiny decoder (TAESD). */
    TINY,
    /** The model's full VAE decoder. */
    FULL
}
