package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.testkit.SafetensorsWriter;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.netty.shaded.io.grpc.netty.NettyChannelBuilder;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Issue 26's probe as a test, on a real server process: one client opens 1,000 generations over 10 connections
 * (100 each, the most a connection carries) with a small HTTP/2 window and never reads a byte of them, each asking
 * for 16 images of 64×64×3 with a preview every step (about 1.6 MB of frames per call, 1.6 GB in all if the server
 * kept everything). Every one of those calls must end on the server with a status (refused at once by the
 * per-client queue share, or ended by the delivery deadline once finished), the server's resident memory must come
 * back to within 150 MB of what it was idle, and another client must be served while the first holds its share.
 * "Idle" is the server after a warm-up at the concurrency the hostile client will get (16 generations at once, read
 * to the end), so that compiled code and the engine's pass buffers at their working size are in both figures; both
 * are measured after a full GC (G1 then gives back what it does not use), and the peak while polling is printed.
 * The JVM runs with the launcher's options (./dit): -XX:MaxNewSize=64m keeps the young generation small.
 */
class NeverReadingClientsTest {
    private static final int CONNECTIONS = 10;
    private static final int PER_CONNECTION = 100;
    private static final long SLACK_BYTES = 150L << 20;

    /** A random-weight pixel DiT of 64×64×3 (patch 8, width 32, one block): cheap to run, large frames. */
    private static void writeModel(Path dir) throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode c = (ObjectNode) json.readTree(TestPaths.fixture("pixel-tiny").resolve("config.json").toFile());
        c.put("name", "pixel-64").put("input_size", 64).put("patch_size", 8).put("in_channels", 3)
                .put("hidden_size", 32).put("depth", 1).put("num_heads", 2);
        Files.createDirectories(dir);
        json.writerWithDefaultPrettyPrinter().writeValue(dir.resolve("config.json").toFile(), c);
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        Random rnd = new Random(7);
        DitCheckpoint.expectedShapes(ModelConfigs.load(dir)).forEach((name, shape) -> {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            float[] v = new float[Math.toIntExact(n)];
            for (int i = 0; i < v.length; i++) {
                v[i] = (float) (rnd.nextGaussian() * 0.05);
            }
            tensors.put(name, new SafetensorsWriter.F32(shape, v));
        });
        SafetensorsWriter.write(dir.resolve("weights.safetensors"), tensors);
    }

    private static int freePort() throws Exception {
        try (ServerSocket s = new ServerSocket(0)) {
            return s.getLocalPort();
        }
    }

    /** Sum of dit_requests_total{model="pixel-64"} over every status code, from the metrics endpoint. */
    private static long endedCalls(HttpClient http, int metricsPort) throws Exception {
        String text = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + metricsPort + "/metrics"))
                .build(), HttpResponse.BodyHandlers.ofString()).body();
        Matcher m = Pattern.compile("(?m)^dit_requests_total\\{[^}]*model=\"pixel-64\"[^}]*} ([0-9.eE+]+)$")
                .matcher(text);
        long n = 0;
        while (m.find()) {
            n += (long) Double.parseDouble(m.group(1));
        }
        return n;
    }

    private static ManagedChannel channel(int port) {
        return NettyChannelBuilder.forAddress("127.0.0.1", port).usePlaintext().flowControlWindow(65535).build();
    }

    @Test
    void aThousandNeverReadingStreamsEndWithAStatusAndLeaveMemoryBounded(@TempDir Path dir) throws Exception {
        writeModel(dir.resolve("models/pixel-64"));
        int metricsPort = freePort();
        HttpClient http = HttpClient.newHttpClient();
        List<ManagedChannel> channels = new ArrayList<>();
        try (ServerProcess server = ServerProcess.start(dir.resolve("server.log"), "512m",
                Map.of("DIT_AUTH_TOKENS", "hostile-token,polite-token"), "--threads", "1",
                "--models", dir.resolve("models").toString(), "--set", "metrics_port=" + metricsPort,
                "--set", "delivery_deadline_seconds=10")) {
            GenerateRequest big = GenerateRequest.newBuilder().setModel("pixel-64").setClassId(1).setSteps(3)
                    .setNumImages(16).setPreviewInterval(1).setSeed(1).build();
            try (DitClient polite = DitClient.connect("127.0.0.1:" + server.port, null, null, null, "polite-token")) {
                // warm: code compiled, and the engine's pass buffers at their working size (16 generations at once,
                // as many as the hostile client will get running), every one read to its end
                for (int round = 0; round < 2; round++) {
                    List<java.util.concurrent.CompletableFuture<Void>> warm = new ArrayList<>();
                    for (int i = 0; i < 16; i++) {
                        GenerateRequest req = big.toBuilder().setSeed(1000 + i).build();
                        warm.add(java.util.concurrent.CompletableFuture.runAsync(() -> {
                            try (DitClient.EventStream s = polite.generate(req)) {
                                while (s.hasNext()) {
                                    s.next();
                                }
                            }
                        }));
                    }
                    java.util.concurrent.CompletableFuture.allOf(warm.toArray(java.util.concurrent.CompletableFuture[]::new))
                            .get(120, java.util.concurrent.TimeUnit.SECONDS);
                }
                server.collectGarbage();
                long idle = server.status("VmRSS");

                Metadata auth = new Metadata();
                auth.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer hostile-token");
                for (int c = 0; c < CONNECTIONS; c++) {
                    ManagedChannel ch = channel(server.port);
                    channels.add(ch);
                    var stub = DiffusionServiceGrpc.newStub(ch)
                            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(auth));
                    for (int k = 0; k < PER_CONNECTION; k++) {
                        stub.generate(big.toBuilder().setSeed(100 + k).build(),
                                new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
                                    @Override
                                    public void beforeStart(ClientCallStreamObserver<GenerateRequest> rs) {
                                        rs.disableAutoRequestWithInitial(0); // never reads anything
                                    }

                                    @Override
                                    public void onNext(GenerateEvent value) {}

                                    @Override
                                    public void onError(Throwable t) {}

                                    @Override
                                    public void onCompleted() {}
                                });
                    }
                }
                // another client is served while the hostile one holds its share
                int results = 0;
                try (DitClient.EventStream s = polite.generate(big.toBuilder().setSeed(9).build())) {
                    while (s.hasNext()) {
                        results += s.next().hasResult() ? 1 : 0;
                    }
                }
                assertThat(results).as("the polite client's images").isEqualTo(16);

                long end = System.nanoTime() + 300_000_000_000L;
                long ended = 0;
                long peak = 0;
                while ((ended = endedCalls(http, metricsPort)) < 2 * 16 + 1 + CONNECTIONS * PER_CONNECTION) { // polite too
                    peak = Math.max(peak, server.status("VmRSS"));
                    assertThat(System.nanoTime()).as("every call ended on the server within 300 s (%d so far); log "
                            + "in %s", ended, server.log).isLessThan(end);
                    Thread.sleep(200); // polling the server's metrics, not timing the test
                }
                server.collectGarbage();
                long after = server.status("VmRSS");
                System.out.printf("never-reading streams: RSS idle %.1f MB, peak while polled %.1f MB, after the calls"
                        + " ended and a full GC %.1f MB; %d calls ended%n", idle / 1e6, peak / 1e6, after / 1e6, ended);
                assertThat(after - idle).as("resident memory above idle (bytes), both after a full GC")
                        .isLessThan(SLACK_BYTES);
            }
        } finally {
            for (ManagedChannel ch : channels) {
                ch.shutdownNow();
            }
        }
    }
}
