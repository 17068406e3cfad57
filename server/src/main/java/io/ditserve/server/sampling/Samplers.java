package io.ditserve.server.sampling;

/**
 * The sampler updates of DiT (DDPM with learned-range or fixed variance, DDIM with eta) and classifier-free
 * guidance, on flat float arrays [n, C, H, W]. Shared by every backend: backends only compute the model.
 *
 * <p>Arithmetic is float32 with coefficients computed in double and cast to float, in the same order of operations
 * as the PyTorch reference, so that each step matches it to rounding.
 */
public final class Samplers {
    private Samplers() {}

    /** How guidance combines the conditional and unconditional halves. */
    public enum GuidanceMode {
        /** Released DiT: guide eps channels 0..2; channel 3 and the variance come from the conditional half. */
        FIRST_THREE,
        /** Guide all eps channels; the variance comes from the conditional half. */
        ALL
    }

    /**
     * Combines a doubled-batch model output [2n, C_out, HW] (conditional half first) into the guided output
     * [n, C_out, HW]: guided = uncond + s·(cond − uncond) on the guided eps channels, the conditional values
     * elsewhere.
     */
    public static void guide(float[] out2, int n, int cOut, int cIn, int hw, float scale, GuidanceMode mode,
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

    /**
     * One DDIM step from sampling index i. {@code out} is the (guided) model output [n, C_out, HW]; eps is its first
     * cIn channels. Writes the clean-image estimate to {@code x0} and the next sample to {@code xNext}; noise is used
     * only when i > 0 and eta > 0.
     */
    public static void ddimStep(NoiseSchedule s, int i, float eta, float[] x, float[] out, int n, int cIn,
            int cOut, int hw, float[] noise, float[] x0, float[] xNext) {
        float sra = (float) s.sqrtRecipAc[i];
        float srm1 = (float) s.sqrtRecipm1Ac[i];
        double a = s.alphasCumprod[i];
        double ap = s.alphasCumprodPrev[i];
        double sigma = eta * Math.sqrt((1 - ap) / (1 - a)) * Math.sqrt(1 - a / ap);
        float sqrtAp = (float) Math.sqrt(ap);
        float dirCoef = (float) Math.sqrt(1 - ap - sigma * sigma);
        float sig = (float) sigma;
        boolean addNoise = i > 0 && eta > 0;
        int per = cIn * hw;
        for (int b = 0; b < n; b++) {
            int xo = b * per;
            int eo = b * cOut * hw;
            for (int k = 0; k < per; k++) {
                float xv = x[xo + k];
                float e = out[eo + k];
                float est = sra * xv - srm1 * e;
                float eps2 = (sra * xv - est) / srm1;
                float next = est * sqrtAp + dirCoef * eps2;
                if (addNoise) {
                    next = next + sig * noise[xo + k];
                }
                x0[xo + k] = est;
                xNext[xo + k] = next;
            }
        }
    }

    /**
     * One DDPM step from sampling index i. With {@code learnSigma} the channels cIn..2cIn−1 of {@code out} are the
     * variance interpolation v ∈ [−1, 1] (learned range); otherwise the fixed small (posterior) variance is used.
     */
    public static void ddpmStep(NoiseSchedule s, int i, boolean learnSigma, float[] x, float[] out, int n,
            int cIn, int cOut, int hw, float[] noise, float[] x0, float[] xNext) {
        float sra = (float) s.sqrtRecipAc[i];
        float srm1 = (float) s.sqrtRecipm1Ac[i];
        float c1 = (float) s.postCoef1[i];
        float c2 = (float) s.postCoef2[i];
        float minLog = (float) s.postLogVarClipped[i];
        float maxLog = (float) s.logBetas[i];
        int per = cIn * hw;
        for (int b = 0; b < n; b++) {
            int xo = b * per;
            int eo = b * cOut * hw;
            for (int k = 0; k < per; k++) {
                float xv = x[xo + k];
                float est = sra * xv - srm1 * out[eo + k];
                float mean = c1 * est + c2 * xv;
                float next = mean;
                if (i > 0) {
                    float logVar;
                    if (learnSigma) {
                        float frac = (out[eo + per + k] + 1) / 2;
                        logVar = frac * maxLog + (1 - frac) * minLog;
                    } else {
                        logVar = minLog;
                    }
                    next = mean + (float) Math.exp(0.5f * logVar) * noise[xo + k];
                }
                x0[xo + k] = est;
                xNext[xo + k] = next;
            }
        }
    }
}
