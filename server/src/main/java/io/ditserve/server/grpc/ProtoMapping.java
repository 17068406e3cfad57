package io.ditserve.server.grpc;

import com.google.protobuf.ByteString;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.proto.v1.Accepted;
import io.ditserve.proto.v1.ClassInfo;
import io.ditserve.proto.v1.DecoderInfo;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerationStatus;
import io.ditserve.proto.v1.GuidanceMode;
import io.ditserve.proto.v1.ModelDefaults;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.Preview;
import io.ditserve.proto.v1.Progress;
import io.ditserve.proto.v1.Queued;
import io.ditserve.proto.v1.Result;
import io.ditserve.proto.v1.ServerStatus;
import io.ditserve.proto.v1.Timings;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.engine.Failure;
import io.ditserve.server.engine.Frame;
import io.ditserve.server.engine.GenerationEvent;
import io.ditserve.server.engine.GenerationPlan;
import io.ditserve.server.engine.PreviewDecoder;
import io.ditserve.server.engine.StepCaching;
import io.ditserve.server.image.ImageCodec;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.backend.Sampler;
import io.grpc.Status;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The one place where wire types meet domain types: proto enums ↔ engine enums, engine failures → gRPC statuses,
 * domain events → {@link GenerateEvent}s (encoding PNGs, so it runs on the sending side, never on a compute
 * thread), and model and status descriptions.
 */
final class ProtoMapping {
    private ProtoMapping() {}

    // ---- enums

    static Sampler sampler(io.ditserve.proto.v1.Sampler s) {
        return switch (s) {
            case SAMPLER_DDPM -> Sampler.DDPM;
            case SAMPLER_DDIM -> Sampler.DDIM;
            case SAMPLER_DPMPP_2M -> Sampler.DPMPP_2M;
            case SAMPLER_EULER -> Sampler.EULER;
            case SAMPLER_HEUN -> Sampler.HEUN;
            case SAMPLER_EULER_MARUYAMA -> Sampler.EULER_MARUYAMA;
            default -> throw new IllegalArgumentException("no domain sampler for " + s);
        };
    }

    static io.ditserve.proto.v1.Sampler sampler(Sampler s) {
        return switch (s) {
            case DDPM -> io.ditserve.proto.v1.Sampler.SAMPLER_DDPM;
            case DDIM -> io.ditserve.proto.v1.Sampler.SAMPLER_DDIM;
            case DPMPP_2M -> io.ditserve.proto.v1.Sampler.SAMPLER_DPMPP_2M;
            case EULER -> io.ditserve.proto.v1.Sampler.SAMPLER_EULER;
            case HEUN -> io.ditserve.proto.v1.Sampler.SAMPLER_HEUN;
            case EULER_MARUYAMA -> io.ditserve.proto.v1.Sampler.SAMPLER_EULER_MARUYAMA;
        };
    }

    /** The model's default sampler (config.json {@code defaults.sampler}, parsed at load). */
    static Sampler modelSampler(ModelSpec spec) {
        return spec.defaults().sampler();
    }

    static io.ditserve.backend.GuidanceMode guidanceMode(GuidanceMode m) {
        return switch (m) {
            case GUIDANCE_MODE_FIRST_THREE -> io.ditserve.backend.GuidanceMode.FIRST_THREE;
            case GUIDANCE_MODE_ALL -> io.ditserve.backend.GuidanceMode.ALL;
            default -> throw new IllegalArgumentException("no domain guidance mode for " + m);
        };
    }

    static GuidanceMode guidanceMode(io.ditserve.backend.GuidanceMode m) {
        return switch (m) {
            case FIRST_THREE -> GuidanceMode.GUIDANCE_MODE_FIRST_THREE;
            case ALL -> GuidanceMode.GUIDANCE_MODE_ALL;
        };
    }

    /** The model's default guidance mode (config.json {@code guidance_mode}, parsed at load). */
    static io.ditserve.backend.GuidanceMode modelGuidanceMode(ModelSpec spec) {
        return spec.guidanceMode();
    }

    /** The domain output format, or null for values the server does not offer. */
    static io.ditserve.server.engine.OutputFormat outputFormat(OutputFormat f) {
        return switch (f) {
            case OUTPUT_FORMAT_PNG -> io.ditserve.server.engine.OutputFormat.PNG;
            case OUTPUT_FORMAT_TENSOR -> io.ditserve.server.engine.OutputFormat.TENSOR;
            case OUTPUT_FORMAT_IMAGE_TENSOR -> io.ditserve.server.engine.OutputFormat.IMAGE_TENSOR;
            default -> null;
        };
    }

    static io.ditserve.proto.v1.PreviewDecoder previewDecoder(PreviewDecoder d) {
        return switch (d) {
            case LINEAR -> io.ditserve.proto.v1.PreviewDecoder.PREVIEW_DECODER_LINEAR;
            case TINY -> io.ditserve.proto.v1.PreviewDecoder.PREVIEW_DECODER_TINY;
            case FULL -> io.ditserve.proto.v1.PreviewDecoder.PREVIEW_DECODER_FULL;
        };
    }

