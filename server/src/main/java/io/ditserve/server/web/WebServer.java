package io.ditserve.server.web;

import com.linecorp.armeria.common.HttpHeaderNames;
import com.linecorp.armeria.common.HttpMethod;
import com.linecorp.armeria.common.grpc.GrpcSerializationFormats;
import com.linecorp.armeria.server.HttpService;
import com.linecorp.armeria.server.Server;
import com.linecorp.armeria.server.ServerBuilder;
import com.linecorp.armeria.server.cors.CorsService;
import com.linecorp.armeria.server.cors.CorsServiceBuilder;
import com.linecorp.armeria.server.grpc.GrpcService;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.grpc.StrictParsing;
import io.grpc.BindableService;
import io.grpc.ManagedChannel;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import java.io.File;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletionException;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The web port ({@code web_port}, off unless configured): on one HTTP port (HTTP/1.1 and HTTP/2, TLS when the gRPC
 * port has it) it serves
 * <ul>
 *   <li>{@code dit.v1.DiffusionService} over gRPC-Web (binary and text) and plain gRPC, through Armeria's
 *       {@link GrpcService}: the SAME service instance behind the SAME interceptors as the gRPC port (bearer token,
 *       client identity for the per-client queue share, strict request parsing), so that a browser's call is
 *       validated, queued, limited and counted like any other;</li>
 *   <li>the page ({@code web/}, built by {@code web/build.sh}) at {@code /};</li>
 *   <li>the OpenAI Images API at {@code /v1/} ({@link OpenAiImages}).</li>
 * </ul>
 * CORS answers only the origins of {@code web_origins} (none configured: same-origin only, i.e. the page served
 * here). The transport limits of the gRPC port map onto Armeria's server (see {@link #limits}).
 */
