package io.ditserve.server.grpc;

import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.proto.v1.ListModelsResponse;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.engine.GenerationPlan;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.model.ModelRepository;
import io.ditserve.server.observe.ServerMetrics;
import org.slf4j.MDC;
import io.grpc.Context;
import io.grpc.Deadline;
import io.grpc.Status;
import io.grpc.StatusException;
import io.grpc.stub.ServerCallStreamObserver;
import io.grpc.stub.StreamObserver;
import jakarta.inject.Inject;
import jakarta.inject.Singleton;
import java.time.Duration;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.ExecutorService;
import io.ditserve.server.engine.Failure;
import io.ditserve.server.engine.Rejected;
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
    private final ExecutorService sender;
    private final java.util.concurrent.ScheduledExecutorService deliveryTimer;
    private final Duration deliveryDeadline;
    private final DeliveryLedger ledger;

    @Inject
    public DiffusionService(ModelRepository models, Engine engine, RequestValidator validator, ServerMetrics metrics,
            @EventSender ExecutorService sender,
            @DeliveryDeadline java.util.concurrent.ScheduledExecutorService deliveryTimer,
            @DeliveryDeadline Duration deliveryDeadline, DeliveryLedger ledger) {
        this.ledger = Objects.requireNonNull(ledger, "ledger");
        this.sender = Objects.requireNonNull(sender, "sender");
        this.deliveryTimer = Objects.requireNonNull(deliveryTimer, "deliveryTimer");
        this.deliveryDeadline = Objects.requireNonNull(deliveryDeadline, "deliveryDeadline");
        this.models = Objects.requireNonNull(models, "models");
        this.engine = Objects.requireNonNull(engine, "engine");
        this.validator = Objects.requireNonNull(validator, "validator");
        this.metrics = Objects.requireNonNull(metrics, "metrics");
    }

    @Override
    public void generate(GenerateRequest request, StreamObserver<GenerateEvent> responseObserver) {
        ServerCallStreamObserver<GenerateEvent> call = (ServerCallStreamObserver<GenerateEvent>) responseObserver;
        String model = request.getModel();
        StreamSink sink = new StreamSink(call, sender, metrics::previewsDropped,
                code -> metrics.request(models.find(model).isPresent() ? model : "unknown", code.name()));
        sink.deliveryDeadline(deliveryTimer, deliveryDeadline);
        Deadline deadline = Context.current().getDeadline();
        sink.cancelCodeFrom(() -> ProtoMapping.status(cancelFailure(deadline)).getCode());
        // handlers first, before anything can be sent: a cancel or a ready signal may arrive at any time
        Engine.Handle[] handle = new Engine.Handle[1];
        String client = io.ditserve.server.security.ClientIdentity.current();
        sink.account(ledger.open(client, io.ditserve.server.security.ClientIdentity.connection()));
        call.setOnCloseHandler(sink::transportDone);
        call.setOnCancelHandler(() -> {
            sink.transportDone();
            Failure why = cancelFailure(deadline);
            Engine.Handle h;
            synchronized (handle) {
                h = handle[0];
            }
            if (h != null) {
                h.cancel(why);
                log.info("[{}] {}", h.id(), why.message());
            }
        });
        call.setOnReadyHandler(sink::drain);
        GenerationPlan plan;
        try {
            plan = validator.validate(request);
            String[] refusal = ledger.refusal(client, io.ditserve.server.security.ClientIdentity.connection());
            if (refusal != null) {
                metrics.callRefused(refusal[0]);
                throw Status.RESOURCE_EXHAUSTED.withDescription(refusal[1]).asException();
            }
            Engine.Handle h = engine.submit(plan, client, sink);
            synchronized (handle) {
                handle[0] = h;
            }
            MDC.put("rid", h.id());
            if (call.isCancelled()) {
                h.cancel(cancelFailure(deadline));
            }
            log.info("[{}] accepted: model={} images={} steps={} sampler={} guidance={}", h.id(), request.getModel(),
                    plan.numImages(), plan.steps(), plan.sampler(), plan.guidance());
            MDC.remove("rid");
        } catch (StatusException e) {
            log.info("rejected request for model {}: {} {}", ClientText.quote(request.getModel()),
                    e.getStatus().getCode(), e.getStatus().getDescription());
            sink.onFailed(e.getStatus());
        } catch (Rejected e) {
            log.info("rejected request for model {}: {} {}", ClientText.quote(request.getModel()),
                    e.failure().code(), e.failure().message());
            sink.onFailed(ProtoMapping.status(e.failure()));
        }
    }

    /**
     * How much of its deadline a call may have left when its cancellation arrives and still count as having hit
     * it: a client cancels at its own deadline, which reaches the server a little before the server's copy of it
     * (the same instant plus the network's one-way delay) expires.
     */
    static final Duration DEADLINE_SLACK = Duration.ofMillis(500);

    /** Why a call was cancelled: its deadline (expired or within {@link #DEADLINE_SLACK}), else the client. */
    static Failure cancelFailure(Deadline deadline) {
        if (deadline != null && deadline.timeRemaining(TimeUnit.NANOSECONDS) <= DEADLINE_SLACK.toNanos()) {
            return new Failure(Failure.Code.DEADLINE_EXCEEDED, "deadline exceeded");
        }
        return Failure.cancelled("cancelled by the client or disconnected");
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
        }, () -> responseObserver.onError(Status.NOT_FOUND.withDescription("model "
                + ClientText.quote(request.getName()) + " not found; available models: " + models.names())
                .asRuntimeException()));
    }

    @Override
    public void getServerStatus(io.ditserve.proto.v1.GetServerStatusRequest request,
            StreamObserver<io.ditserve.proto.v1.ServerStatus> responseObserver) {
        responseObserver.onNext(ProtoMapping.serverStatus(engine.status()));
        responseObserver.onCompleted();
    }

    public long droppedPreviews() {
        return metrics.previewsDropped();
    }

    static ModelInfo info(LoadedModel m) {
        return ProtoMapping.info(m);
    }
}
