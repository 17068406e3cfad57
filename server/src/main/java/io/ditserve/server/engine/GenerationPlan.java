package io.ditserve.server.engine;

import io.ditserve.backend.ModelSpec;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.model.TextPipeline;
import io.ditserve.server.sampling.Guidance;
import io.ditserve.server.sampling.SolverSettings;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.GuidanceMode;
import java.util.Objects;
import java.util.Set;

/**
 * A validated generation request: every field resolved against the model's defaults and checked.
 *
 * @param label class id, or {@code spec.nullClass()} for unconditional
 * @param seeds one per image; image i's noise comes from {@code new SplittableRandom(seeds[i])}
 * @param guidance classifier-free guidance scale; 1 means a single (conditional) evaluation per step
 * @param previewDecoder how previews are rendered (resolved: the model has the decoder it names)
 * @param outputs what each result carries (at least one)
 * @param initialNoise explicit x_T [n, C, H, W], or null to draw it from the seeds
 * @param stepCaching which evaluations skip blocks 1..depth−1 (docs/STEP_CACHE.md); {@link StepCaching#OFF} for none
 * @param guidanceInterval flow models: the network times at which steps are guided; null for every step
 * @param timestepShift flow models: the grid's shift (1 = none)
 * @param prompt text models: the prompt's conditioning (the images' rows); null for class models
 * @param negativePrompt text models: the negative prompt's (the unconditional twins' rows); null for class models
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
        PreviewDecoder previewDecoder,
        Set<OutputFormat> outputs,
        float[] initialNoise,
        StepCaching stepCaching,
        ModelSpec.GuidanceInterval guidanceInterval,
        double timestepShift,
        TextPipeline.Embedding prompt,
        TextPipeline.Embedding negativePrompt) {

    /** A class-conditional plan. */
    public GenerationPlan(LoadedModel model, int label, long[] seeds, int steps, Sampler sampler, float eta,
            float guidance, GuidanceMode guidanceMode, int previewInterval, PreviewDecoder previewDecoder,
            Set<OutputFormat> outputs, float[] initialNoise, StepCaching stepCaching,
            ModelSpec.GuidanceInterval guidanceInterval, double timestepShift) {
        this(model, label, seeds, steps, sampler, eta, guidance, guidanceMode, previewInterval, previewDecoder,
                outputs, initialNoise, stepCaching, guidanceInterval, timestepShift, null, null);
    }

    /** A plan on every step's guidance and the unshifted grid. */
    public GenerationPlan(LoadedModel model, int label, long[] seeds, int steps, Sampler sampler, float eta,
            float guidance, GuidanceMode guidanceMode, int previewInterval, PreviewDecoder previewDecoder,
            Set<OutputFormat> outputs, float[] initialNoise, StepCaching stepCaching) {
        this(model, label, seeds, steps, sampler, eta, guidance, guidanceMode, previewInterval, previewDecoder,
                outputs, initialNoise, stepCaching, null, 1.0);
    }

    /** A plan without step caching. */
    public GenerationPlan(LoadedModel model, int label, long[] seeds, int steps, Sampler sampler, float eta,
            float guidance, GuidanceMode guidanceMode, int previewInterval, PreviewDecoder previewDecoder,
            Set<OutputFormat> outputs, float[] initialNoise) {
        this(model, label, seeds, steps, sampler, eta, guidance, guidanceMode, previewInterval, previewDecoder,
                outputs, initialNoise, StepCaching.OFF);
    }

    public GenerationPlan {
        Objects.requireNonNull(model, "model");
        Objects.requireNonNull(seeds, "seeds");
        Objects.requireNonNull(sampler, "sampler");
        Objects.requireNonNull(guidanceMode, "guidanceMode");
        Objects.requireNonNull(previewDecoder, "previewDecoder");
        Objects.requireNonNull(stepCaching, "stepCaching");
        outputs = Set.copyOf(outputs);
        if (outputs.isEmpty()) {
            throw new IllegalArgumentException("a plan needs at least one output format");
        }
        if (model.textConditioned() && (prompt == null || negativePrompt == null)) {
            throw new IllegalArgumentException("a plan of text model " + model.name() + " needs its encoded prompts");
        }
    }

    public int numImages() {
        return seeds.length;
    }

    public boolean guided() {
        return Guidance.active(guidance);
    }

    /** The most samples one of its evaluations puts into a pass: the images, doubled when guided. */
    public int samples() {
        return Guidance.samples(numImages(), guided());
    }

    /** The sampling settings its solver is made from. */
    public SolverSettings solverSettings() {
        return new SolverSettings(sampler, steps, eta, guidance, guidanceMode, guidanceInterval, timestepShift,
                model.spec().defaults().grid());
    }

    /** Whether the results need the VAE-decoded image. */
    public boolean needsDecodedImage() {
        return model.vaeDecoder() != null && (outputs.contains(OutputFormat.PNG)
                || outputs.contains(OutputFormat.IMAGE_TENSOR));
    }
}