    static Status status(Failure f) {
        Status.Code code = switch (f.code()) {
            case CANCELLED -> Status.Code.CANCELLED;
            case DEADLINE_EXCEEDED -> Status.Code.DEADLINE_EXCEEDED;
            case UNAVAILABLE -> Status.Code.UNAVAILABLE;
            case RESOURCE_EXHAUSTED -> Status.Code.RESOURCE_EXHAUSTED;
            case INTERNAL -> Status.Code.INTERNAL;
        };
        return Status.fromCode(code).withDescription(f.message());
    }

    // ---- events

    /**
     * The wire message of a domain event of a generation with this plan; encodes images (PNG) where the plan asks
     * for them.
     */
    static GenerateEvent encode(GenerationEvent event, GenerationPlan plan) {
        GenerateEvent.Builder b = GenerateEvent.newBuilder();
        switch (event) {
            case GenerationEvent.Accepted a -> b.setAccepted(accepted(a));
            case GenerationEvent.Queued q -> b.setQueued(Queued.newBuilder().setQueuePosition(q.queuePosition()));
            case GenerationEvent.Progress p -> b.setProgress(Progress.newBuilder().setStep(p.step())
                    .setTotalSteps(p.totalSteps()).setTimestep(Math.max(0, p.timestep())).setTime(p.time())
                    .setElapsedSeconds(p.elapsedSeconds()).setStepSeconds(p.stepSeconds()));
            case GenerationEvent.Preview p -> b.setPreview(Preview.newBuilder().setImageIndex(p.imageIndex())
                    .setStep(p.step()).setDecoder(previewDecoder(p.decoder())).setPng(ByteString.copyFrom(png(p.frame()))));
            case GenerationEvent.Result r -> b.setResult(result(r, plan));
        }
        return b.build();
    }

    private static Result result(GenerationEvent.Result r, GenerationPlan plan) {
        var t = r.timings();
        Result.Builder b = Result.newBuilder().setImageIndex(r.imageIndex()).setSeed(r.seed())
                .setTimings(Timings.newBuilder().setQueueSeconds(t.queueSeconds())
                        .setSamplingSeconds(t.samplingSeconds()).setForwardSeconds(t.forwardSeconds())
                        .setDecodeSeconds(t.decodeSeconds()));
        Frame image = r.image() != null ? r.image() : r.sample();
        if (plan.outputs().contains(io.ditserve.server.engine.OutputFormat.PNG)) {
            b.setPng(ByteString.copyFrom(png(image)));
        }
        if (plan.outputs().contains(io.ditserve.server.engine.OutputFormat.TENSOR)) {
            b.setTensor(tensor(r.sample()));
        }
        if (plan.outputs().contains(io.ditserve.server.engine.OutputFormat.IMAGE_TENSOR)) {
            b.setImageTensor(tensor(image));
        }
        return b.build();
    }

    static byte[] png(Frame f) {
        return ImageCodec.png(f.data(), 0, f.channels(), f.height(), f.width(), f.space() == Frame.Space.LATENT);
    }

    private static FloatTensor tensor(Frame f) {
        ByteBuffer bb = ByteBuffer.allocate(f.data().length * 4).order(ByteOrder.LITTLE_ENDIAN);
        bb.asFloatBuffer().put(f.data());
        return FloatTensor.newBuilder().addShape(f.channels()).addShape(f.height()).addShape(f.width())
                .setData(ByteString.copyFrom(bb.array())).build();
    }

    private static Accepted accepted(GenerationEvent.Accepted e) {
        GenerationPlan p = e.plan();
        Accepted.Builder a = Accepted.newBuilder()
                .setRequestId(e.requestId())
                .setQueuePosition(e.queuePosition())
                .setModel(p.model().name())
                .setBackend(p.model().backend().name())
                .setSteps(p.steps())
                .setSampler(sampler(p.sampler()))
                .setEta(p.eta())
                .setGuidanceScale(p.guidance())
                .setGuidanceMode(guidanceMode(p.guidanceMode()))
                .setClassId(p.label())
                .setStepCache(stepCache(p.stepCaching()))
                .setBlockEvaluations(p.stepCaching().blockEvaluations(e.evaluations(), p.model().spec().depth()))
                .setEvaluations(e.evaluations())
                .setTimestepShift((float) p.timestepShift());
        for (long s : p.seeds()) {
            a.addSeeds(s);
        }
        boolean vp = !p.model().spec().process().flow();
        for (float t : e.times()) {
            a.addTimes(t);
            if (vp) {
                a.addTimesteps((int) t);
            }
        }
        if (p.guidanceInterval() != null) {
            a.setGuidanceInterval(interval(p.guidanceInterval()));
        }
        if (p.prompt() != null) {
            addTokens(a, p.prompt(), false);
            addTokens(a, p.negativePrompt(), true);
        }
        return a.build();
    }

