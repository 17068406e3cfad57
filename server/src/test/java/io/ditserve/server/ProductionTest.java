package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.inject.Guice;
import com.google.inject.ProvisionException;
import com.google.inject.Stage;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetServerStatusRequest;
import io.ditserve.proto.v1.ServerStatus;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.security.Transport;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.inprocess.InProcessServerBuilder;
import java.io.File;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Admission limits, status, faults, shutdown, authentication, TLS and metrics, on the real server. */
class ProductionTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    private static ServerConfig config() {
        ServerConfig c = TestServers.config();
        c.maxActive = 1;
        c.maxQueued = 1;
        return c;
    }

    private TestServers.Running inProcess(Consumer<ServerConfig> change) throws Exception {
        ServerConfig c = config();
        change.accept(c);
        TestServers.Running r = TestServers.inProcess(c);
        closers.add(r);
        return r;
    }

    private static GenerateRequest longRequest() {
        return GenerateRequest.newBuilder().setModel("latent-tiny").setClassId(1).setSteps(1000).setGuidanceScale(2)
                .build();
    }

    @Test
    void queueLimitStatusAndQueuePositions() throws Exception {
        TestServers.Running r = inProcess(c -> { });
        DitClient client = r.client();
        DitClient.EventStream a = client.generate(longRequest());
        closers.add(a);
        assertThat(a.next().getAccepted().getQueuePosition()).isZero();
        DitClient.EventStream b = client.generate(longRequest());
        closers.add(b);
        assertThat(b.next().getAccepted().getQueuePosition()).isEqualTo(1);
        assertThatThrownBy(() -> client.generate(longRequest()).next())
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
                    assertThat(e.getStatus().getDescription()).contains("busy");
                });
        ServerStatus st = DiffusionServiceGrpc.newBlockingStub(r.channel())
                .getServerStatus(GetServerStatusRequest.getDefaultInstance());
        assertThat(st.getServing()).isTrue();
        assertThat(st.getRunningList()).hasSize(1);
        assertThat(st.getQueuedList()).hasSize(1);
        assertThat(st.getQueued(0).getQueuePosition()).isEqualTo(1);
        assertThat(st.getRunning(0).getTotalSteps()).isEqualTo(1000);
        a.close(); // frees the slot: b starts
        GenerateEvent next = b.next();
        while (!next.hasProgress()) {
            next = b.next();
        }
        assertThat(next.getProgress().getStep()).isGreaterThanOrEqualTo(1);
    }

    @Test
    void queuedRequestsHearTheirNewPositionAndPreviewRateIsCapped() throws Exception {
        TestServers.Running r = inProcess(c -> {
            c.maxQueued = 2;
            c.minPreviewInterval = 5;
        });
        DitClient client = r.client();
        assertThatThrownBy(() -> client.generate(GenerateRequest.newBuilder().setModel("pixel-tiny").setSteps(20)
                .setPreviewInterval(2).build()).next()).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription()).startsWith("preview_interval:").contains("5..20");
                });
        DitClient.EventStream a = client.generate(longRequest());
        closers.add(a);
        a.next();
        DitClient.EventStream b = client.generate(longRequest());
        closers.add(b);
        assertThat(b.next().getAccepted().getQueuePosition()).isEqualTo(1);
        DitClient.EventStream c = client.generate(longRequest());
        closers.add(c);
        assertThat(c.next().getAccepted().getQueuePosition()).isEqualTo(2);
        b.close(); // leaves the queue: c moves up
        GenerateEvent update = c.next();
        assertThat(update.hasQueued()).isTrue();
        assertThat(update.getQueued().getQueuePosition()).isEqualTo(1);
    }

    @Test
    void backendFailureFailsOnlyThatRequest() throws Exception {
        TestServers.Running r = inProcess(c -> {
            c.maxActive = 2;
            c.modelBackends.put("pixel-tiny", "faulty");
        });
        DitClient client = r.client();
        CompletableFuture<List<GenerateEvent>> good = CompletableFuture.supplyAsync(() -> {
            List<GenerateEvent> ev = new ArrayList<>();
            try (DitClient.EventStream s = client.generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                    .setClassId(1).setSteps(30).setGuidanceScale(1).build())) {
                s.forEachRemaining(ev::add);
            }
            return ev;
        });
        assertThatThrownBy(() -> {
            try (DitClient.EventStream s = client.generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                    .setClassId(FaultyBackendProvider.POISON_LABEL).setSteps(30).setGuidanceScale(1).build())) {
                s.forEachRemaining(e -> { });
            }
        }).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INTERNAL);
            assertThat(e.getStatus().getDescription()).contains("faulty", "simulated device fault");
        });
        List<GenerateEvent> ev = good.get(30, TimeUnit.SECONDS);
        assertThat(ev.get(ev.size() - 1).hasResult()).isTrue();
    }

    @Test
    void shutdownDrainsThenCancelsWithUnavailable() throws Exception {
        TestServers.Running r = inProcess(c -> c.maxQueued = 4);
        DitClient client = r.client();
        DitClient.EventStream running = client.generate(longRequest());
        closers.add(running);
        running.next();
        long t0 = System.nanoTime();
        Thread stopper = new Thread(r.server()::stop);
        stopper.start();
        assertThatThrownBy(() -> running.forEachRemaining(e -> { }))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                    assertThat(e.getStatus().getDescription()).contains("shut down");
                });
        stopper.join(60_000);
        assertThat(stopper.isAlive()).as("stop returned").isFalse();
        double seconds = (System.nanoTime() - t0) / 1e9;
        assertThat(seconds).as("grace period of 1 s honoured").isGreaterThanOrEqualTo(0.9);
        assertThatThrownBy(() -> client.listModels()).isInstanceOfSatisfying(StatusRuntimeException.class,
                e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE));
    }

    @Test
    void bearerTokensGuardEverythingButHealth(@TempDir Path dir) throws Exception {
        Path tokens = dir.resolve("tokens");
        Files.writeString(tokens, "# comment\ns3cret-token\n");
        TestServers.Running r = inProcess(c -> c.authTokensFile = tokens.toString());
        var health = HealthGrpc.newBlockingStub(r.channel()).check(HealthCheckRequest.getDefaultInstance());
        assertThat(health.getStatus()).isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
        assertThatThrownBy(() -> r.client().listModels()).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAUTHENTICATED);
            assertThat(e.getStatus().getDescription()).contains("missing bearer token");
        });
        var wrong = DiffusionServiceGrpc.newBlockingStub(r.channel()).withCallCredentials(new TestToken("nope"));
        assertThatThrownBy(() -> wrong.listModels(io.ditserve.proto.v1.ListModelsRequest.getDefaultInstance()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAUTHENTICATED);
                    assertThat(e.getStatus().getDescription()).doesNotContain("nope").doesNotContain("s3cret");
                });
        var right = DiffusionServiceGrpc.newBlockingStub(r.channel()).withCallCredentials(new TestToken("s3cret-token"));
        assertThat(right.listModels(io.ditserve.proto.v1.ListModelsRequest.getDefaultInstance()).getModelsCount())
                .isEqualTo(TestServers.FIXTURE_MODELS);
    }

    /** Sends a fixed bearer token. */
    static final class TestToken extends io.grpc.CallCredentials {
        private final String token;

        TestToken(String token) {
            this.token = token;
        }

        @Override
        public void applyRequestMetadata(RequestInfo info, java.util.concurrent.Executor e, MetadataApplier applier) {
            io.grpc.Metadata m = new io.grpc.Metadata();
            m.put(io.grpc.Metadata.Key.of("authorization", io.grpc.Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
            applier.apply(m);
        }
    }

    @Test
    void mutualTlsWithTokenOverNetty(@TempDir Path dir) throws Exception {
        Pki pki = Pki.create(dir);
        Path tokens = dir.resolve("tokens");
        Files.writeString(tokens, "tls-token\n");
        ServerConfig c = config();
        c.port = 0;
        c.tlsCert = pki.serverCert.toString();
        c.tlsKey = pki.serverKey.toString();
        c.tlsClientCa = pki.ca.toString();
        c.authTokensFile = tokens.toString();
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, Transport.serverBuilder(c)))
                .getInstance(DitServer.class).start();
        closers.add(server::stop);
        String target = "localhost:" + server.port();
        try (DitClient ok = DitClient.connect(target, pki.ca.toFile(), pki.clientCert.toFile(), pki.clientKey.toFile(),
                "tls-token")) {
            assertThat(ok.listModels()).hasSize(TestServers.FIXTURE_MODELS);
        }
        // without a client certificate the TLS handshake fails
        try (DitClient noCert = DitClient.connect(target, pki.ca.toFile(), null, null, "tls-token")) {
            assertThatThrownBy(noCert::listModels).isInstanceOf(StatusRuntimeException.class);
        }
        // plaintext to a TLS port fails
        try (DitClient plain = DitClient.connect(target)) {
            assertThatThrownBy(plain::listModels).isInstanceOf(StatusRuntimeException.class);
        }
    }

    /** A throw-away CA, server and client certificates made with the openssl command. */
    record Pki(Path ca, Path serverCert, Path serverKey, Path clientCert, Path clientKey) {
        static Pki create(Path d) throws Exception {
            sh(d, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
                    "-keyout", "ca.key", "-out", "ca.pem");
            Files.writeString(d.resolve("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
            for (String who : List.of("server", "client")) {
                sh(d, "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout",
                        who + ".key", "-out", who + ".csr");
                sh(d, "openssl", "x509", "-req", "-in", who + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", who + ".pem");
                // gRPC's key manager wants PKCS#8
                sh(d, "openssl", "pkcs8", "-topk8", "-nocrypt", "-in", who + ".key", "-out", who + ".p8.key");
            }
            return new Pki(d.resolve("ca.pem"), d.resolve("server.pem"), d.resolve("server.p8.key"),
                    d.resolve("client.pem"), d.resolve("client.p8.key"));
        }

        private static void sh(Path dir, String... cmd) throws Exception {
            Process p = new ProcessBuilder(cmd).directory(dir.toFile()).redirectErrorStream(true).start();
            String out = new String(p.getInputStream().readAllBytes());
            if (p.waitFor() != 0) {
                throw new IllegalStateException(String.join(" ", cmd) + " failed: " + out);
            }
        }
    }

    @Test
    void oversizedRequestIsRejectedByTheTransport() throws Exception {
        ServerConfig c = config();
        c.port = 0;
        c.maxInboundMessageBytes = 1 << 20;
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, Transport.serverBuilder(c)))
                .getInstance(DitServer.class).start();
        closers.add(server::stop);
        try (DitClient client = DitClient.connect("localhost:" + server.port())) {
            GenerateRequest huge = GenerateRequest.newBuilder().setModel("pixel-tiny").setInitialNoise(
                    io.ditserve.proto.v1.FloatTensor.newBuilder().setData(
                            com.google.protobuf.ByteString.copyFrom(new byte[2 << 20]))).build();
            assertThatThrownBy(() -> client.generate(huge).next()).isInstanceOfSatisfying(StatusRuntimeException.class,
                    e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED));
            assertThat(client.listModels()).hasSize(TestServers.FIXTURE_MODELS); // the server carries on
        }
    }

    @Test
    void everyLogLineOfARequestCarriesItsId() throws Exception {
        var root = (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        var appender = new ch.qos.logback.core.read.ListAppender<ch.qos.logback.classic.spi.ILoggingEvent>();
        appender.start();
        root.addAppender(appender);
        try {
            TestServers.Running r = inProcess(c -> c.modelBackends.put("pixel-tiny", "faulty"));
            String id;
            try (DitClient.EventStream s = r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                    .setClassId(FaultyBackendProvider.POISON_LABEL).setSteps(3).setGuidanceScale(1).build())) {
                id = s.next().getAccepted().getRequestId();
                assertThatThrownBy(() -> s.forEachRemaining(e -> { })).isInstanceOf(StatusRuntimeException.class);
            }
            List<String> lines = appender.list.stream()
                    .filter(e -> e.getFormattedMessage().contains("accepted") || e.getLevel().toInt() >= 30000)
                    .filter(e -> e.getLoggerName().startsWith("io.ditserve"))
                    .map(e -> e.getMDCPropertyMap().get("rid") + " " + e.getFormattedMessage()).toList();
            assertThat(lines).isNotEmpty().allMatch(l -> l.startsWith(id + " "), "starts with " + id);
        } finally {
            root.detachAppender(appender);
        }
    }

    @Test
    void metricsAreScrapedOverHttp() throws Exception {
        TestServers.Running r = inProcess(c -> { });
        try (DitClient.EventStream s = r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(2).setNumImages(3).setSteps(5).setPreviewInterval(1).build())) {
            s.forEachRemaining(e -> { });
        }
        assertThatThrownBy(() -> r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setSteps(5000).build()).next()).isInstanceOf(StatusRuntimeException.class);
        String body = HttpClient.newHttpClient().send(HttpRequest.newBuilder(
                URI.create("http://localhost:" + r.server().metricsPort() + "/metrics")).build(),
                HttpResponse.BodyHandlers.ofString()).body();
        assertThat(body).contains("dit_requests_total{code=\"OK\",model=\"pixel-tiny\"} 1.0");
        assertThat(body).contains("dit_requests_total{code=\"INVALID_ARGUMENT\",model=\"pixel-tiny\"} 1.0");
        assertThat(body).contains("dit_images_generated_total{model=\"pixel-tiny\"} 3.0");
        assertThat(body).contains("dit_step_seconds_count{backend=\"java\",model=\"pixel-tiny\"} 5");
        assertThat(body).contains("dit_forward_seconds_bucket");
        assertThat(body).contains("dit_queue_depth 0");
        assertThat(body).contains("dit_active_generations 0");
        assertThat(body).contains("dit_preview_frames_dropped_total");
    }

    @Test
    void badModelFilesFailAtStartupNamingFileAndReason(@TempDir Path dir) throws Exception {
        Path src = TestPaths.fixture("pixel-tiny");
        Path m = dir.resolve("models/broken");
        Files.createDirectories(m);
        Files.copy(src.resolve("config.json"), m.resolve("config.json"));
        byte[] weights = Files.readAllBytes(src.resolve("weights.safetensors"));
        Files.write(m.resolve("weights.safetensors"), java.util.Arrays.copyOf(weights, weights.length / 2));
        assertThat(startupError(dir.resolve("models"), "java")).contains("weights.safetensors")
                .contains("truncated");

        Files.delete(m.resolve("weights.safetensors"));
        assertThat(startupError(dir.resolve("models"), "java")).contains("weights.safetensors").contains("missing");

        Files.copy(src.resolve("weights.safetensors"), m.resolve("weights.safetensors"));
        Files.writeString(m.resolve("config.json"), Files.readString(m.resolve("config.json"))
                .replace("\"hidden_size\": 64", "\"hidden_size\": 32"));
        assertThat(startupError(dir.resolve("models"), "java")).contains("weights.safetensors").contains("shape");

        Files.writeString(m.resolve("config.json"), "{\"input_size\": 16");
        assertThat(startupError(dir.resolve("models"), "java")).contains("config.json").contains("JSON");

        assertThat(startupError(TestPaths.repoRoot().resolve("tools/fixtures"), "nonesuch"))
                .contains("Unknown backend 'nonesuch'").contains("java");
    }

    private static String startupError(Path models, String backend) {
        ServerConfig c = config();
        c.models = models.toString();
        c.backend = backend;
        try {
            Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, InProcessServerBuilder.forName("x")))
                    .getInstance(DitServer.class).stop();
        } catch (ProvisionException | com.google.inject.CreationException e) {
            StringBuilder sb = new StringBuilder();
            for (Throwable t = e; t != null; t = t.getCause()) {
                sb.append(t.getMessage()).append('\n');
            }
            return sb.toString();
        }
        throw new AssertionError("server started although the model folder is bad");
    }

    @SuppressWarnings("unused")
    private static File file(Path p) {
        return p.toFile();
    }
}
