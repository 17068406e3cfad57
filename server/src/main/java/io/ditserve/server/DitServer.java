package io.ditserve.server;

import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.engine.Engine;
import io.ditserve.server.grpc.DiffusionService;
import io.ditserve.server.grpc.EventSender;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import io.ditserve.server.model.ModelRepository;
import io.ditserve.server.grpc.StrictParsing;
import io.ditserve.server.observe.MetricsEndpoint;
import io.ditserve.server.observe.ServerMetrics;
import io.ditserve.server.security.BearerTokenInterceptor;
import io.ditserve.server.security.ClientIdentity;
import io.ditserve.server.security.Transport;
import io.grpc.Server;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import java.util.List;
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
    private final ServerMetrics metrics;
    private Server server;
    private HTTPServer metricsServer;
    private io.ditserve.server.web.WebServer webServer; // web_port: gRPC-Web, the page, the OpenAI API
    /** max_connections / max_connections_per_address on the gRPC port (owns its event loops), or null. */
    private io.ditserve.server.security.ConnectionLimits connectionLimits;
    private boolean stopped;

    private final ExecutorService sender;
    /** Runs the gRPC port's call handlers (set at start). */
    private ExecutorService callExecutor;

    @Inject
    DitServer(ServerBuilder<?> builder, DiffusionService service, HealthStatusManager health, Engine engine,
            ModelRepository models, ServerConfig config, ServerMetrics metrics, @EventSender ExecutorService sender) {
        this.sender = sender;
        this.metrics = metrics;
        this.builder = builder;
        this.service = service;
        this.health = health;
        this.engine = engine;
        this.models = models;
        this.config = config;
    }

    public synchronized DitServer start() throws IOException {
        engine.onLoopDeath(() -> {
            log.error("a compute loop failed: health NOT_SERVING");
            health.setStatus("", ServingStatus.NOT_SERVING);
            health.setStatus("dit.v1.DiffusionService", ServingStatus.NOT_SERVING);
        });
        engine.start();
        io.ditserve.server.observe.GrpcLogFilter.install(); // one line per minute for oversize messages, no stacks
        List<String> tokens = Transport.tokens(config);
        List<ServerInterceptor> auth = tokens.isEmpty() ? List.of() : List.of(new BearerTokenInterceptor(tokens,
                new io.ditserve.server.security.AuthGuard(config.authMaxFailures,
                        java.time.Duration.ofSeconds(config.authFailureWindowSeconds)), metrics::authFailure));
        // interceptors run last-listed first: the token check, then the client key for the per-client queue share
        List<ServerInterceptor> serviceChain = new java.util.ArrayList<>();
        serviceChain.add(new ClientIdentity(!tokens.isEmpty()));
        serviceChain.addAll(auth);
        // a bounded pool for the call handlers, which validate, submit and return (the engine computes): gRPC's
        // default, an unbounded cached pool, grew a thread per concurrent call under 1,000 calls at once (about 330
        // threads, each a stack and a malloc arena; NeverReadingClientsTest)
        callExecutor = Executors.newFixedThreadPool(Math.max(4, 2 * Runtime.getRuntime().availableProcessors()),
                Thread.ofPlatform().name("dit-call-", 0).daemon().factory());
        server = builder
                .executor(callExecutor)
                // StrictParsing: a request that does not parse gets INVALID_ARGUMENT, not UNKNOWN and a stack trace
                .addService(StrictParsing.wrap(ServerInterceptors.intercept(service, serviceChain)))
                // open: load balancers probe it without credentials
                .addService(StrictParsing.wrap(health.getHealthService().bindService()))
                .addService(StrictParsing.wrap(ServerInterceptors.intercept(ProtoReflectionServiceV1.newInstance(),
                        auth)))
                .build();
        connectionLimits = io.ditserve.server.security.Transport.connectionLimits(builder);
        if (connectionLimits != null) {
            connectionLimits.onRefused(metrics::connectionRefused);
        }
        try {
            server.start();
        } catch (IOException e) {
            if (!addressInUse(e)) {
                throw e;
            }
            throw new IOException("port " + config.port + " is in use: stop what listens "
                    + "there, or choose another port with --port N (0 = any free port)", e);
        }
        try {
            metricsServer = MetricsEndpoint.start(config, metrics);
        } catch (IOException e) {
            if (!addressInUse(e)) {
                throw e;
            }
            throw new IOException("metrics_port " + config.metricsPort + " on " + config.metricsHost + " is in use: "
                    + "choose another with --set metrics_port=N (0 = any free port, -1 = no metrics endpoint)", e);
        }
        // the same service instance behind the same interceptors, over gRPC-Web (null unless web_port is set)
        webServer = io.ditserve.server.web.WebServer.start(config, service, serviceChain);
        if (metricsServer != null) {
            log.info("metrics on http://{}:{}/metrics", config.metricsHost, metricsServer.getPort());
        }
        if (!tokens.isEmpty()) {
            log.info("bearer-token authentication on ({} token(s) configured)", tokens.size());
        }
        health.setStatus("", ServingStatus.SERVING);
        health.setStatus("dit.v1.DiffusionService", ServingStatus.SERVING);
        log.info("serving models {} on port {}", models.names(), server.getPort());
        return this;
    }

    /** A bind failure because the address is taken (Netty's native transport throws no BindException). */
    private static boolean addressInUse(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof java.net.BindException
                    || (t.getMessage() != null && t.getMessage().contains("Address already in use"))) {
                return true;
            }
        }
        return false;
    }

    public int port() {
        return server.getPort();
    }

    /** The web port (gRPC-Web, the page, the OpenAI API), or -1 when disabled. */
    public int webPort() {
        return webServer == null ? -1 : webServer.port();
    }

    /** The metrics HTTP port, or -1 when disabled. */
    public int metricsPort() {
        return metricsServer == null ? -1 : metricsServer.getPort();
    }

    public DiffusionService service() {
        return service;
    }

    public Engine engine() {
        return engine;
    }

    /** Connections open on the gRPC port, or -1 when no connection cap is configured (nothing counts them). */
    public int openConnections() {
        return connectionLimits == null ? -1 : connectionLimits.open();
    }

    public ServerMetrics metrics() {
        return metrics;
    }

    public void awaitTermination() throws InterruptedException {
        server.awaitTermination();
    }

    /**
     * Drains and stops; idempotent. Releases the engine, the senders and the backends also when {@link #start}
     * never ran or failed half-way.
     */
    public synchronized void stop() {
        if (stopped) {
            return;
        }
        stopped = true;
        Duration grace = Duration.ofSeconds(config.shutdownGraceSeconds);
        log.info("shutting down: draining for up to {} s", grace.toSeconds());
        health.enterTerminalState(); // NOT_SERVING for every service
        if (server != null) {
            server.shutdown(); // no new calls; running streams continue
        }
        engine.shutdown(grace);
        sender.shutdown(); // the streams' last events are already queued on it
        try {
            sender.awaitTermination(5, TimeUnit.SECONDS);
            if (server != null && !server.awaitTermination(5, TimeUnit.SECONDS)) {
                server.shutdownNow();
                server.awaitTermination(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            if (server != null) {
                server.shutdownNow();
            }
        }
        if (connectionLimits != null) {
            connectionLimits.close(); // the gRPC port's event loops, now that its server has stopped
        }
        if (callExecutor != null) {
            callExecutor.shutdown();
        }
        if (webServer != null) {
            webServer.stop(); // its generations ended with the engine's drain above
        }
        if (metricsServer != null) {
            metricsServer.close();
        }
        models.close();
        log.info("stopped");
    }

    @Override
    public void close() {
        stop();
    }
}
