package io.ditserve.backend;

/** Constants of the DiT model that every backend and the sampler share, defined once (docs/DIT_MODEL.md). */
public final class DitConstants {
    /** Size of the sinusoidal timestep embedding that feeds {@code t_embedder.mlp.0}. */
    public static final int FREQ_DIM = 256;
    /** Its halves: FREQ_HALF cosines, then FREQ_HALF sines. */
    public static final int FREQ_HALF = FREQ_DIM / 2;
    /** Timesteps of the original training schedule: a valid t is 0..NUM_TIMESTEPS − 1. */
    public static final int NUM_TIMESTEPS = 1000;

    private DitConstants() {}

    /**
     * freqs[k] = exp(−ln(10000)·k/128) rounded as the reference rounds it with a float32 {@code arange}: the scalar
     * −ln(10000) rounded to float, times k in float, divided by 128 in float, then a correctly rounded exp.
     */
    public static float[] timestepFrequencies() {
        float negLogPeriod = (float) -Math.log(10000.0);
        float[] f = new float[FREQ_HALF];
        for (int k = 0; k < FREQ_HALF; k++) {
            f[k] = (float) Math.exp(negLogPeriod * k / (float) FREQ_HALF);
        }
        return f;
    }
}
