package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.server.config.ServerConfig;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.MetadataUtils;
import io.prometheus.metrics.model.snapshots.GaugeSnapshot;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Per-client bounds of issue 26 item 2 on a running server: failed authentications counted, logged once per address
 * per window and refused after the limit; connections capped per address (refused at accept, counted, logged once); finished output that a client leaves unread counted against it, its next call refused once it holds
 * more than its cap, and the count back to zero when its streams end.
 */
class ClientLimitsTest {
    private final List<AutoCloseable> closers = new ArrayList<>();
    private ListAppender<ILoggingEvent> logs;
    private ch.qos.logback.classic.Logger root;

    @BeforeEach
    void captureLogs() {
        root = (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(org.slf4j.Logger.ROOT_LOGGER_NAME);
        logs = new ListAppender<>();
        logs.start();
        root.addAppender(logs);
    }

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
        root.detachAppender(logs);
    }

    private List<String> lines(String logger) {
        return logs.list.stream().filter(e -> e.getLoggerName().endsWith(logger))
                .map(ILoggingEvent::getFormattedMessage).toList();
    }

    private static DiffusionServiceGrpc.DiffusionServiceBlockingStub withToken(ManagedChannel ch, String token) {
        Metadata m = new Metadata();
        m.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
        return DiffusionServiceGrpc.newBlockingStub(ch).withInterceptors(MetadataUtils.newAttachHeadersInterceptor(m));
    }

    /** Waits for a condition of the server (polled), failing after {@code timeout}. */
    private static void await(BooleanSupplier condition, Duration timeout, String what) throws InterruptedException {
        long end = System.nanoTime() + timeout.toNanos();
        while (!condition.getAsBoolean()) {
            assertThat(System.nanoTime()).as("waited %s for %s", timeout, what).isLessThan(end);
            Thread.sleep(10); // polling the server's state, not timing the test
        }
    }

