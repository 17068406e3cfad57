package io.ditserve.backend.cuda;

/** Constants of the DiT forward pass that the host side needs (docs/DIT_MODEL.md, "Forward pass"). */
final class DitConstants {
    /** Size of the sinusoidal timestep embedding that feeds {@code t_embedder.mlp.0}. */
    static final int FREQ_DIM = 256;
    /** Its halves: FREQ_HALF cosines, then FREQ_HALF sines ({@code FREQ_HALF} in dit_kernels.cu). */
    static final int FREQ_HALF = FREQ_DIM / 2;
    /** Timesteps of the original schedule: a valid t is 0..NUM_TIMESTEPS − 1. */
    static final int NUM_TIMESTEPS = 1000;

    private DitConstants() {}

    /**
     * freqs[k] = exp(−ln(10000)·k/128) rounded as the reference rounds it with a float32 {@code arange}: the scalar
     * −ln(10000) rounded to float, times k in float, divided by 128 in float, then a correctly rounded exp. Computed
     * here once and uploaded, so the GPU's exp (not correctly rounded) does not enter.
     */
    static float[] timestepFrequencies() {
        float negLogPeriod = (float) -Math.log(10000.0);
        float[] f = new float[FREQ_HALF];
        for (int k = 0; k < FREQ_HALF; k++) {
            f[k] = (float) Math.exp(negLogPeriod * k / (float) FREQ_HALF);
        }
        return f;
    }
}
