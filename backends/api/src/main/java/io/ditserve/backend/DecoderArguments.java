package io.ditserve.backend;

import java.util.Arrays;

/** The argument checks every {@link Decoder#decode} implementation makes, in one place. */
public final class DecoderArguments {
    private DecoderArguments() {}

    /**
     * Checks latent [N, C_latent, h, w] and out [N, C_out, f·h, f·w].
     *
     * @return the batch size N
     * @throws IllegalArgumentException naming the argument and what was expected
     */
    public static int check(DecoderSpec spec, Tensor latent, Tensor out) {
        if (latent.rank() != 4 || latent.dim(1) != spec.latentChannels() || latent.dim(2) < 1 || latent.dim(3) < 1) {
            throw new IllegalArgumentException("latent has shape " + Arrays.toString(latent.shape())
                    + ", expected [N, " + spec.latentChannels() + ", h, w] with h, w >= 1");
        }
        int n = latent.dim(0);
        int f = spec.scaleFactor();
        int[] expected = {n, spec.outChannels(), f * latent.dim(2), f * latent.dim(3)};
        if (!Arrays.equals(out.shape(), expected)) {
            throw new IllegalArgumentException("out has shape " + Arrays.toString(out.shape()) + ", expected "
                    + Arrays.toString(expected) + " (scale factor " + f + ")");
        }
        return n;
    }

    /**
     * What every decoder's {@link Decoder#decode} checks first: that the decoder is still open ({@code closed} true:
     * an IllegalStateException naming the decoder and its folder), then the arguments ({@link #check}).
     *
     * @return the batch size N; 0 leaves nothing to decode
     */
    public static int checkOpen(boolean closed, DecoderSpec spec, Tensor latent, Tensor out) {
        if (closed) {
            throw new IllegalStateException("decoder " + spec.summary() + " in " + spec.directory() + " is closed");
        }
        return check(spec, latent, out);
    }
}
