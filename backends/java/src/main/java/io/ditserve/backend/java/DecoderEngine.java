package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;

/** One compute path of the Java decoders. {@link JavaDecoder} validates the arguments and serialises calls. */
interface DecoderEngine extends AutoCloseable {

    /**
     * Decodes a batch image by image.
     *
     * @param latent [n, C_lat, h, w] in diffusion space
     * @param out [n, C_out, f·h, f·w], written
     */
    void decode(float[] latent, int n, int h, int w, float[] out, Cancellation cancel)
            throws BackendException.Cancelled;

    @Override
    void close();
}
