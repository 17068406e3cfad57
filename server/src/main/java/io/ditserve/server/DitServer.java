package io.ditserve.server;

import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.grpc.DiffusionService;
import io.ditserve.server.model.ModelRepository;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.health.v1.HealthCheckResponse.ServingStatus;
import io.grpc.protobuf.services.HealthStatusManager;
import io.grpc.protobuf.services.ProtoReflectionServiceV1;
import jakarta.inject.Inject;
import jakarta.inject.Singleton;
import java.io.IOException;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The server's lifecycle. Start: services, health and reflection. Stop, as an ordered sequence: health goes
 * NOT_SERVING, the transport stops accepting calls, running generations get the grace period to finish (then are
 * cancelled with UNAVAILABLE), the transport closes, and finally the backends release their memory.
 */
@Singleton
public final class DitServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(DitServer.class);

    private final ServerBuilder<?> builder;
    private final DiffusionService service;
    private final HealthStatusManager health;
    private final Engine engine;
    private final ModelRepository models;
    private final ServerConfig config;
    private Server server;
    private boolean stopped;

    @Inject
    DitServer(ServerBuilder<?> builder, DiffusionService service, HealthStatusManager health, Engine engine,
            ModelRepository models, ServerConfig config) {
        this.builder = builder;
        this.service = service;
        this.health = health;
        this.engine = engine;
        this.models = models;
        this.config = config;
    }

    public synchronized DitServer start() throws IOException {
        server = builder
                .addService(service)
                .addService(health.getHealthService())
                .addService(ProtoReflectionServiceV1.newInstance())
                .build()
                .start();
        health.setStatus("", ServingStatus.SERVING);
        health.setStatus("dit.v1.DiffusionService", ServingStatus.SERVING);
        log.info("serving models {} on port {}", models.names(), server.getPort());
        return this;
    }

    public int port() {
        return server.getPort();
    }

    public DiffusionService service() {
        return service;
    }

    public Engine engine() {
        return engine;
    }

    public void awaitTermination() throws InterruptedException {
        server.awaitTermination();
    }

    /** Drains and stops; idempotent. */
    public synchronized void stop() {
        if (stopped || server == null) {
            return;
        }
        stopped = true;
        Duration grace = Duration.ofSeconds(config.shutdownGraceSeconds);
        log.info("shutting down: draining for up to {} s", grace.toSeconds());
        health.enterTerminalState(); // NOT_SERVING for every service
        server.shutdown(); // no new calls; running streams continue
        engine.shutdown(grace);
        try {
            if (!server.awaitTermination(5, TimeUnit.SECONDS)) {
                server.shutdownNow();
                server.awaitTermination(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            server.shutdownNow();
        }
        models.close();
        log.info("stopped");
    }

    @Override
    public void close() {
        stop();
    }
}
