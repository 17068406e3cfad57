package io.ditserve.backend.java;

/** Constants and element-wise rules that both decoder paths share (docs/DECODERS.md). */
final class DecoderMath {
    /** Every GroupNorm of the AutoencoderKL decoder. */
    static final double GN_EPS = 1e-6;
    /**
     * The tiny decoder soft-clamps its input as tanh(x / 3)·3. diffusers' DecoderTiny uses the constant 3 here, not
     * the config's {@code latent_magnitude} (which only its latent scaling helpers read), and so does the PyTorch
     * reference; the two agree for every published TAESD config (latent_magnitude 3).
     */
    static final float TINY_CLAMP = 3f;

    private DecoderMath() {}

    /**
     * tanh(x / 3)·3 in float32, as PyTorch computes it. StrictMath: the same bits in every JVM execution mode
     * (Math.tanh may be an intrinsic whose bits differ from the interpreter's).
     */
    static float tinyClamp(float x) {
        return (float) StrictMath.tanh(x / TINY_CLAMP) * TINY_CLAMP;
    }
}
