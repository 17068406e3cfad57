package io.ditserve.server.sampling;

/**
 * The sampler updates of DiT's VP process (DDPM with learned-range or fixed variance, DDIM with eta,
 * DPM-Solver++(2M)), on flat float arrays [n, C, H, W] (guidance:
 * {@link Guidance}). Shared by every backend: backends only compute the model.
 *
 * <p>Arithmetic is float32 with coefficients computed in double and cast to float, in the same order of operations
 * as the PyTorch reference, so that each step matches it to rounding.
 */
public final class Samplers {
    private Samplers() {}

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
                float est = x0FromEps(sra, srm1, xv, e);
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
     * ½·log(ᾱ/(1 − ᾱ)) = log(α/σ), the half log-SNR λ of DPM-Solver; +∞ at ᾱ = 1 (σ = 0).
     */
    static double halfLogSnr(double alphaCumprod) {
        return alphaCumprod >= 1.0 ? Double.POSITIVE_INFINITY
                : 0.5 * (Math.log(alphaCumprod) - Math.log1p(-alphaCumprod));
    }

    /**
     * The DPM-Solver++(2M) coefficients of the step from sampling index i (ᾱ_s = ᾱ[i]) to i − 1 (ᾱ_t = ᾱ_prev[i],
     * which is 1 at i = 0): {c_x, c_d, k} with x_next = c_x·x + c_d·(D_i + k·(D_i − D_{i+1})), where D is the data
     * prediction and D_{i+1} the previous step's. c_x = σ_t/σ_s, c_d = −α_t·(e^{−h} − 1) with h = λ_t − λ_s, and
     * k = 1/(2r) with r = h_0/h, h_0 = λ_s − λ(ᾱ[i+1]). k = 0 (first order) at the first step (i = N − 1); the final
     * step (i = 0, to σ = 0) is {0, 1, 0}: x_next = D_0. The same as dpmpp_2m_coefficients in tools/dit/diffusion.py.
     */
    public static double[] dpmpp2mCoefficients(NoiseSchedule s, int i) {
        if (i == 0) {
            return new double[] {0.0, 1.0, 0.0};
        }
        double aS = s.alphasCumprod[i];
        double aT = s.alphasCumprodPrev[i];
        double h = halfLogSnr(aT) - halfLogSnr(aS);
        double cx = Math.sqrt(1.0 - aT) / Math.sqrt(1.0 - aS);
        double cd = -Math.sqrt(aT) * Math.expm1(-h);
        double k = 0.0;
        if (i < s.size() - 1) {
            double h0 = halfLogSnr(aS) - halfLogSnr(s.alphasCumprod[i + 1]);
            k = h / (2.0 * h0);
        }
        return new double[] {cx, cd, k};
    }

    /**
     * One DPM-Solver++(2M) step from sampling index i (docs/SAMPLERS.md). {@code out} is the (guided) model output
     * [n, C_out, HW]; eps is its first cIn channels (a learned variance is not used). Writes the data prediction
     * D_i = (x − σ_s·ε)/α_s, computed as DDIM's clean-image estimate, to {@code x0} and the next sample to
     * {@code xNext}. {@code prevX0} is the previous step's data prediction [n, C, H, W]; it is read only for a
     * second-order step (k ≠ 0) and must not alias {@code x0}.
     */
    public static void dpmpp2mStep(NoiseSchedule s, int i, float[] x, float[] out, float[] prevX0, int n, int cIn,
            int cOut, int hw, float[] x0, float[] xNext) {
        float sra = (float) s.sqrtRecipAc[i];
        float srm1 = (float) s.sqrtRecipm1Ac[i];
        double[] c = dpmpp2mCoefficients(s, i);
        float cx = (float) c[0];
        float cd = (float) c[1];
        float k = (float) c[2];
        boolean last = i == 0;
        boolean second = c[2] != 0.0;
        if (second && prevX0 == null) {
            throw new IllegalStateException("DPM-Solver++(2M) step " + i + " is second order but has no previous"
                    + " data prediction");
        }
        int per = cIn * hw;
        for (int b = 0; b < n; b++) {
            int xo = b * per;
            int eo = b * cOut * hw;
            for (int k2 = 0; k2 < per; k2++) {
                float xv = x[xo + k2];
                float est = x0FromEps(sra, srm1, xv, out[eo + k2]);
                float next;
                if (last) {
                    next = est;
                } else {
                    float d = second ? est + k * (est - prevX0[xo + k2]) : est;
                    next = cx * xv + cd * d;
                }
                x0[xo + k2] = est;
                xNext[xo + k2] = next;
            }
        }
    }

    /**
     * The clean-image estimate from an ε prediction, x0 = x/√ᾱ − ε·√(1/ᾱ − 1), with {@code sra} = 1/√ᾱ and
     * {@code srm1} = √(1/ᾱ − 1) of the step's timestep: the one place every VP step computes it (float arithmetic in
     * this order, so that results stay the same bytes; DitBytesUnchangedTest).
     */
    static float x0FromEps(float sra, float srm1, float x, float eps) {
        return sra * x - srm1 * eps;
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
                float est = x0FromEps(sra, srm1, xv, out[eo + k]);
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