    @Test
    void failedAuthenticationsAreCountedLoggedOnceAndRefusedAfterTheLimit(@TempDir Path dir) throws Exception {
        Path tokens = Files.writeString(dir.resolve("tokens"), "right-token\n");
        ServerConfig c = TestServers.config();
        c.authTokensFile = tokens.toString();
        c.authMaxFailures = 3;
        c.authFailureWindowSeconds = 600;
        TestServers.Running r = TestServers.network(c);
        closers.add(r);
        ListModelsRequest list = ListModelsRequest.getDefaultInstance();
        assertThat(withToken(r.channel(), "right-token").listModels(list).getModelsCount())
                .isEqualTo(TestServers.FIXTURE_MODELS);
        for (int i = 0; i < 3; i++) {
            String token = "guess-" + i;
            assertThatThrownBy(() -> withToken(r.channel(), token).listModels(list))
                    .isInstanceOfSatisfying(StatusRuntimeException.class,
                            e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAUTHENTICATED));
        }
        // the fourth call from this address is refused before its token is looked at, even the right one
        assertThatThrownBy(() -> withToken(r.channel(), "right-token").listModels(list))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
                    assertThat(e.getStatus().getDescription()).startsWith("too many failed authentications from "
                            + "this address (3 within 600 s, auth_max_failures); retry in ");
                });
        assertThat(r.server().metrics().authFailures("invalid")).isEqualTo(3);
        assertThat(r.server().metrics().authFailures("refused")).isEqualTo(1);
        assertThat(r.server().metrics().authFailures("missing")).isZero();
        // three failures from one address in one window: one log line, naming the address, never the token
        List<String> lines = lines("AuthGuard");
        assertThat(lines).hasSize(1);
        assertThat(lines.get(0)).startsWith("authentication failed from 127.0.0.1: an unknown bearer token on "
                + "dit.v1.DiffusionService/ListModels").doesNotContain("guess");
    }

    @Test
    void connectionsOverTheCapOfAnAddressAreRefusedAtAccept() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxConnectionsPerAddress = 2;
        TestServers.Running r = TestServers.network(c);
        closers.add(r);
        ManagedChannel second = TestServers.channelTo(r.server());
        closers.add(second::shutdownNow);
        assertThat(new DitClient(r.channel()).listModels()).hasSize(TestServers.FIXTURE_MODELS);
        assertThat(new DitClient(second).listModels()).hasSize(TestServers.FIXTURE_MODELS);
        assertThat(r.server().openConnections()).isEqualTo(2);

        ManagedChannel third = TestServers.channelTo(r.server());
        closers.add(third::shutdownNow);
        assertThatThrownBy(() -> new DitClient(third).listModels())
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.UNAVAILABLE);
                });
        assertThat(r.server().metrics().connectionsRefused("per_address")).isGreaterThanOrEqualTo(1);
        assertThat(r.server().openConnections()).isEqualTo(2);
        assertThat(lines("ConnectionLimits")).hasSize(1).allSatisfy(l -> assertThat(l)
                .startsWith("connection from 127.0.0.1 refused: 2 connections are open from your address"));

        // one connection gone: a new one is taken
        second.shutdownNow();
        assertThat(second.awaitTermination(10, TimeUnit.SECONDS)).isTrue();
        await(() -> r.server().openConnections() == 1, Duration.ofSeconds(10), "the closed connection to be released");
        ManagedChannel fourth = TestServers.channelTo(r.server());
        closers.add(fourth::shutdownNow);
        assertThat(new DitClient(fourth).listModels()).hasSize(TestServers.FIXTURE_MODELS);
    }

    private static double undeliveredBytes(TestServers.Running r) {
        return r.server().metrics().registry().scrape().stream()
                .filter(s -> s.getMetadata().getName().equals("dit_undelivered_bytes"))
                .mapToDouble(s -> ((GaugeSnapshot) s).getDataPoints().get(0).getValue()).findFirst().orElseThrow();
    }

    @Test
    void unreadOutputCountsAgainstTheClientAndItsNextCallIsRefusedUntilItReadsOrCancels() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxUndeliveredBytesPerClient = 10_000;
        try (TestServers.Running r = TestServers.inProcess(c)) {
            GenerateRequest many = GenerateRequest.newBuilder().setModel("pixel-tiny").setClassId(1).setSteps(2)
                    .setNumImages(16).build();
            CompletableFuture<Throwable> end = new CompletableFuture<>();
            ClientCallStreamObserver<?>[] call = new ClientCallStreamObserver<?>[1];
            DiffusionServiceGrpc.newStub(r.channel()).generate(many, new ClientResponseObserver<GenerateRequest,
                    GenerateEvent>() {
                @Override
                public void beforeStart(ClientCallStreamObserver<GenerateRequest> rs) {
                    call[0] = rs;
                    rs.disableAutoRequestWithInitial(1); // reads Accepted, then nothing
                }

                @Override
                public void onNext(GenerateEvent value) {}

                @Override
                public void onError(Throwable t) {
                    end.complete(t);
                }

                @Override
                public void onCompleted() {
                    end.complete(null);
                }
            });
            // 16 finished images of 16×16 floats (about 1.1 kB each) wait unread
            await(() -> undeliveredBytes(r) >= 16_000, Duration.ofSeconds(60), "the results to be held");
            assertThatThrownBy(() -> r.client().generate(many.toBuilder().setNumImages(1).build()).next())
                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
                        assertThat(e.getStatus().getDescription()).startsWith("this client has 0.0")
                                .contains("MB of finished results it has not read "
                                        + "(max_undelivered_bytes_per_client 10000): read or cancel");
                    });
            assertThat(r.server().metrics().callsRefused("undelivered_per_client")).isEqualTo(1);

            call[0].cancel("the test is done with it", null);
            end.get(30, TimeUnit.SECONDS);
            await(() -> undeliveredBytes(r) == 0, Duration.ofSeconds(30), "the cancelled stream's bytes to be released");
            Iterator<GenerateEvent> it = r.client().generate(many.toBuilder().setNumImages(1).build());
            int results = 0;
            while (it.hasNext()) {
                results += it.next().hasResult() ? 1 : 0;
            }
            assertThat(results).isEqualTo(1);
            await(() -> undeliveredBytes(r) == 0, Duration.ofSeconds(30), "a read stream to hold nothing");
        }
    }

    @Test
    void requestsOverTheMessageLimitGetResourceExhaustedAndOneLogLineAMinuteWithoutAStack() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxInboundMessageBytes = 1 << 20;
        TestServers.Running r = TestServers.network(c);
        closers.add(r);
        List<java.util.logging.LogRecord> grpcRecords = new java.util.concurrent.CopyOnWriteArrayList<>();
        java.util.logging.Logger grpc = java.util.logging.Logger.getLogger("io.grpc");
        java.util.logging.Handler handler = new java.util.logging.Handler() {
            @Override
            public void publish(java.util.logging.LogRecord rec) {
                grpcRecords.add(rec);
            }

            @Override
            public void flush() { }

            @Override
            public void close() { }
        };
        grpc.addHandler(handler);
        closers.add(() -> grpc.removeHandler(handler));
        GenerateRequest huge = GenerateRequest.newBuilder().setModel("m".repeat(2 << 20)).build();
        for (int i = 0; i < 5; i++) {
            assertThatThrownBy(() -> r.client().generate(huge).next())
                    .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                        assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.RESOURCE_EXHAUSTED);
                        assertThat(e.getStatus().getDescription()).contains("exceeds maximum size 1048576");
                    });
        }
        assertThat(new DitClient(r.channel()).listModels()).hasSize(TestServers.FIXTURE_MODELS); // it carries on
        assertThat(grpcRecords).as("gRPC's own records (stack traces)").isEmpty();
        assertThat(lines("GrpcLogFilter")).hasSize(1).allSatisfy(l -> assertThat(l).startsWith(
                "a request message over max_inbound_message_bytes was refused (RESOURCE_EXHAUSTED): gRPC message "
                        + "exceeds maximum size 1048576"));
        assertThat(logs.list).noneSatisfy(e -> assertThat(e.getThrowableProxy()).isNotNull());
    }
}
