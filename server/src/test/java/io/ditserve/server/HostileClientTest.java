package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import com.google.inject.Guice;
import com.google.inject.Stage;
import com.google.protobuf.ByteString;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.grpc.ClientText;
import io.ditserve.server.grpc.RequestValidator;
import io.ditserve.server.security.Transport;
import io.grpc.CallOptions;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;
import java.util.logging.Handler;
import java.util.logging.LogRecord;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * What a hostile or careless client can send, over a real (Netty) transport: client strings in statuses and logs,
 * malformed protobuf, deadlines in the metrics, non-finite noise and weights; and the metrics endpoint's address and
 * token.
 */
class HostileClientTest {
    private final List<AutoCloseable> closers = new ArrayList<>();
    private ListAppender<ILoggingEvent> logs;
    private ch.qos.logback.classic.Logger rootLogger;
    /** gRPC's own (java.util.logging) records at WARNING and above; held strongly so the logger keeps its handler. */
    private final List<LogRecord> grpcWarnings = new java.util.concurrent.CopyOnWriteArrayList<>();
    private final java.util.logging.Logger grpcLogger = java.util.logging.Logger.getLogger("io.grpc");
    private final Handler grpcHandler = new Handler() {
        @Override
        public void publish(LogRecord r) {
            if (r.getLevel().intValue() >= java.util.logging.Level.WARNING.intValue()) {
                grpcWarnings.add(r);
            }
        }

        @Override
        public void flush() { }

        @Override
        public void close() { }
    };

