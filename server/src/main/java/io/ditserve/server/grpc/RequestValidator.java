package io.ditserve.server.grpc;

import io.ditserve.backend.ModelSpec;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.backend.Cancellation;
import io.ditserve.server.engine.GenerationPlan;
import io.ditserve.server.model.TextPipeline;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.model.ModelRepository;
import io.ditserve.backend.GuidanceMode;
import io.grpc.Status;
import io.grpc.StatusException;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.security.SecureRandom;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import io.ditserve.server.engine.PreviewDecoder;
import io.ditserve.server.engine.StepCaching;
import io.ditserve.backend.Sampler;

/**
 * Checks every field of a {@link GenerateRequest} and resolves it against the model's defaults. Every rejection is
 * INVALID_ARGUMENT (or NOT_FOUND for an unknown model) with a message naming the field, the value and what is
 * allowed.
 */
public final class RequestValidator {
    public static final float MAX_GUIDANCE = 100f;
    /** The largest timestep shift a request may ask for (SD3 uses 3, LightningDiT 1/0.3). */
    public static final double MAX_SHIFT = 100.0;
    /** The longest prompt or negative prompt a request may send, in characters. */
    public static final int MAX_PROMPT_CHARS = 10_000;
    /** Steps: the VP schedule has 1000 timesteps; flow grids are capped at the same count. */
    public static final int MAX_STEPS = io.ditserve.server.sampling.NoiseSchedule.TRAIN_STEPS;
    /**
     * Largest magnitude of an initial-noise value. Standard normal noise stays far below it (|x| > 10 has a
     * probability of about 1e-23); much larger values only overflow the model into infinities and NaNs.
     */
    public static final float MAX_NOISE = 1e4f;

    private final ModelRepository models;
    private final Limits limits;
    private final SecureRandom seeds = new SecureRandom();

    /** Per-request caps from the configuration. */
    public record Limits(int maxImages, int maxSteps, int minPreviewInterval) {}

    public RequestValidator(ModelRepository models, Limits limits) {
        this.models = models;
        this.limits = limits;
    }

    private static StatusException invalid(String field, String message) {
        return Status.INVALID_ARGUMENT.withDescription(field + ": " + message).asException();
    }

