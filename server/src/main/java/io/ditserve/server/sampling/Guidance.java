package io.ditserve.server.sampling;

import io.ditserve.backend.GuidanceMode;

/**
 * Classifier-free guidance, written once: which evaluations carry the unconditional half, and how the two halves
 * combine. A guided evaluation doubles the samples: the n images, then their n unconditional twins (the null class)
 * at the same input; guided output = uncond + scale·(cond − uncond) on the guided channels (the first three or all,
 * {@link GuidanceMode}), the conditional values elsewhere (a fourth latent channel, a learned variance).
 */
public final class Guidance {
    private Guidance() {}

    /** Whether a scale guides at all: 1 means a single (conditional) evaluation. */
    public static boolean active(float scale) {
        return scale != 1.0f;
    }

    /** Samples of one evaluation of n images: n, or 2n when guided. */
    public static int samples(int n, boolean guided) {
        return guided ? 2 * n : n;
    }

    /**
     * Combines a doubled-batch output [2n, C_out, HW] (conditional half first) into [n, C_out, HW] in {@code dst}.
     */
    public static void combine(float[] out2, int n, int cOut, int cIn, int hw, float scale, GuidanceMode mode,
            float[] dst) {
        int guided = mode == GuidanceMode.FIRST_THREE ? Math.min(3, cIn) : cIn;
        int per = cOut * hw;
        for (int b = 0; b < n; b++) {
            int cond = b * per;
            int uncond = (n + b) * per;
            int o = b * per;
            int g = guided * hw;
            for (int k = 0; k < g; k++) {
                float u = out2[uncond + k];
                dst[o + k] = u + scale * (out2[cond + k] - u);
            }
            System.arraycopy(out2, cond + g, dst, o + g, per - g);
        }
    }
}