    @BeforeEach
    void captureLogs() {
        rootLogger = (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(
                org.slf4j.Logger.ROOT_LOGGER_NAME);
        logs = new ListAppender<>();
        logs.start();
        rootLogger.addAppender(logs);
        grpcLogger.addHandler(grpcHandler);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
        rootLogger.detachAppender(logs);
        grpcLogger.removeHandler(grpcHandler);
    }

    private static ServerConfig config() {
        ServerConfig c = new ServerConfig();
        c.models = TestPaths.repoRoot().resolve("tools/fixtures").toString();
        c.port = 0;
        c.threads = 2;
        c.maxActive = 2;
        c.shutdownGraceSeconds = 1;
        c.metricsPort = 0;
        c.authTokensEnv = null;
        c.metricsTokenEnv = null;
        return c;
    }

    private record Running(DitServer server, ManagedChannel channel) {
        DitClient client() {
            return new DitClient(channel);
        }
    }

    private Running start(Consumer<ServerConfig> change) throws Exception {
        ServerConfig c = config();
        change.accept(c);
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, Transport.serverBuilder(c)))
                .getInstance(DitServer.class).start();
        closers.add(server::stop);
        ManagedChannel ch = Grpc.newChannelBuilder("localhost:" + server.port(), InsecureChannelCredentials.create())
                .maxInboundMetadataSize(8192).build(); // the limit standard clients have by default
        closers.add(ch::shutdownNow);
        return new Running(server, ch);
    }

    /**
     * The server's own log lines (io.ditserve loggers): the ones client strings can reach. Netty's leak detector
     * may log a multi-line report from any GC in the JVM (seen once under heavy load, 2026-12-05; a pooled buffer
     * of the transport, not built from client data), which says nothing about escaping.
     */
    private List<String> logLines() {
        return logs.list.stream().filter(e -> e.getLoggerName().startsWith("io.ditserve"))
                .map(ILoggingEvent::getFormattedMessage).toList();
    }

    // ---- client strings

    @Test
    void clientStringsAreEscapedAndCutInStatusesAndLogs() throws Exception {
        Running r = start(c -> { });
        String forged = "x\n12:00:00.000 ERROR [main] [-] forged - the server was hacked";
        assertThatThrownBy(() -> r.client().generate(GenerateRequest.newBuilder().setModel(forged).build()).next())
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).contains("'x\\u000A12:00").doesNotContain("\n");
                });
        String huge = "m".repeat(4 << 20);
        assertThatThrownBy(() -> r.client().generate(GenerateRequest.newBuilder().setModel(huge).build()).next())
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).contains("…(4194304 chars)").hasSizeLessThan(300);
                });
        assertThatThrownBy(() -> DiffusionServiceGrpc.newBlockingStub(r.channel())
                .getModel(GetModelRequest.newBuilder().setName(huge + "\u2028").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND);
                    assertThat(e.getStatus().getDescription()).hasSizeLessThan(300);
                });
        assertThatThrownBy(() -> r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassName("a\r\u0000\u202Eb\\'c").build()).next())
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription())
                            .startsWith("class_name: 'a\\u000D\\u0000\\u202Eb\\u005C\\u0027c' is not a class");
                });
        assertThat(r.client().listModels()).hasSize(TestServers.FIXTURE_MODELS); // the server carries on
        List<String> lines = logLines();
        assertThat(lines).anySatisfy(l -> assertThat(l).contains("rejected request for model 'x\\u000A12:00"));
        assertThat(lines).allSatisfy(l -> assertThat(l).doesNotContain("\n").doesNotContain("\r")
                .hasSizeLessThan(1000));
    }

    @Test
    void clientTextKeepsPrintableTextAndCountsWhatItCuts() {
        assertThat(ClientText.quote("Sneaker")).isEqualTo("'Sneaker'");
        assertThat(ClientText.quote("Ünïcödé 👟 名前")).isEqualTo("'Ünïcödé 👟 名前'");
        assertThat(ClientText.escape("a\tb\u0085c\uD800d")).isEqualTo("a\\u0009b\\u0085c\\uD800d");
        String cut = ClientText.escape("y".repeat(ClientText.MAX_CHARS + 10));
        assertThat(cut).isEqualTo("y".repeat(ClientText.MAX_CHARS) + "…(" + (ClientText.MAX_CHARS + 10) + " chars)");
        // a surrogate pair split by the cut is not left half-printed
        String pair = "z".repeat(ClientText.MAX_CHARS - 1) + "👟";
        assertThat(ClientText.escape(pair)).startsWith("z".repeat(ClientText.MAX_CHARS - 1) + "\\uD83D…(");
    }

    // ---- malformed protobuf

    /** Sends bytes as they are: a client whose messages need not parse. */
    private enum RawBytes implements MethodDescriptor.Marshaller<byte[]> {
        INSTANCE;

        @Override
        public InputStream stream(byte[] value) {
            return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream stream) {
            try {
                return stream.readAllBytes();
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
        }
    }

    private static MethodDescriptor<byte[], byte[]> raw(String method, MethodDescriptor.MethodType type) {
        return MethodDescriptor.<byte[], byte[]>newBuilder().setType(type).setFullMethodName(method)
                .setRequestMarshaller(RawBytes.INSTANCE).setResponseMarshaller(RawBytes.INSTANCE).build();
    }

    @Test
    void malformedRequestsGetInvalidArgumentAndOneShortLogLine() throws Exception {
        Running r = start(c -> { });
        byte[] badUtf8 = {0x0A, 0x02, (byte) 0xC3, 0x28}; // field 1 (model): a string that is not UTF-8
        byte[] truncated = {0x0A, 0x10, 'p', 'i', 'x'}; // field 1 announces 16 bytes, 3 follow
        var generate = raw(DiffusionServiceGrpc.getGenerateMethod().getFullMethodName(),
                MethodDescriptor.MethodType.SERVER_STREAMING);
        var getModel = raw(DiffusionServiceGrpc.getGetModelMethod().getFullMethodName(),
                MethodDescriptor.MethodType.UNARY);
        for (byte[] bad : List.of(badUtf8, truncated)) {
            assertThatThrownBy(() -> ClientCalls.blockingServerStreamingCall(r.channel(), generate,
                    CallOptions.DEFAULT, bad).hasNext()).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                        assertThat(e.getStatus().getDescription())
                                .startsWith("the request is not a valid dit.v1.DiffusionService/Generate message")
                                .hasSizeLessThan(300);
                    });
            assertThatThrownBy(() -> ClientCalls.blockingUnaryCall(r.channel(), getModel, CallOptions.DEFAULT, bad))
                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> assertThat(e.getStatus().getCode())
                            .isEqualTo(Status.Code.INVALID_ARGUMENT));
        }
        assertThatThrownBy(() -> ClientCalls.blockingServerStreamingCall(r.channel(), generate, CallOptions.DEFAULT,
                badUtf8).hasNext()).hasMessageContaining("UTF-8");
        // a well-formed request on the same method still works
        byte[] ok = GenerateRequest.newBuilder().setModel("pixel-tiny").setClassId(1).setSteps(2).build().toByteArray();
        Iterator<byte[]> events = ClientCalls.blockingServerStreamingCall(r.channel(), generate, CallOptions.DEFAULT,
                ok);
        int n = 0;
        while (events.hasNext()) {
            GenerateEvent.parseFrom(events.next());
            n++;
        }
        assertThat(n).isGreaterThan(2);
        List<String> malformed = logLines().stream().filter(l -> l.startsWith("malformed")).toList();
        assertThat(malformed).hasSize(5).allSatisfy(l -> assertThat(l).hasSizeLessThan(300));
        assertThat(logs.list).noneSatisfy(e -> assertThat(e.getThrowableProxy()).isNotNull());
        assertThat(grpcWarnings).as("gRPC's own warnings and stack traces").isEmpty();
    }

    // ---- deadlines in the metrics, and the metrics endpoint

    private static HttpResponse<String> scrape(String host, int port, String token) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://" + host + ":" + port + "/metrics"));
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return HttpClient.newHttpClient().send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    /**
     * Waits until the server has counted one Generate call of {@code model} ending with {@code code} (it counts just
     * after the client sees the status), then scrapes the endpoint, which must show it; returns the body.
     */
    private static String awaitMetric(Running r, String model, String code) throws Exception {
        assertThat(r.server().metrics().awaitRequests(model, code, 1, Duration.ofSeconds(30)))
                .as("a %s call of %s counted", code, model).isTrue();
        String body = scrape("127.0.0.1", r.server().metricsPort(), null).body();
        assertThat(body).contains("dit_requests_total{code=\"" + code + "\",model=\"" + model + "\"} 1.0");
        return body;
    }

    @Test
    void aGenerationThatHitsItsDeadlineIsCountedAsDeadlineExceeded() throws Exception {
        Running r = start(c -> { });
        // 16 guided images × 1000 steps: many seconds on any CPU, so the 1.5 s deadline always hits first
        GenerateRequest longOne = GenerateRequest.newBuilder().setModel("latent-tiny").setClassId(1).setSteps(1000)
                .setNumImages(16).setGuidanceScale(2).build();
        Iterator<GenerateEvent> it = DiffusionServiceGrpc.newBlockingStub(r.channel())
                .withDeadlineAfter(1500, TimeUnit.MILLISECONDS).generate(longOne);
        assertThat(it.next().hasAccepted()).isTrue();
        assertThatThrownBy(() -> it.forEachRemaining(e -> { })).isInstanceOfSatisfying(StatusRuntimeException.class,
                e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
        String body = awaitMetric(r, "latent-tiny", "DEADLINE_EXCEEDED");
        assertThat(body).doesNotContain("code=\"CANCELLED\"");
        // an explicit cancel is still a cancel
        DitClient.EventStream s = r.client().generate(longOne);
        assertThat(s.next().hasAccepted()).isTrue();
        s.close();
        awaitMetric(r, "latent-tiny", "CANCELLED");
    }

    @Test
    void metricsListenOnLoopbackByDefaultAndOnTheConfiguredHost() throws Exception {
        assertThat(new ServerConfig().metricsHost).isEqualTo("127.0.0.1");
        Running r = start(c -> c.metricsHost = "127.0.0.2"); // Linux routes all of 127/8 to loopback
        int port = r.server().metricsPort();
        assertThat(scrape("127.0.0.2", port, null).statusCode()).isEqualTo(200);
        assertThatThrownBy(() -> scrape("127.0.0.1", port, null)).isInstanceOf(java.net.ConnectException.class);
        Running d = start(c -> { });
        assertThat(scrape("127.0.0.1", d.server().metricsPort(), null).statusCode()).isEqualTo(200);
        // and not on any other address of this machine
        for (var nif : java.util.Collections.list(java.net.NetworkInterface.getNetworkInterfaces())) {
            for (var a : java.util.Collections.list(nif.getInetAddresses())) {
                if (a instanceof java.net.Inet4Address && !a.isLoopbackAddress()) {
                    assertThatThrownBy(() -> scrape(a.getHostAddress(), d.server().metricsPort(), null))
                            .isInstanceOf(java.net.ConnectException.class);
                }
            }
        }
    }

    @Test
    void metricsTokenGuardsTheScrape(@TempDir Path dir) throws Exception {
        Path token = dir.resolve("metrics-token");
        Files.writeString(token, "# scrape token\nscrape-s3cret\n");
        Running r = start(c -> c.metricsTokenFile = token.toString());
        int port = r.server().metricsPort();
        assertThat(scrape("127.0.0.1", port, null).statusCode()).isEqualTo(401);
        assertThat(scrape("127.0.0.1", port, "wrong").statusCode()).isEqualTo(401);
        HttpResponse<String> ok = scrape("127.0.0.1", port, "scrape-s3cret");
        assertThat(ok.statusCode()).isEqualTo(200);
        assertThat(ok.body()).contains("dit_queue_depth");
        assertThat(String.join("\n", logLines())).doesNotContain("scrape-s3cret");
    }

    // ---- non-finite values

    private static FloatTensor noise(int n, int numel, float value) {
        ByteBuffer bb = ByteBuffer.allocate(n * numel * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n * numel; i++) {
            bb.putFloat(i == 7 ? value : 0.5f);
        }
        return FloatTensor.newBuilder().addShape(n).addShape(1).addShape(16).addShape(16)
                .setData(ByteString.copyFrom(bb.array())).build();
    }

    @Test
    void initialNoiseBeyondTheDocumentedMagnitudeIsInvalid() throws Exception {
        Running r = start(c -> { });
        for (float v : new float[] {3.4e38f, -2e4f, Float.NaN, Float.POSITIVE_INFINITY}) {
            assertThatThrownBy(() -> r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                    .setClassId(1).setSteps(2).setInitialNoise(noise(1, 256, v)).build()).next())
                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                        assertThat(e.getStatus().getDescription()).startsWith("initial_noise.data: value 7 is")
                                .contains("magnitude at most " + RequestValidator.MAX_NOISE);
                    });
        }
        List<GenerateEvent> ev = new ArrayList<>();
        try (DitClient.EventStream s = r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(1).setSteps(2).setInitialNoise(noise(1, 256, RequestValidator.MAX_NOISE)).build())) {
            s.forEachRemaining(ev::add);
        }
        assertThat(ev.getLast().hasResult()).isTrue();
    }

    @Test
    void nanInTheWeightsFailsTheGenerationNamingTheStep(@TempDir Path dir) throws Exception {
        Path m = dir.resolve("nan-model");
        Files.createDirectories(m);
        Path src = TestPaths.fixture("pixel-tiny");
        Files.copy(src.resolve("config.json"), m.resolve("config.json"));
        Files.write(m.resolve("weights.safetensors"), withNaN(Files.readAllBytes(src.resolve("weights.safetensors")),
                "final_layer.linear.bias"));
        Path good = dir.resolve("pixel-tiny");
        Files.createDirectories(good);
        Files.copy(src.resolve("config.json"), good.resolve("config.json"));
        Files.copy(src.resolve("weights.safetensors"), good.resolve("weights.safetensors"));
        Running r = start(c -> c.models = dir.toString());
        assertThatThrownBy(() -> {
            try (DitClient.EventStream s = r.client().generate(GenerateRequest.newBuilder().setModel("nan-model")
                    .setClassId(1).setSteps(5).setPreviewInterval(1).build())) {
                s.forEachRemaining(e -> assertThat(e.hasResult()).isFalse());
            }
        }).isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
            assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INTERNAL);
            assertThat(e.getStatus().getDescription()).contains("step 1 of 5").contains("non-finite");
        });
        // the model beside it is unaffected
        List<GenerateEvent> ev = new ArrayList<>();
        try (DitClient.EventStream s = r.client().generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(1).setSteps(3).build())) {
            s.forEachRemaining(ev::add);
        }
        assertThat(ev.getLast().hasResult()).isTrue();
        awaitMetric(r, "nan-model", "INTERNAL");
    }

    /** The safetensors file with every value of one float32 tensor set to NaN. */
    private static byte[] withNaN(byte[] file, String tensor) throws IOException {
        ByteBuffer bb = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN);
        int headerLen = (int) bb.getLong(0);
        var header = new com.fasterxml.jackson.databind.ObjectMapper()
                .readTree(new String(file, 8, headerLen, StandardCharsets.UTF_8));
        var t = header.get(tensor);
        assertThat(t.get("dtype").asText()).isEqualTo("F32");
        int begin = 8 + headerLen + t.get("data_offsets").get(0).asInt();
        int end = 8 + headerLen + t.get("data_offsets").get(1).asInt();
        for (int p = begin; p < end; p += 4) {
            bb.putFloat(p, Float.NaN);
        }
        return file;
    }
}
