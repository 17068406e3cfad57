package io.ditserve.server.sampling;

import io.ditserve.backend.ModelSpec;
import java.util.Objects;

/**
 * One generation's sampler update, as the engine runs it and as the sampler parity test checks it: combine the
 * model output of the generation's samples (its n images, then their n unconditional twins when guided) with
 * classifier-free guidance, then take the DDIM or DDPM step. Holds the generation's guidance scratch, allocated
 * once; stateless otherwise, so generations with different samplers mix freely in one forward pass.
 */
public final class SamplingStep {
    private final ModelSpec spec;
    private final NoiseSchedule schedule;
    private final Sampler sampler;
    private final float eta;
    private final float guidance;
    private final Samplers.GuidanceMode mode;
    private final int n;
    private final int hw;
    private final float[] guided;

    public SamplingStep(ModelSpec spec, NoiseSchedule schedule, Sampler sampler, float eta, float guidance,
            Samplers.GuidanceMode mode, int n) {
        this.spec = Objects.requireNonNull(spec, "spec");
        this.schedule = Objects.requireNonNull(schedule, "schedule");
        this.sampler = Objects.requireNonNull(sampler, "sampler");
        this.mode = Objects.requireNonNull(mode, "mode");
        this.eta = eta;
        this.guidance = guidance;
        this.n = n;
        this.hw = spec.inputSize() * spec.inputSize();
        this.guided = guided() ? new float[n * spec.outChannels() * hw] : null;
    }

    public boolean guided() {
        return guidance != 1.0f;
    }

    /** Samples per forward pass: n, or 2n with guidance (conditional images first, then the unconditional ones). */
    public int samples() {
        return guided() ? 2 * n : n;
    }

    public NoiseSchedule schedule() {
        return schedule;
    }

    /** Whether the step from sampling index i draws fresh noise (DDPM, DDIM with eta > 0; never at i = 0). */
    public boolean needsNoise(int i) {
        return i > 0 && (sampler == Sampler.DDPM || eta > 0);
    }

    /**
     * The step from sampling index i.
     *
     * @param x the current samples [n, C, H, W]
     * @param out the model output of this generation's samples [samples(), C_out, H, W]
     * @param noise [n, C, H, W], read only when {@link #needsNoise}
     * @param x0 receives the clean-image estimate
     * @param xNext receives the next samples
     */
    public void apply(int i, float[] x, float[] out, float[] noise, float[] x0, float[] xNext) {
        float[] eps = out;
        int cIn = spec.inChannels();
        int cOut = spec.outChannels();
        if (guided()) {
            Samplers.guide(out, n, cOut, cIn, hw, guidance, mode, guided);
            eps = guided;
        }
        if (sampler == Sampler.DDIM) {
            Samplers.ddimStep(schedule, i, eta, x, eps, n, cIn, cOut, hw, noise, x0, xNext);
        } else {
            Samplers.ddpmStep(schedule, i, spec.learnSigma(), x, eps, n, cIn, cOut, hw, noise, x0, xNext);
        }
    }
}
