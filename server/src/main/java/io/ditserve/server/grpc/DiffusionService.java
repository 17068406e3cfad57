package io.ditserve.server.grpc;

import io.ditserve.backend.ModelSpec;
import io.ditserve.proto.v1.ClassInfo;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.GuidanceMode;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.proto.v1.ListModelsResponse;
import io.ditserve.proto.v1.ModelDefaults;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.Sampler;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.engine.GenerationPlan;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.model.ModelRepository;
import io.ditserve.server.observe.ServerMetrics;
import org.slf4j.MDC;
import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import jakarta.inject.Inject;
import jakarta.inject.Singleton;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** The {@code dit.v1.DiffusionService} implementation. Handlers validate and submit; they never compute. */
@Singleton
public final class DiffusionService extends DiffusionServiceGrpc.DiffusionServiceImplBase {
    private static final Logger log = LoggerFactory.getLogger(DiffusionService.class);

    private final ModelRepository models;
    private final Engine engine;
    private final RequestValidator validator;

    private final ServerMetrics metrics;

    @Inject
    public DiffusionService(ModelRepository models, Engine engine, RequestValidator validator, ServerMetrics metrics) {
        this.models = Objects.requireNonNull(models, "models");
        this.engine = Objects.requireNonNull(engine, "engine");
        this.validator = Objects.requireNonNull(validator, "validator");
        this.metrics = Objects.requireNonNull(metrics, "metrics");
    }

    @Override
    public void generate(GenerateRequest request, StreamObserver<GenerateEvent> responseObserver) {
        ServerCallStreamObserver<GenerateEvent> call = (ServerCallStreamObserver<GenerateEvent>) responseObserver;
        String model = request.getModel();
        StreamSink sink = new StreamSink(call, metrics::previewsDropped, code -> metrics.request(models.find(model).isPresent() ? model : "unknown", code.name()));
        // handlers first, before anything can be sent: a cancel or a ready signal may arrive at any time
        Engine.Handle[] handle = new Engine.Handle[1];
        call.setOnCancelHandler(() -> {
            Engine.Handle h;
            synchronized (handle) {
                h = handle[0];
            }
            if (h != null) {
                h.cancel(Status.CANCELLED.withDescription("client cancelled or disconnected"));
                log.info("[{}] cancelled by the client", h.id());
            }
        });
        call.setOnReadyHandler(sink::drain);
        GenerationPlan plan;
        try {
            plan = validator.validate(request);
            Engine.Handle h = engine.submit(plan, sink);
            synchronized (handle) {
                handle[0] = h;
            }
            MDC.put("rid", h.id());
            if (call.isCancelled()) {
                h.cancel(Status.CANCELLED.withDescription("client cancelled"));
            }
            log.info("[{}] accepted: model={} images={} steps={} sampler={} guidance={}", h.id(), request.getModel(),
                    plan.numImages(), plan.steps(), plan.sampler(), plan.guidance());
            MDC.remove("rid");
        } catch (StatusException e) {
            log.info("rejected request for model '{}': {} {}", request.getModel(), e.getStatus().getCode(),
                    e.getStatus().getDescription());
            sink.onFailed(e.getStatus());
        }
    }

    @Override
    public void listModels(ListModelsRequest request, StreamObserver<ListModelsResponse> responseObserver) {
        ListModelsResponse.Builder b = ListModelsResponse.newBuilder();
        models.all().forEach(m -> b.addModels(info(m)));
        responseObserver.onNext(b.build());
        responseObserver.onCompleted();
    }

    @Override
    public void getModel(GetModelRequest request, StreamObserver<ModelInfo> responseObserver) {
        models.find(request.getName()).ifPresentOrElse(m -> {
            responseObserver.onNext(info(m));
            responseObserver.onCompleted();
        }, () -> responseObserver.onError(Status.NOT_FOUND.withDescription("model '" + request.getName()
                + "' not found; available models: " + models.names()).asRuntimeException()));
    }

    @Override
    public void getServerStatus(io.ditserve.proto.v1.GetServerStatusRequest request,
            StreamObserver<io.ditserve.proto.v1.ServerStatus> responseObserver) {
        responseObserver.onNext(engine.status());
        responseObserver.onCompleted();
    }

    public long droppedPreviews() {
        return metrics.previewsDropped();
    }

    static ModelInfo info(LoadedModel m) {
        ModelSpec s = m.spec();
        ModelInfo.Builder b = ModelInfo.newBuilder()
                .setName(s.name()).setDescription(s.description()).setImageSize(s.inputSize())
                .setInChannels(s.inChannels()).setOutChannels(s.outChannels()).setLearnSigma(s.learnSigma())
                .setSpace(s.space()).setBackend(m.backend().name()).setPatchSize(s.patchSize())
                .setHiddenSize(s.hiddenSize()).setDepth(s.depth()).setNumHeads(s.numHeads())
                .setParameters(m.parameters())
                .setDefaults(ModelDefaults.newBuilder()
                        .setSampler(s.defaults().sampler().equals("ddpm") ? Sampler.SAMPLER_DDPM : Sampler.SAMPLER_DDIM)
                        .setSteps(s.defaults().steps()).setGuidanceScale((float) s.defaults().guidance())
                        .setEta((float) s.defaults().eta())
                        .setGuidanceMode(s.guidanceMode().equals("all")
                                ? GuidanceMode.GUIDANCE_MODE_ALL : GuidanceMode.GUIDANCE_MODE_FIRST_THREE));
        for (int i = 0; i < s.classNames().size(); i++) {
            b.addClasses(ClassInfo.newBuilder().setId(i).setName(s.classNames().get(i)));
        }
        return b.build();
    }
}
