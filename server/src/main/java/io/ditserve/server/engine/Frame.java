package io.ditserve.server.engine;

import java.util.Objects;

/**
 * One image as floats [C, H, W], owned by the event that carries it (the engine never writes to it again).
 *
 * @param space {@link Space#IMAGE}: values in [−1, 1] (a pixel model's sample or a decoded latent);
 *     {@link Space#LATENT}: an SD-VAE latent, rendered with the linear latent → RGB map
 */
public record Frame(float[] data, int channels, int height, int width, Space space) {
    public enum Space { IMAGE, LATENT }

    public Frame {
        Objects.requireNonNull(data, "data");
        Objects.requireNonNull(space, "space");
        if ((long) channels * height * width != data.length) {
            throw new IllegalArgumentException("frame [" + channels + ", " + height + ", " + width + "] needs "
                    + (long) channels * height * width + " values, got " + data.length);
        }
    }

    /** A copy of {@code src[offset .. offset + C·H·W)}. */
    static Frame copyOf(float[] src, int offset, int channels, int height, int width, Space space) {
        float[] d = new float[channels * height * width];
        System.arraycopy(src, offset, d, 0, d.length);
        return new Frame(d, channels, height, width, space);
    }
}