    public GenerationPlan validate(GenerateRequest r) throws StatusException {
        if (r.getModel().isEmpty()) {
            throw invalid("model", "required; available models: " + models.names());
        }
        LoadedModel model = models.find(r.getModel()).orElseThrow(() -> Status.NOT_FOUND
                .withDescription("model " + ClientText.quote(r.getModel()) + " not found; available models: "
                        + models.names())
                .asException());
        ModelSpec spec = model.spec();
        if (model.textConditioned() && r.getLabelCase() != GenerateRequest.LabelCase.LABEL_NOT_SET) {
            throw invalid(r.getLabelCase().name().toLowerCase(java.util.Locale.ROOT), "model " + spec.name()
                    + " is a text-to-image model: it takes a prompt (and optionally negative_prompt), not a class");
        }
        if (!model.textConditioned() && (!r.getPrompt().isEmpty() || r.hasNegativePrompt())) {
            throw invalid(r.getPrompt().isEmpty() ? "negative_prompt" : "prompt", "model " + spec.name()
                    + " is class-conditional: it takes class_id, class_name or unconditional, not a prompt");
        }
        for (String[] f : new String[][] {{"prompt", r.getPrompt()}, {"negative_prompt", r.getNegativePrompt()}}) {
            if (f[1].length() > MAX_PROMPT_CHARS) {
                throw invalid(f[0], f[1].length() + " characters; allowed at most " + MAX_PROMPT_CHARS
                        + " (longer prompts are cut to each encoder's token limit anyway)");
            }
        }

        int label = model.textConditioned() ? spec.nullClass() : switch (r.getLabelCase()) {
            case CLASS_ID -> {
                if (r.getClassId() < 0 || r.getClassId() >= spec.numClasses()) {
                    throw invalid("class_id", r.getClassId() + " is out of range; allowed 0.."
                            + (spec.numClasses() - 1) + " for model " + spec.name());
                }
                yield r.getClassId();
            }
            case CLASS_NAME -> {
                int idx = spec.classNames().indexOf(r.getClassName());
                if (idx < 0) {
                    throw invalid("class_name", ClientText.quote(r.getClassName()) + " is not a class of model "
                            + spec.name() + "; allowed: " + abbreviate(spec.classNames()));
                }
                yield idx;
            }
            case UNCONDITIONAL -> {
                if (!r.getUnconditional()) {
                    throw invalid("unconditional", "must be true when set (leave the label unset for unconditional)");
                }
                yield spec.nullClass();
            }
            case LABEL_NOT_SET -> spec.nullClass();
        };

        int n = r.getNumImages() == 0 ? 1 : r.getNumImages();
        if (n < 1 || n > limits.maxImages()) {
            throw invalid("num_images", r.getNumImages() + " is out of range; allowed 1.." + limits.maxImages()
                    + " (0 means 1)");
        }
        int maxSteps = Math.min(limits.maxSteps(), MAX_STEPS);
        int steps = r.getSteps() == 0 ? spec.defaults().steps() : r.getSteps();
        if (steps < 1 || steps > maxSteps) {
            throw invalid("steps", r.getSteps() + " is out of range; allowed 1.." + maxSteps
                    + " (0 means the model default " + spec.defaults().steps() + ")");
        }

        String samplers = Sampler.forProcess(spec.process()).stream().map(ProtoMapping::sampler)
                .map(Enum::name).collect(java.util.stream.Collectors.joining(", "));
        Sampler sampler = switch (r.getSampler()) {
            case SAMPLER_UNSPECIFIED -> ProtoMapping.modelSampler(spec);
            case UNRECOGNIZED -> throw invalid("sampler", "unknown value " + r.getSamplerValue()
                    + "; allowed for model " + spec.name() + ": " + samplers + " or unspecified");
            default -> ProtoMapping.sampler(r.getSampler());
        };
        if (!sampler.samples(spec.process())) {
            throw invalid("sampler", r.getSampler() + " cannot sample model " + spec.name() + " (a "
                    + spec.family() + " model, path " + spec.process().path().configName() + "); allowed " + samplers
                    + " or unspecified");
        }
        ModelSpec.GuidanceInterval interval = guidanceInterval(r, spec);
        double shift = spec.defaults().timestepShift();
        if (r.hasTimestepShift()) {
            if (!spec.process().flow()) {
                throw invalid("timestep_shift", "applies to flow models only; model " + spec.name()
                        + " is a " + spec.family() + " model (leave it unset)");
            }
            shift = r.getTimestepShift();
            if (!Float.isFinite(r.getTimestepShift()) || !(shift > 0) || shift > MAX_SHIFT) {
                throw invalid("timestep_shift", r.getTimestepShift() + " is out of range; allowed (0, " + MAX_SHIFT
                        + "] (1 = no shift)");
            }
        }

        float eta = r.hasEta() ? r.getEta() : (float) spec.defaults().eta();
        if (!Float.isFinite(eta) || eta < 0 || eta > 1) {
            throw invalid("eta", eta + " is out of range; allowed 0..1");
        }

        boolean unconditional = !model.textConditioned() && label == spec.nullClass();
        float guidance;
        if (r.hasGuidanceScale()) {
            guidance = r.getGuidanceScale();
            if (!Float.isFinite(guidance) || guidance < 0 || guidance > MAX_GUIDANCE) {
                throw invalid("guidance_scale", guidance + " is out of range; allowed 0.." + MAX_GUIDANCE
                        + " (1 = no guidance)");
            }
            if (unconditional && guidance != 1f) {
                throw invalid("guidance_scale", guidance + " needs a class label; unconditional requests allow only 1");
            }
        } else {
            guidance = unconditional ? 1f : (float) spec.defaults().guidance();
        }
        if (model.textConditioned() && guidance < 1f) {
            guidance = 1f; // SD3's pipeline guides only above 1 (docs/TEXT_MODELS.md): below it, one evaluation
        }

        GuidanceMode mode = switch (r.getGuidanceMode()) {
            case GUIDANCE_MODE_UNSPECIFIED -> ProtoMapping.modelGuidanceMode(spec);
            case UNRECOGNIZED -> throw invalid("guidance_mode", "unknown value " + r.getGuidanceModeValue()
                    + "; allowed GUIDANCE_MODE_FIRST_THREE, GUIDANCE_MODE_ALL or unspecified");
            default -> ProtoMapping.guidanceMode(r.getGuidanceMode());
        };

        int pi = r.getPreviewInterval();
        if (pi < 0 || pi > steps || (pi > 0 && pi < limits.minPreviewInterval())) {
            throw invalid("preview_interval", pi + " is out of range; allowed 0 (no previews) or "
                    + Math.min(limits.minPreviewInterval(), steps) + ".." + steps + " (a frame every k steps)");
        }

        Set<io.ditserve.server.engine.OutputFormat> outputs = EnumSet.noneOf(io.ditserve.server.engine.OutputFormat.class);
        if (r.getOutputFormatsCount() == 0) {
            outputs.add(io.ditserve.server.engine.OutputFormat.PNG);
        }
        String allowedFormats = model.vae().isPresent() || !model.latent()
                ? "OUTPUT_FORMAT_PNG, OUTPUT_FORMAT_TENSOR, OUTPUT_FORMAT_IMAGE_TENSOR"
                : "OUTPUT_FORMAT_PNG, OUTPUT_FORMAT_TENSOR (model " + spec.name() + " has no vae/ to decode with)";
        for (int k = 0; k < r.getOutputFormatsCount(); k++) {
            OutputFormat f = r.getOutputFormats(k);
            io.ditserve.server.engine.OutputFormat d = ProtoMapping.outputFormat(f);
            if (d == null || (d == io.ditserve.server.engine.OutputFormat.IMAGE_TENSOR && model.latent()
                    && model.vae().isEmpty())) {
                throw invalid("output_formats[" + k + "]", f + " (" + r.getOutputFormatsValue(k)
                        + ") is not allowed; allowed " + allowedFormats);
            }
            outputs.add(d);
        }

        PreviewDecoder preview = switch (r.getPreviewDecoder()) {
            case PREVIEW_DECODER_UNSPECIFIED -> model.taesd().isPresent() ? PreviewDecoder.TINY : PreviewDecoder.LINEAR;
            case PREVIEW_DECODER_LINEAR -> PreviewDecoder.LINEAR;
            case PREVIEW_DECODER_TINY -> {
                if (model.taesd().isEmpty()) {
                    throw invalid("preview_decoder", "PREVIEW_DECODER_TINY needs a taesd/ decoder, which model "
                            + spec.name() + " does not have; allowed " + previewDecoders(model));
                }
                yield PreviewDecoder.TINY;
            }
            case PREVIEW_DECODER_FULL -> {
                if (model.vae().isEmpty()) {
                    throw invalid("preview_decoder", "PREVIEW_DECODER_FULL needs a vae/ decoder, which model "
                            + spec.name() + " does not have; allowed " + previewDecoders(model));
                }
                yield PreviewDecoder.FULL;
            }
            case UNRECOGNIZED -> throw invalid("preview_decoder", "unknown value " + r.getPreviewDecoderValue()
                    + "; allowed " + previewDecoders(model));
        };

        float[] noise = r.hasInitialNoise() ? noise(r.getInitialNoise(), n, spec) : null;
        StepCaching caching = stepCaching(r, model, steps);
        if (caching.enabled() && interval != null) {
            throw invalid("step_cache", "cannot be combined with a guidance interval (the unconditional rows would "
                    + "reuse residuals of steps they did not run); allowed STEP_CACHE_OFF with guidance_interval");
        }

        long base = r.getSeed() != 0 ? r.getSeed() : randomSeed();
        TextPipeline.Embedding prompt = null;
        TextPipeline.Embedding negative = null;
        if (model.textConditioned()) {
            // encoded here, once per request (cached by prompt); the transformer's passes reuse it every step
            try {
                prompt = model.text().encode(r.getPrompt(), Cancellation.NEVER);
                negative = model.text().encode(r.hasNegativePrompt() ? r.getNegativePrompt()
                        : model.text().defaultNegativePrompt(), Cancellation.NEVER);
            } catch (io.ditserve.backend.BackendException e) {
                throw Status.INTERNAL.withDescription("text encoders of model " + spec.name() + " failed: "
                        + e.getMessage()).asException();
            }
        }
        return new GenerationPlan(model, label, imageSeeds(base, n), steps, sampler, eta, guidance, mode,
                r.getPreviewInterval(), preview, outputs, noise, caching, interval, shift, prompt, negative);
    }