public final class WebServer implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(WebServer.class);

    private final Server server;
    private final io.grpc.Server inProcess;
    private final ManagedChannel channel;
    private final ScheduledExecutorService timers;

    private WebServer(Server server, io.grpc.Server inProcess, ManagedChannel channel,
            ScheduledExecutorService timers) {
        this.server = server;
        this.inProcess = inProcess;
        this.channel = channel;
        this.timers = timers;
    }

    /**
     * Starts the web port, or returns null when {@code web_port} is −1 (the default).
     *
     * @param service the service instance of the gRPC port
     * @param chain the interceptors of the gRPC port, in the order given to {@code ServerInterceptors.intercept}
     */
    public static WebServer start(ServerConfig c, BindableService service, List<ServerInterceptor> chain)
            throws IOException {
        if (c.webPort < 0) {
            return null;
        }
        // the gRPC port's chain, with the caller's address made visible to ClientIdentity (Armeria's calls carry
        // no transport attributes): outermost, so it runs first
        List<ServerInterceptor> webChain = new ArrayList<>(chain);
        webChain.add(new RemoteAddressInterceptor());
        // and the client's grpc-timeout as the Context's deadline (DEADLINE_EXCEEDED, not CANCELLED, when it passes)
        ScheduledExecutorService timers = Executors.newSingleThreadScheduledExecutor(
                Thread.ofPlatform().name("dit-web-deadlines").daemon().factory());
        webChain.add(new DeadlineInterceptor(timers));
        ServerServiceDefinition definition = StrictParsing.wrap(ServerInterceptors.intercept(service, webChain));

        GrpcService grpc = GrpcService.builder()
                .addService(definition)
                .supportedSerializationFormats(GrpcSerializationFormats.PROTO, GrpcSerializationFormats.PROTO_WEB,
                        GrpcSerializationFormats.PROTO_WEB_TEXT)
                // StrictParsing hands the raw stream to the handler: Armeria must not parse with its own codec
                .useMethodMarshaller(true)
                .maxRequestMessageLength(c.maxInboundMessageBytes)
                .maxResponseMessageLength(Integer.MAX_VALUE) // as the gRPC port: no limit on responses
                .useClientTimeoutHeader(true)
                .build();

        // the OpenAI API calls the same service, behind the same chain, through an in-process gRPC server: its
        // requests pass the interceptors, the validator and the metrics exactly as a gRPC call does
        String name = "dit-web-" + InProcessServerBuilder.generateName();
        io.grpc.Server inProcess = InProcessServerBuilder.forName(name)
                .addService(definition)
                .maxInboundMessageSize(c.maxInboundMessageBytes)
                .build()
                .start();
        ManagedChannel channel = InProcessChannelBuilder.forName(name).maxInboundMessageSize(Integer.MAX_VALUE)
                .build();
        OpenAiImages openAi = new OpenAiImages(channel, c.minPreviewInterval);

        ServerBuilder sb = Server.builder();
        InetSocketAddress address = new InetSocketAddress(c.webPort);
        boolean tls = c.tlsCert != null && c.tlsKey != null;
        if (tls) {
            sb.https(address).tls(new File(c.tlsCert), new File(c.tlsKey));
            if (c.tlsClientCa != null) {
                File ca = new File(c.tlsClientCa);
                sb.tlsCustomizer(b -> b.trustManager(ca).clientAuth(io.netty.handler.ssl.ClientAuth.REQUIRE));
            }
        } else {
            sb.http(address);
        }
        limits(sb, c);
        // generations stream for minutes: no server-side request timeout (a client's grpc-timeout still applies)
        sb.requestTimeout(Duration.ZERO);
        // the gRPC routes: no HTTP body limit of their own, so that the gRPC message limit answers an oversized
        // request with RESOURCE_EXHAUSTED, as the gRPC port does (an HTTP 413 would reach clients as UNKNOWN)
        for (com.linecorp.armeria.server.Route route : grpc.routes()) {
            sb.route().addRoute(route).maxRequestLength(0).decorator(cors(c)).build(grpc);
        }
        sb.service("prefix:/v1/", openAi.service().decorate(cors(c)));
        HttpService page = Page.service();
        sb.serviceUnder("/", page);
        Server server = sb.build();
        try {
            server.start().join();
        } catch (CompletionException e) {
            timers.shutdownNow();
            channel.shutdownNow();
            inProcess.shutdownNow();
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            String msg = String.valueOf(cause.getMessage());
            if (cause instanceof java.net.BindException || msg.contains("Address already in use")) {
                throw new IOException("web_port " + c.webPort + " is in use: choose another with --set web_port=N "
                        + "(0 = any free port, -1 = no web port)", cause);
            }
            throw new IOException("web_port " + c.webPort + ": " + msg, cause);
        }
        WebServer web = new WebServer(server, inProcess, channel, timers);
        log.info("web on {}://localhost:{}/ (gRPC-Web, the page, the OpenAI Images API at /v1/){}",
                tls ? "https" : "http", web.port(),
                c.webOrigins.isEmpty() ? "" : "; CORS for " + c.webOrigins);
        return web;
    }

    /**
     * The transport limits of the gRPC port (README, "Transport limits"), mapped onto Armeria:
     * max_inbound_message_bytes → the largest gRPC(-Web) request message and HTTP request body;
     * max_concurrent_calls_per_connection → HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS (HTTP/1.1 carries one call at a
     * time per connection); max_connection_idle_seconds → the idle timeout (a connection without requests for that
     * long is closed); max_connection_age_seconds → the connection age limit; max_rst_frames_per_window /
     * rst_window_seconds → the rapid-reset guard. The per-call limits (max_queued, max_queued_per_client,
     * max_images, max_steps, min_preview_interval) are the engine's and the validator's, shared with the gRPC port.
     */
    static void limits(ServerBuilder sb, ServerConfig c) {
        sb.maxRequestLength(c.maxInboundMessageBytes + 64L * 1024)
                .http2MaxStreamsPerConnection(c.maxConcurrentCallsPerConnection)
                .idleTimeout(Duration.ofSeconds(c.maxConnectionIdleSeconds))
                .maxConnectionAge(Duration.ofSeconds(c.maxConnectionAgeSeconds));
        // keepalive_time_seconds is not mapped: Armeria's ping interval also sets the sockets' TCP keep-alive
        // options, in milliseconds where Linux expects seconds (setsockopt fails, logged per connection); the idle
        // timeout above closes silent connections instead
        if (c.maxRstFramesPerWindow > 0) {
            sb.http2MaxResetFramesPerWindow(c.maxRstFramesPerWindow, c.rstWindowSeconds);
        }
    }

    /** CORS for the configured origins ("*" = any); none configured: no cross-origin access at all. */
    static java.util.function.Function<? super HttpService, ? extends HttpService> cors(ServerConfig c) {
        if (c.webOrigins.isEmpty()) {
            return s -> s;
        }
        CorsServiceBuilder b = c.webOrigins.contains("*") ? CorsService.builderForAnyOrigin()
                : CorsService.builder(c.webOrigins);
        return b.allowRequestMethods(HttpMethod.POST, HttpMethod.GET, HttpMethod.OPTIONS)
                .allowRequestHeaders(HttpHeaderNames.CONTENT_TYPE, HttpHeaderNames.AUTHORIZATION,
                        HttpHeaderNames.of("x-grpc-web"), HttpHeaderNames.of("x-user-agent"),
                        HttpHeaderNames.of("grpc-timeout"), HttpHeaderNames.of("grpc-accept-encoding"),
                        HttpHeaderNames.of("x-stainless-lang"), HttpHeaderNames.of("x-stainless-package-version"),
                        HttpHeaderNames.of("x-stainless-os"), HttpHeaderNames.of("x-stainless-arch"),
                        HttpHeaderNames.of("x-stainless-runtime"), HttpHeaderNames.of("x-stainless-runtime-version"),
                        HttpHeaderNames.of("x-stainless-retry-count"), HttpHeaderNames.of("x-stainless-timeout"))
                .exposeHeaders(HttpHeaderNames.of("grpc-status"), HttpHeaderNames.of("grpc-message"),
                        HttpHeaderNames.of("grpc-status-details-bin"), HttpHeaderNames.of("grpc-encoding"))
                .maxAge(Duration.ofHours(1))
                .newDecorator();
    }

    /** The bound port. */
    public int port() {
        return server.activeLocalPort();
    }

    /** Stops the port (running calls end when the engine has ended them) and the in-process path. */
    public void stop() {
        channel.shutdown();
        inProcess.shutdown();
        server.stop().join();
        try {
            if (!inProcess.awaitTermination(2, TimeUnit.SECONDS)) {
                inProcess.shutdownNow();
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            inProcess.shutdownNow();
        }
        channel.shutdownNow();
        timers.shutdownNow();
    }

    @Override
    public void close() {
        stop();
    }
}
