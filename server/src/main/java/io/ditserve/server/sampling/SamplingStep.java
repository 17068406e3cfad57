package io.ditserve.server.sampling;

import io.ditserve.backend.Sampler;
import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelSpec;
import java.util.Objects;

/**
 * One generation's sampler update, as the engine runs it and as the sampler parity test checks it: combine the
 * model output of the generation's samples (its n images, then their n unconditional twins when guided) with
 * classifier-free guidance, then take the DDIM, DDPM or DPM-Solver++(2M) step. Holds the generation's guidance
 * scratch, allocated once, and the generation's sampler state: DPM-Solver++(2M) keeps the previous step's data
 * prediction here. Nothing is shared between instances, so generations with different samplers mix freely in one
 * forward pass; one instance serves one generation, its steps applied in sampling order (i = N−1 down to 0).
 */
public final class SamplingStep {
    private final ModelSpec spec;
    private final NoiseSchedule schedule;
    private final Sampler sampler;
    private final float eta;
    private final float guidance;
    private final GuidanceMode mode;
    private final int n;
    private final int hw;
    private final float[] guided;
    /** DPM-Solver++(2M): the data prediction of the last step taken; null for the other samplers. */
    private final float[] prevX0;
    /** The sampling index of the last step taken, or −1 before the first. */
    private int lastIndex = -1;

    public SamplingStep(ModelSpec spec, NoiseSchedule schedule, Sampler sampler, float eta, float guidance,
            GuidanceMode mode, int n) {
        this.spec = Objects.requireNonNull(spec, "spec");
        this.schedule = Objects.requireNonNull(schedule, "schedule");
        this.sampler = Objects.requireNonNull(sampler, "sampler");
        this.mode = Objects.requireNonNull(mode, "mode");
        this.eta = eta;
        this.guidance = guidance;
        this.n = n;
        this.hw = spec.inputSize() * spec.inputSize();
        this.guided = guided() ? new float[n * spec.outChannels() * hw] : null;
        this.prevX0 = sampler == Sampler.DPMPP_2M ? new float[n * spec.inChannels() * hw] : null;
    }

    public boolean guided() {
        return Guidance.active(guidance);
    }

    /** Samples per forward pass: n, or 2n with guidance (conditional images first, then the unconditional ones). */
    public int samples() {
        return Guidance.samples(n, guided());
    }

    public NoiseSchedule schedule() {
        return schedule;
    }

    /** Whether the step from sampling index i draws fresh noise (DDPM, DDIM with eta > 0; never at i = 0). */
    public boolean needsNoise(int i) {
        return i > 0 && (sampler == Sampler.DDPM || eta > 0);
    }

    /**
     * The step from sampling index i. DPM-Solver++(2M) starts at i = N−1 and then needs the steps in order (each
     * uses the previous one's data prediction): anything else is an IllegalStateException.
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
            Guidance.combine(out, n, cOut, cIn, hw, guidance, mode, guided);
            eps = guided;
        }
        switch (sampler) {
            case DDIM -> Samplers.ddimStep(schedule, i, eta, x, eps, n, cIn, cOut, hw, noise, x0, xNext);
            case DDPM -> Samplers.ddpmStep(schedule, i, spec.learnSigma(), x, eps, n, cIn, cOut, hw, noise, x0,
                    xNext);
            case DPMPP_2M -> {
                boolean first = i == schedule.size() - 1;
                if (!first && lastIndex != i + 1) {
                    throw new IllegalStateException("DPM-Solver++(2M) step from index " + i + " after "
                            + (lastIndex < 0 ? "no step" : "the step from index " + lastIndex)
                            + ": steps must run in order from index " + (schedule.size() - 1));
                }
                Samplers.dpmpp2mStep(schedule, i, x, eps, first ? null : prevX0, n, cIn, cOut, hw, x0, xNext);
                System.arraycopy(x0, 0, prevX0, 0, prevX0.length);
            }
        }
        lastIndex = i;
    }
}