    /**
     * The seeds of a request's n images: base + i in the unsigned 64-bit range without 0 (which means "random"), so
     * that the count wraps from 2⁶⁴ − 1 to 1: seed_i = ((base − 1 + i) mod (2⁶⁴ − 1)) + 1 for base ≥ 1. Below the
     * wrap this is base + i, as before.
     */
    static long[] imageSeeds(long base, int n) {
        java.math.BigInteger modulus = java.math.BigInteger.ONE.shiftLeft(64).subtract(java.math.BigInteger.ONE);
        java.math.BigInteger b = new java.math.BigInteger(Long.toUnsignedString(base)).subtract(java.math.BigInteger.ONE);
        long[] seeds = new long[n];
        for (int i = 0; i < n; i++) {
            seeds[i] = b.add(java.math.BigInteger.valueOf(i)).mod(modulus).add(java.math.BigInteger.ONE).longValue();
        }
        return seeds;
    }

    /** The request's guidance interval (flow models), the model's default when unset, or null for every step. */
    private static ModelSpec.GuidanceInterval guidanceInterval(GenerateRequest r, ModelSpec spec)
            throws StatusException {
        if (!r.hasGuidanceInterval()) {
            return spec.defaults().guidanceInterval();
        }
        if (!spec.process().flow()) {
            throw invalid("guidance_interval", "applies to flow models only; model " + spec.name() + " is a "
                    + spec.family() + " model (leave it unset)");
        }
        float lo = r.getGuidanceInterval().getLow();
        float hi = r.getGuidanceInterval().getHigh();
        if (!(lo >= 0 && lo <= hi && hi <= 1)) {
            throw invalid("guidance_interval", "[" + lo + ", " + hi + "] is not allowed; allowed 0 <= low <= high "
                    + "<= 1, in the network's own time (" + spec.process().timeInput().configName() + ")");
        }
        return new ModelSpec.GuidanceInterval(lo, hi);
    }

