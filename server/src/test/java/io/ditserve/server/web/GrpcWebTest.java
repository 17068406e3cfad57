package io.ditserve.server.web;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import com.linecorp.armeria.client.grpc.GrpcClients;
import com.linecorp.armeria.common.grpc.GrpcSerializationFormats;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.proto.v1.ListModelsResponse;
import io.ditserve.server.TestServers;
import io.ditserve.server.config.ServerConfig;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.InputStream;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * gRPC-Web on the web port ({@code web_port}), against the real server with the fixture models: Armeria's gRPC-Web
 * client over HTTP/1.1 and a plain HTTP/1.1 POST with the gRPC-Web framing receive the progress, the previews and
 * the same image bytes as a gRPC call with the same seed; the bearer token, CORS, the message-size limit and
 * cancellation (counted CANCELLED by the server) apply as on the gRPC port.
 */
class GrpcWebTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    private TestServers.Running start(ServerConfig c) throws Exception {
        c.webPort = 0;
        TestServers.Running r = TestServers.inProcess(c);
        closers.add(r);
        assertThat(r.server().webPort()).isPositive();
        return r;
    }

    private static DiffusionServiceGrpc.DiffusionServiceBlockingStub web(TestServers.Running r) {
        // h1c: HTTP/1.1 without TLS, as a browser's fetch() sends gRPC-Web
        return GrpcClients.builder("h1c://127.0.0.1:" + r.server().webPort())
                .serializationFormat(GrpcSerializationFormats.PROTO_WEB)
                .build(DiffusionServiceGrpc.DiffusionServiceBlockingStub.class);
    }

    private static GenerateRequest request(long seed) {
        return GenerateRequest.newBuilder().setModel("pixel-tiny").setClassName("class-3").setNumImages(2)
                .setSeed(seed).setSteps(8).setPreviewInterval(1).build();
    }

    @Test
    void generateOverGrpcWebStreamsProgressAndTheSameBytesAsGrpc() throws Exception {
        TestServers.Running r = start(TestServers.config());
        List<GenerateEvent> web = new ArrayList<>();
        web(r).generate(request(42)).forEachRemaining(web::add);
        List<GenerateEvent> grpc = new ArrayList<>();
        DiffusionServiceGrpc.newBlockingStub(r.channel()).generate(request(42)).forEachRemaining(grpc::add);

        assertThat(web.get(0).hasAccepted()).isTrue();
        assertThat(web.get(0).getAccepted().getSeedsList()).containsExactly(42L, 43L);
        // progress: increasing, up to the last step (a client that reads late may see only the newest progress)
        List<Integer> steps = web.stream().filter(GenerateEvent::hasProgress).map(e -> e.getProgress().getStep())
                .toList();
        assertThat(steps).isSorted().doesNotHaveDuplicates().isNotEmpty();
        assertThat(steps.getLast()).isEqualTo(8);
        assertThat(web.stream().filter(GenerateEvent::hasPreview).count()).isGreaterThanOrEqualTo(2);
        List<ByteString> webPngs = web.stream().filter(GenerateEvent::hasResult).map(e -> e.getResult().getPng())
                .toList();
        List<ByteString> grpcPngs = grpc.stream().filter(GenerateEvent::hasResult).map(e -> e.getResult().getPng())
                .toList();
        assertThat(webPngs).hasSize(2);
        assertThat(webPngs.get(0).size()).isGreaterThan(8);
        assertThat(webPngs).isEqualTo(grpcPngs);
        assertThat(r.server().metrics().awaitRequests("pixel-tiny", "OK", 2, Duration.ofSeconds(5))).isTrue();
    }

    /** gRPC-Web framing: a 5-byte header (flags, big-endian length); flag 0x80 marks the trailers frame. */
    private static byte[] frame(byte[] message) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.write(0);
        out.write(message.length >>> 24);
        out.write(message.length >>> 16);
        out.write(message.length >>> 8);
        out.write(message.length);
        out.writeBytes(message);
        return out.toByteArray();
    }

    /** The messages, and the status: from the trailers frame, or from the headers of a trailers-only response. */
    private record Frames(List<byte[]> messages, String trailers) {
        String status() {
            for (String line : trailers.split("\r?\n")) {
                int colon = line.indexOf(':');
                if (colon > 0 && line.substring(0, colon).strip().equalsIgnoreCase("grpc-status")) {
                    return line.substring(colon + 1).strip();
                }
            }
            return null;
        }
    }

    private static Frames read(HttpResponse<InputStream> response) throws Exception {
        DataInputStream in = new DataInputStream(response.body());
        List<byte[]> messages = new ArrayList<>();
        String trailers = null;
        while (true) {
            int flags;
            try {
                flags = in.readUnsignedByte();
            } catch (EOFException e) {
                break;
            }
            byte[] payload = new byte[in.readInt()];
            in.readFully(payload);
            if ((flags & 0x80) != 0) {
                trailers = new String(payload, StandardCharsets.US_ASCII);
            } else {
                messages.add(payload);
            }
        }
        if (trailers == null) { // trailers-only: the status is in the HTTP headers
            trailers = "grpc-status:" + response.headers().firstValue("grpc-status").orElse("?") + "\r\n"
                    + "grpc-message:" + response.headers().firstValue("grpc-message").orElse("") + "\r\n";
        }
        return new Frames(messages, trailers);
    }

    private static HttpResponse<InputStream> post(int port, String method, byte[] message, String... headers)
            throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port
                + "/dit.v1.DiffusionService/" + method))
                .header("content-type", "application/grpc-web+proto").header("x-grpc-web", "1")
                .POST(HttpRequest.BodyPublishers.ofByteArray(frame(message)));
        for (int i = 0; i < headers.length; i += 2) {
            b.header(headers[i], headers[i + 1]);
        }
        return HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build()
                .send(b.build(), HttpResponse.BodyHandlers.ofInputStream());
    }

    @Test
    void plainHttp11PostWithTheGrpcWebFraming() throws Exception {
        TestServers.Running r = start(TestServers.config());
        int port = r.server().webPort();

        HttpResponse<InputStream> list = post(port, "ListModels", ListModelsRequest.getDefaultInstance().toByteArray());
        assertThat(list.statusCode()).isEqualTo(200);
        assertThat(list.headers().firstValue("content-type")).hasValueSatisfying(
                t -> assertThat(t).startsWith("application/grpc-web"));
        Frames f = read(list);
        assertThat(f.status()).isEqualTo("0");
        assertThat(ListModelsResponse.parseFrom(f.messages().get(0)).getModelsList())
                .extracting(m -> m.getName()).contains("pixel-tiny", "latent-tiny");

        HttpResponse<InputStream> gen = post(port, "Generate", request(7).toByteArray());
        Frames g = read(gen);
        List<GenerateEvent> events = new ArrayList<>();
        for (byte[] m : g.messages()) {
            events.add(GenerateEvent.parseFrom(m));
        }
        assertThat(g.status()).isEqualTo("0");
        assertThat(events.stream().filter(GenerateEvent::hasProgress).map(e -> e.getProgress().getStep()).toList())
                .isSorted().contains(8);
        List<ByteString> pngs = events.stream().filter(GenerateEvent::hasResult).map(e -> e.getResult().getPng())
                .toList();
        List<ByteString> grpc = new ArrayList<>();
        DiffusionServiceGrpc.newBlockingStub(r.channel()).generate(request(7))
                .forEachRemaining(e -> { if (e.hasResult()) { grpc.add(e.getResult().getPng()); } });
        assertThat(pngs).isEqualTo(grpc);

        // an invalid request: the validator's INVALID_ARGUMENT and its message, in the trailers
        Frames bad = read(post(port, "Generate", GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(99).build().toByteArray()));
        assertThat(bad.status()).isEqualTo("3");
        assertThat(bad.trailers()).contains("class");
    }

    @Test
    void bearerTokenIsRequiredAsOnTheGrpcPort(@TempDir Path dir) throws Exception {
        Path tokens = dir.resolve("tokens");
        Files.writeString(tokens, "s3cret\n");
        ServerConfig c = TestServers.config();
        c.authTokensFile = tokens.toString();
        TestServers.Running r = start(c);

        assertThatThrownBy(() -> web(r).listModels(ListModelsRequest.getDefaultInstance()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAUTHENTICATED));
        Metadata md = new Metadata();
        md.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer s3cret");
        assertThat(web(r).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
                .listModels(ListModelsRequest.getDefaultInstance()).getModelsCount())
                .isGreaterThanOrEqualTo(TestServers.FIXTURE_MODELS);

        Frames raw = read(post(r.server().webPort(), "ListModels", new byte[0], "authorization", "Bearer wrong"));
        assertThat(raw.status()).isEqualTo("16");
    }

    @Test
    void corsAnswersOnlyTheConfiguredOrigins() throws Exception {
        ServerConfig c = TestServers.config();
        c.webOrigins = List.of("http://allowed.example:8080");
        TestServers.Running r = start(c);
        HttpClient http = HttpClient.newBuilder().version(HttpClient.Version.HTTP_1_1).build();
        for (String origin : List.of("http://allowed.example:8080", "http://evil.example")) {
            HttpResponse<String> pre = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:"
                    + r.server().webPort() + "/dit.v1.DiffusionService/Generate"))
                    .method("OPTIONS", HttpRequest.BodyPublishers.noBody())
                    .header("Origin", origin).header("Access-Control-Request-Method", "POST")
                    .header("Access-Control-Request-Headers", "content-type,x-grpc-web,authorization").build(),
                    HttpResponse.BodyHandlers.ofString());
            if (origin.contains("allowed")) {
                assertThat(pre.headers().firstValue("access-control-allow-origin")).hasValue(origin);
                assertThat(pre.headers().firstValue("access-control-allow-headers").orElse(""))
                        .contains("authorization").contains("x-grpc-web");
            } else {
                assertThat(pre.headers().firstValue("access-control-allow-origin")).isEmpty();
            }
        }
        // a simple (non-preflighted) response carries the header for the allowed origin only
        HttpResponse<InputStream> list = post(r.server().webPort(), "ListModels", new byte[0],
                "Origin", "http://allowed.example:8080");
        assertThat(list.headers().firstValue("access-control-allow-origin")).hasValue("http://allowed.example:8080");
        assertThat(list.headers().firstValue("access-control-expose-headers").orElse("")).contains("grpc-status");
    }

    @Test
    void messageSizeLimitOfTheGrpcPortApplies() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxInboundMessageBytes = 1 << 20;
        TestServers.Running r = start(c);
        // 2 MiB of initial noise: over the limit. The gRPC port answers RESOURCE_EXHAUSTED; so does the web port
        GenerateRequest big = request(1).toBuilder().setInitialNoise(FloatTensor.newBuilder().addShape(2)
                .addShape(1).addShape(16).addShape(16).setData(ByteString.copyFrom(new byte[2 << 20]))).build();
        HttpResponse<InputStream> res = post(r.server().webPort(), "Generate", big.toByteArray());
        Frames f = read(res);
        assertThat(f.messages()).isEmpty();
        assertThat(f.status()).as("HTTP %d, %s", res.statusCode(), f.trailers()).isEqualTo("8");
        // under the limit it passes the transport (and reaches the validator)
        GenerateRequest fits = request(1).toBuilder().setInitialNoise(FloatTensor.newBuilder().addShape(2)
                .addShape(1).addShape(16).addShape(16).setData(ByteString.copyFrom(new byte[2 * 16 * 16 * 4])))
                .build();
        assertThat(read(post(r.server().webPort(), "Generate", fits.toByteArray())).status()).isNotEqualTo("8");
    }

    @Test
    void cancellingAGrpcWebCallIsCountedCancelledByTheServer() throws Exception {
        TestServers.Running r = start(TestServers.config());
        DiffusionServiceGrpc.DiffusionServiceStub stub = GrpcClients.builder("h1c://127.0.0.1:"
                + r.server().webPort()).serializationFormat(GrpcSerializationFormats.PROTO_WEB)
                .build(DiffusionServiceGrpc.DiffusionServiceStub.class);
        CountDownLatch progressed = new CountDownLatch(3);
        CompletableFuture<Status> ended = new CompletableFuture<>();
        ClientCallStreamObserver<?>[] call = new ClientCallStreamObserver<?>[1];
        stub.generate(request(5).toBuilder().setSteps(1000).setNumImages(1).build(),
                new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
                    @Override
                    public void beforeStart(ClientCallStreamObserver<GenerateRequest> s) {
                        call[0] = s;
                    }

                    @Override
                    public void onNext(GenerateEvent e) {
                        if (e.hasProgress()) {
                            progressed.countDown();
                        }
                    }

                    @Override
                    public void onError(Throwable t) {
                        ended.complete(Status.fromThrowable(t));
                    }

                    @Override
                    public void onCompleted() {
                        ended.complete(Status.OK);
                    }
                });
        assertThat(progressed.await(60, TimeUnit.SECONDS)).isTrue();
        call[0].cancel("stop", null);
        assertThat(ended.get(10, TimeUnit.SECONDS).getCode()).isEqualTo(Status.Code.CANCELLED);
        assertThat(r.server().metrics().awaitRequests("pixel-tiny", "CANCELLED", 1, Duration.ofSeconds(10)))
                .isTrue();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (!r.server().engine().status().running().isEmpty() && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertThat(r.server().engine().status().running()).isEmpty();
    }

    @Test
    void aGrpcWebDeadlineIsCountedDeadlineExceeded() throws Exception {
        TestServers.Running r = start(TestServers.config());
        assertThatThrownBy(() -> web(r).withDeadlineAfter(1500, TimeUnit.MILLISECONDS)
                .generate(request(6).toBuilder().setSteps(1000).setNumImages(16).build()).forEachRemaining(e -> {}))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.DEADLINE_EXCEEDED));
        assertThat(r.server().metrics().awaitRequests("pixel-tiny", "DEADLINE_EXCEEDED", 1, Duration.ofSeconds(10)))
                .isTrue();
    }

    @Test
    void anIdleConnectionIsClosedAfterMaxConnectionIdle() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxConnectionIdleSeconds = 1;
        TestServers.Running r = start(c);
        try (java.net.Socket socket = new java.net.Socket("127.0.0.1", r.server().webPort())) {
            socket.setSoTimeout(15_000);
            long t0 = System.nanoTime();
            assertThat(socket.getInputStream().read()).isEqualTo(-1); // closed by the server, nothing sent
            assertThat(Duration.ofNanos(System.nanoTime() - t0)).isBetween(Duration.ofMillis(500),
                    Duration.ofSeconds(10));
        }
    }

    @Test
    void offUnlessConfigured() throws Exception {
        TestServers.Running r = TestServers.inProcess(TestServers.config());
        closers.add(r);
        assertThat(r.server().webPort()).isEqualTo(-1);
    }
}
