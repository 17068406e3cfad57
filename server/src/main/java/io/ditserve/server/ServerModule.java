package io.ditserve.server;

import com.google.inject.AbstractModule;
import com.google.inject.Provides;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.engine.EngineConfig;
import io.ditserve.server.grpc.DiffusionService;
import io.ditserve.server.grpc.DeliveryDeadline;
import io.ditserve.server.grpc.EventSender;
import io.ditserve.backend.TiledDecoding;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import io.ditserve.server.grpc.RequestValidator;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.model.ModelRepository;
import io.ditserve.server.observe.ServerMetrics;
import io.grpc.ServerBuilder;
import io.grpc.protobuf.services.HealthStatusManager;
import jakarta.inject.Singleton;
import java.nio.file.Path;
import java.util.Objects;

/**
 * Wires the server. Fast and side-effect free: it only declares how to build things; the model repository loads
 * (and fails on bad files) when the injector is created in {@code Stage.PRODUCTION}. The transport is passed in,
 * so tests use an in-process server and production a Netty one.
 */
public final class ServerModule extends AbstractModule {
    private final ServerConfig config;
    private final ServerBuilder<?> serverBuilder;

    public ServerModule(ServerConfig config, ServerBuilder<?> serverBuilder) {
        this.config = Objects.requireNonNull(config, "config");
        this.serverBuilder = Objects.requireNonNull(serverBuilder, "serverBuilder");
    }

    @Override
    protected void configure() {
        binder().requireExplicitBindings();
        bind(ServerConfig.class).toInstance(config);
        bind(DiffusionService.class);
        bind(DitServer.class);
    }

    @Provides
    ServerBuilder<?> serverBuilder() {
        return serverBuilder;
    }

    @Provides
    @Singleton
    BackendRegistry backendRegistry() {
        return new BackendRegistry();
    }

    /**
     * A failed load, kept: Guice does not remember a singleton whose provider threw, and in {@code
     * Stage.PRODUCTION} asks again for every binding that depends on it, which would load every model again.
     */
    private BackendException modelLoadFailure;

    @Provides
    @Singleton
    synchronized ModelRepository modelRepository(ServerConfig c, BackendRegistry registry, ServerMetrics metrics)
            throws BackendException {
        if (modelLoadFailure != null) {
            throw modelLoadFailure;
        }
        BackendOptions options = new BackendOptions(c.effectiveThreads(), c.backendOptions);
        try {
            return ModelRepository.load(Path.of(c.models), registry, c.backend, c.modelBackends, options,
                    metrics::promptCacheLookup);
        } catch (BackendException e) {
            modelLoadFailure = e;
            throw e;
        }
    }

    @Provides
    @Singleton
    ServerMetrics metrics() {
        return new ServerMetrics();
    }

    @Provides
    @Singleton
    Engine engine(ServerConfig c, ServerMetrics metrics, ModelRepository models) {
        Engine engine = new Engine(new EngineConfig(c.maxActive, c.maxQueued, c.maxBatch,
                new TiledDecoding.Tiling(c.decodeTile, c.decodeTileOverlap), c.maxQueuedPerClient), metrics,
                models.all());
        metrics.bindEngine(engine);
        return engine;
    }

    @Provides
    @Singleton
    @EventSender
    ExecutorService eventSender(ServerConfig c) {
        // encodes and sends response events; a couple of threads keep PNG encoding off the compute threads
        return Executors.newFixedThreadPool(Math.max(2, Math.min(4, c.effectiveThreads())),
                Thread.ofPlatform().name("dit-send-", 0).daemon().factory());
    }

    @Provides
    @Singleton
    @DeliveryDeadline
    java.util.concurrent.ScheduledExecutorService deliveryTimer() {
        // one daemon thread, started on the first schedule: the deadlines of finished, unread streams
        return Executors.newSingleThreadScheduledExecutor(Thread.ofPlatform().name("dit-delivery").daemon().factory());
    }

    @Provides
    @Singleton
    io.ditserve.server.grpc.DeliveryLedger deliveryLedger(ServerConfig c, io.ditserve.server.observe.ServerMetrics m) {
        var ledger = new io.ditserve.server.grpc.DeliveryLedger(c.maxUndeliveredBytesPerClient,
                c.maxUndeliveredBytesPerConnection);
        m.undeliveredBytes(ledger::total);
        return ledger;
    }

    @Provides
    @DeliveryDeadline
    java.time.Duration deliveryDeadline(ServerConfig c) {
        return java.time.Duration.ofSeconds(c.deliveryDeadlineSeconds);
    }

    @Provides
    @Singleton
    RequestValidator requestValidator(ModelRepository models, ServerConfig c) {
        return new RequestValidator(models, new RequestValidator.Limits(c.maxImages, c.maxSteps, c.minPreviewInterval));
    }

    @Provides
    @Singleton
    HealthStatusManager health() {
        return new HealthStatusManager();
    }
}