    private static StepCaching stepCaching(GenerateRequest r, LoadedModel model, int steps) throws StatusException {
        if (!r.hasStepCache()) {
            return StepCaching.OFF;
        }
        io.ditserve.proto.v1.StepCacheSettings c = r.getStepCache();
        String methods = "STEP_CACHE_OFF, STEP_CACHE_INTERVAL or unspecified";
        return switch (c.getMethod()) {
            case STEP_CACHE_METHOD_UNSPECIFIED, STEP_CACHE_OFF -> {
                if (c.getInterval() != 0) {
                    throw invalid("step_cache.interval", c.getInterval() + " needs method STEP_CACHE_INTERVAL; "
                            + "allowed 0 with " + c.getMethod());
                }
                yield StepCaching.OFF;
            }
            case STEP_CACHE_INTERVAL -> {
                if (c.getInterval() < 1 || c.getInterval() > steps) {
                    throw invalid("step_cache.interval", c.getInterval() + " is out of range; allowed 1.." + steps
                            + " (the request's steps; 1 runs every block at every step)");
                }
                if (!model.backend().supportsStepCache()) {
                    throw Status.FAILED_PRECONDITION.withDescription("step_cache: model " + model.name()
                            + " on backend " + model.backend().name() + " cannot skip blocks"
                            + (model.spec().depth() < 2 ? " (it has a single block)"
                                    : model.backend().name().equals("onnx") ? " (its model.onnx was exported "
                                            + "before step caching: re-export it with tools/convert.py)" : "")
                            + "; allowed STEP_CACHE_OFF").asException();
                }
                yield new StepCaching(c.getInterval());
            }
            case UNRECOGNIZED -> throw invalid("step_cache.method", "unknown value " + c.getMethodValue()
                    + "; allowed " + methods);
        };
    }

    private long randomSeed() {
        long s;
        do {
            s = seeds.nextLong() >>> 1; // positive: prints the same in every language
        } while (s == 0);
        return s;
    }

    private static float[] noise(FloatTensor t, int n, ModelSpec spec) throws StatusException {
        int[] want = {n, spec.inChannels(), spec.inputSize(), spec.inputSize()};
        int dims = t.getShapeCount();
        if (dims != want.length || !Arrays.equals(want, t.getShapeList().stream().mapToInt(Integer::intValue)
                .toArray())) {
            // a client's shape is cut before it reaches the status and the log (a 100,000-dim shape once made a
            // 300 KB log line and a status too large for the client's metadata limit)
            String got = dims <= want.length ? t.getShapeList().toString()
                    : t.getShapeList().subList(0, want.length) + " … (" + dims + " dims)";
            throw invalid("initial_noise.shape", got + " does not match; expected " + Arrays.toString(want)
                    + " = [num_images, channels, size, size]");
        }
        long numel = (long) n * spec.inChannels() * spec.inputSize() * spec.inputSize();
        if (t.getData().size() != numel * 4) {
            throw invalid("initial_noise.data", t.getData().size() + " bytes; expected " + numel * 4
                    + " (float32 little-endian, 4 bytes per value)");
        }
        FloatBuffer fb = t.getData().asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer();
        float[] out = new float[(int) numel];
        fb.get(out);
        for (int i = 0; i < out.length; i++) {
            if (!(Math.abs(out[i]) <= MAX_NOISE)) { // also NaN
                throw invalid("initial_noise.data", "value " + i + " is " + out[i] + "; allowed finite values of "
                        + "magnitude at most " + MAX_NOISE + " (standard normal noise)");
            }
        }
        return out;
    }

    private static String previewDecoders(LoadedModel m) {
        List<String> a = new java.util.ArrayList<>(List.of("PREVIEW_DECODER_UNSPECIFIED", "PREVIEW_DECODER_LINEAR"));
        m.taesd().ifPresent(d -> a.add("PREVIEW_DECODER_TINY"));
        m.vae().ifPresent(d -> a.add("PREVIEW_DECODER_FULL"));
        return String.join(", ", a);
    }

    private static String abbreviate(List<String> names) {
        return names.size() <= 20 ? names.toString()
                : names.subList(0, 20) + " … (" + names.size() + " classes; see GetModel)";
    }
}
