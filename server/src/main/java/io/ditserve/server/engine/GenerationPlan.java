package io.ditserve.server.engine;

import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.sampling.Samplers.GuidanceMode;
import java.util.Objects;

/**
 * A validated generation request: every field resolved against the model's defaults and checked.
 *
 * @param label class id, or {@code spec.nullClass()} for unconditional
 * @param seeds one per image; image i's noise comes from {@code new SplittableRandom(seeds[i])}
 * @param guidance classifier-free guidance scale; 1 means a single (conditional) evaluation per step
 * @param initialNoise explicit x_T [n, C, H, W], or null to draw it from the seeds
 */
public record GenerationPlan(
        LoadedModel model,
        int label,
        long[] seeds,
        int steps,
        Sampler sampler,
        float eta,
        float guidance,
        GuidanceMode guidanceMode,
        int previewInterval,
        boolean wantPng,
        boolean wantTensor,
        float[] initialNoise) {

    public enum Sampler { DDPM, DDIM }

    public GenerationPlan {
        Objects.requireNonNull(model, "model");
        Objects.requireNonNull(seeds, "seeds");
        Objects.requireNonNull(sampler, "sampler");
        Objects.requireNonNull(guidanceMode, "guidanceMode");
    }

    public int numImages() {
        return seeds.length;
    }

    public boolean guided() {
        return guidance != 1.0f;
    }
}