    private static void addTokens(Accepted.Builder a, io.ditserve.server.model.TextPipeline.Embedding e,
            boolean negative) {
        for (var t : e.tokens()) {
            a.addPromptTokens(io.ditserve.proto.v1.PromptTokens.newBuilder().setEncoder(t.encoder())
                    .setNegative(negative).setTokens(t.tokens()).setLimit(t.limit()).setTruncated(t.truncated()));
        }
    }

    static io.ditserve.proto.v1.StepCacheSettings stepCache(StepCaching c) {
        return c.enabled()
                ? io.ditserve.proto.v1.StepCacheSettings.newBuilder()
                        .setMethod(io.ditserve.proto.v1.StepCacheMethod.STEP_CACHE_INTERVAL)
                        .setInterval(c.interval()).build()
                : io.ditserve.proto.v1.StepCacheSettings.newBuilder()
                        .setMethod(io.ditserve.proto.v1.StepCacheMethod.STEP_CACHE_OFF).build();
    }

    // ---- descriptions

    static ServerStatus serverStatus(Engine.Status s) {
        ServerStatus.Builder b = ServerStatus.newBuilder().setServing(s.serving()).setMaxActive(s.maxActive())
                .setMaxQueued(s.maxQueued()).setGenerationsCompleted(s.generationsCompleted())
                .setStepsComputed(s.stepsComputed());
        s.running().forEach(g -> b.addRunning(generation(g)));
        s.queued().forEach(g -> b.addQueued(generation(g)));
        return b.build();
    }

    private static GenerationStatus generation(Engine.GenerationInfo g) {
        return GenerationStatus.newBuilder().setRequestId(g.requestId()).setModel(g.model())
                .setNumImages(g.numImages()).setStepsDone(g.stepsDone()).setTotalSteps(g.totalSteps())
                .setQueuePosition(g.queuePosition()).setAgeSeconds(g.ageSeconds()).build();
    }

    static ModelInfo info(LoadedModel m) {
        ModelSpec s = m.spec();
        ModelInfo.Builder b = ModelInfo.newBuilder()
                .setName(s.name()).setDescription(s.description()).setImageSize(s.inputSize())
                .setInChannels(s.inChannels()).setOutChannels(s.outChannels()).setLearnSigma(s.learnSigma())
                .setSpace(s.space().configName()).setBackend(m.backend().name()).setPatchSize(s.patchSize())
                .setHiddenSize(s.hiddenSize()).setDepth(s.depth()).setNumHeads(s.numHeads())
                .setParameters(m.parameters())
                .setOutputImageSize(m.outputImageSize())
                .setStepCache(m.backend().supportsStepCache())
                .setDefaults(ModelDefaults.newBuilder()
                        .setSampler(sampler(modelSampler(s)))
                        .setSteps(s.defaults().steps()).setGuidanceScale((float) s.defaults().guidance())
                        .setEta((float) s.defaults().eta())
                        .setGuidanceMode(guidanceMode(modelGuidanceMode(s)))
                        .setTimestepShift((float) s.defaults().timestepShift()))
                .setFamily(s.family()).setPrediction(s.process().prediction().configName())
                .setPath(s.process().path().configName()).setTimeInput(s.process().timeInput().configName())
                .setQkNorm(s.qkNorm())
                .setConditioning(m.textConditioned() ? "text" : "class");
        if (m.text() != null) {
            for (var e : m.text().encoders()) {
                b.addTextEncoders(io.ditserve.proto.v1.TextEncoderInfo.newBuilder().setRole(e.spec().role())
                        .setClassName(e.spec().kind().className()).setMaxTokens(e.tokenizer().maxLength())
                        .setWidth(e.spec().width()).setBackend(e.encoder().backendName()));
            }
        }
        if (s.defaults().guidanceInterval() != null) {
            b.getDefaultsBuilder().setGuidanceInterval(interval(s.defaults().guidanceInterval()));
        }
        for (Sampler sm : Sampler.forProcess(s.process())) {
            b.addSamplers(sampler(sm));
        }
        for (int i = 0; i < s.classNames().size(); i++) {
            b.addClasses(ClassInfo.newBuilder().setId(i).setName(s.classNames().get(i)));
        }
        m.vae().ifPresent(d -> b.addDecoders(decoder("vae", d)));
        m.taesd().ifPresent(d -> b.addDecoders(decoder("taesd", d)));
        return b.build();
    }

    static io.ditserve.proto.v1.GuidanceInterval interval(ModelSpec.GuidanceInterval i) {
        return io.ditserve.proto.v1.GuidanceInterval.newBuilder().setLow((float) i.low()).setHigh((float) i.high())
                .build();
    }

    private static DecoderInfo decoder(String role, Decoder d) {
        return DecoderInfo.newBuilder().setRole(role).setClassName(d.spec().kind().className())
                .setScaleFactor(d.spec().scaleFactor()).addAllBlockOutChannels(d.spec().blockOutChannels())
                .setParameters(DecoderCheckpoint.parameterCount(d.spec())).setBackend(d.backendName()).build();
    }
}
