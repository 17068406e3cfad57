package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.inject.Guice;
import com.google.inject.Stage;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.client.DitClient;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.security.Transport;
import io.grpc.Attributes;
import io.grpc.CallOptions;
import io.grpc.ClientCall;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.ServerBuilder;
import io.grpc.ServerStreamTracer;
import io.grpc.ServerTransportFilter;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import io.grpc.stub.StreamObserver;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.SocketException;
import java.net.SocketTimeoutException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.Consumer;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.RepeatedTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The transport limits (README, "Transport limits") on a real Netty server on loopback: idle and aged connections are
 * closed, the calls of one connection are capped, pinging and resetting floods close the connection, a silent
 * connection is dropped after the handshake timeout, and one client that opens 200 streams and never reads does not
 * keep another client's request from running.
 */
class TransportLimitsTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void closeAll() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    /** Counts the server's connections as they open and close; a test can wait for a number of closes. */
    static final class Connections extends ServerTransportFilter {
        final AtomicInteger ready = new AtomicInteger();
        final AtomicInteger closed = new AtomicInteger();

        @Override
        public Attributes transportReady(Attributes a) {
            ready.incrementAndGet();
            return a;
        }

        @Override
        public void transportTerminated(Attributes a) {
            synchronized (this) {
                closed.incrementAndGet();
                notifyAll();
            }
        }

        /** Waits until at least {@code n} connections have closed; fails naming {@code what} after 30 s. */
        synchronized void awaitClosed(int n, String what) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (closed.get() < n) {
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    throw new AssertionError("not within 30 s: " + what);
                }
                wait(waitMs);
            }
        }
    }

    private static ServerConfig config() {
        ServerConfig c = new ServerConfig();
        c.models = TestPaths.repoRoot().resolve("tools/fixtures").toString();
        c.port = 0;
        c.threads = 2;
        c.metricsPort = -1;
        c.shutdownGraceSeconds = 1;
        c.authTokensEnv = null;
        return c;
    }

    /** Counts, per method, the streams the server has seen open and close (a reset stream closes too). */
    static final class Streams extends ServerStreamTracer.Factory {
        private final Map<String, Integer> opened = new HashMap<>();
        private final Map<String, Integer> closed = new HashMap<>();

        @Override
        public synchronized ServerStreamTracer newServerStreamTracer(String method, Metadata headers) {
            opened.merge(method, 1, Integer::sum);
            return new ServerStreamTracer() {
                @Override
                public void streamClosed(Status status) {
                    synchronized (Streams.this) {
                        closed.merge(method, 1, Integer::sum);
                        Streams.this.notifyAll();
                    }
                }
            };
        }

        synchronized int opened(String method) {
            return opened.getOrDefault(method, 0);
        }

        /** Waits until the server has seen {@code n} streams of {@code method} close; fails after 30 s. */
        synchronized void awaitClosed(String method, int n) throws InterruptedException {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (closed.getOrDefault(method, 0) < n) {
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    throw new AssertionError("not within 30 s: " + n + " closed streams of " + method + ", got "
                            + closed.getOrDefault(method, 0));
                }
                wait(waitMs);
            }
        }
    }

    private DitServer start(ServerConfig c, Connections connections) throws Exception {
        return start(c, connections, null);
    }

    private DitServer start(ServerConfig c, Connections connections, Streams streams) throws Exception {
        ServerBuilder<?> b = Transport.serverBuilder(c);
        b.addTransportFilter(connections);
        if (streams != null) {
            b.addStreamTracerFactory(streams);
        }
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, b))
                .getInstance(DitServer.class).start();
        closers.add(server::stop);
        return server;
    }

    private ManagedChannel channel(DitServer server) {
        ManagedChannel ch = ManagedChannelBuilder.forAddress("127.0.0.1", server.port()).usePlaintext().build();
        closers.add(() -> ch.shutdownNow().awaitTermination(5, TimeUnit.SECONDS));
        return ch;
    }

    @Test
    void anIdleConnectionIsClosedAfterMaxConnectionIdle() throws Exception {
        ServerConfig c = config();
        c.maxConnectionIdleSeconds = 1;
        Connections conns = new Connections();
        DitServer server = start(c, conns);
        ManagedChannel ch = channel(server);
        long t0 = System.nanoTime();
        new DitClient(ch).listModels();
        assertThat(conns.ready.get()).isEqualTo(1);
        conns.awaitClosed(1, "the idle connection is closed");
        assertThat(conns.closed.get()).isEqualTo(1);
        assertThat((System.nanoTime() - t0) / 1e9).isGreaterThanOrEqualTo(0.9);
        // the client reconnects transparently
        assertThat(new DitClient(ch).listModels()).isNotEmpty();
        assertThat(conns.ready.get()).isEqualTo(2);
    }

    @Test
    void anAgedConnectionEndsAfterItsGrace() throws Exception {
        ServerConfig c = config();
        c.maxConnectionIdleSeconds = 0;
        c.maxConnectionAgeSeconds = 1;
        c.maxConnectionAgeGraceSeconds = 1;
        Connections conns = new Connections();
        DitServer server = start(c, conns);
        ManagedChannel ch = channel(server);
        // a call that never ends by itself: the health watch
        CompletableFuture<Status> watch = new CompletableFuture<>();
        HealthGrpc.newStub(ch).watch(HealthCheckRequest.getDefaultInstance(), new StreamObserver<>() {
            @Override
            public void onNext(HealthCheckResponse r) {}

            @Override
            public void onError(Throwable t) {
                watch.complete(Status.fromThrowable(t));
            }

            @Override
            public void onCompleted() {
                watch.complete(Status.OK);
            }
        });
        Status ended = watch.get(15, TimeUnit.SECONDS);
        assertThat(ended.getCode()).isEqualTo(Status.Code.UNAVAILABLE);
        conns.awaitClosed(1, "the aged connection is closed");
    }

    /** Opens a health watch on {@code ch} and returns once the server has answered it (so its stream is open). */
    private static ClientCallStreamObserver<HealthCheckRequest> openWatch(ManagedChannel ch) throws Exception {
        CompletableFuture<ClientCallStreamObserver<HealthCheckRequest>> first = new CompletableFuture<>();
        HealthGrpc.newStub(ch).watch(HealthCheckRequest.getDefaultInstance(),
                new ClientResponseObserver<HealthCheckRequest, HealthCheckResponse>() {
                    ClientCallStreamObserver<HealthCheckRequest> call;

                    @Override
                    public void beforeStart(ClientCallStreamObserver<HealthCheckRequest> requestStream) {
                        call = requestStream;
                    }

                    @Override
                    public void onNext(HealthCheckResponse r) {
                        first.complete(call);
                    }

                    @Override
                    public void onError(Throwable t) {
                        first.completeExceptionally(t);
                    }

                    @Override
                    public void onCompleted() {}
                });
        return first.get(10, TimeUnit.SECONDS);
    }

    /**
     * The 101st call of a connection waits at the client, unseen by the server, and runs once the first 100 are
     * cancelled.
     *
     * <p>How the waiting call is made matters, because of how grpc-java's client waits. A call beyond the server's
     * MAX_CONCURRENT_STREAMS is buffered in Netty's {@code StreamBufferingEncoder}, HEADERS and DATA both. When a
     * slot frees, that is when the write of a cancelled stream's RST_STREAM completes during a flush, the encoder
     * writes the buffered frames to the channel but does not flush them; grpc-java flushes only after writes of its
     * own (a new call, a message, a half-close, a cancel). So a unary call (request and half-close sent at once, no
     * later write) whose frames were released after the last flush of the RST_STREAMs stays in the client's
     * outbound buffer until its deadline: the server never sees it. That hung this assertion in about one run in
     * three of the class (in 25 of 40 repetitions on a shared server in a scratch run; sending the request only on
     * onReady hung 40 of 40, because onReady waits for the HEADERS write to complete, which is that same flush).
     * The server was right all along. The waiting call below therefore sends its request at once and holds back
     * its half-close until the server has seen the 100 streams end (so the client has released the buffered
     * frames); the half-close is a write of the waiting call itself, and its flush carries its HEADERS and request.
     *
     * <p>Passed 50 repetitions in a row in one run (75 s: 10 s for the first, about 1.2 s each after) and the whole
     * class 50 times in a row in fresh JVMs; CI repeats it 5 times (about 15 s), enough to catch the old client
     * (which hung in more than half of the repetitions).
     */
    @RepeatedTest(5)
    void theHundredAndFirstCallOfOneConnectionWaitsForAFreeStream() throws Exception {
        ServerConfig c = config(); // the default: 100 calls per connection
        assertThat(c.maxConcurrentCallsPerConnection).isEqualTo(100);
        Connections conns = new Connections();
        Streams streams = new Streams();
        DitServer server = start(c, conns, streams);
        ManagedChannel ch = channel(server);
        List<ClientCallStreamObserver<HealthCheckRequest>> open = new ArrayList<>();
        for (int i = 0; i < 100; i++) {
            open.add(openWatch(ch));
        }
        // another connection is not affected
        ManagedChannel other = channel(server);
        assertThat(HealthGrpc.newBlockingStub(other).withDeadlineAfter(5, TimeUnit.SECONDS)
                .check(HealthCheckRequest.getDefaultInstance()).getStatus())
                .isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
        String check = HealthGrpc.getCheckMethod().getFullMethodName();
        String watch = HealthGrpc.getWatchMethod().getFullMethodName();
        assertThat(streams.opened(check)).isEqualTo(1);
        // the 101st waits at the client (the server advertised at most 100 streams on this connection); its
        // request is sent at once, its half-close later (see above)
        ClientCall<HealthCheckRequest, HealthCheckResponse> waiting = ch.newCall(HealthGrpc.getCheckMethod(),
                CallOptions.DEFAULT.withDeadlineAfter(30, TimeUnit.SECONDS));
        CompletableFuture<HealthCheckResponse> answer = new CompletableFuture<>();
        waiting.start(new ClientCall.Listener<>() {
            @Override
            public void onMessage(HealthCheckResponse r) {
                answer.complete(r);
            }

            @Override
            public void onClose(Status status, Metadata trailers) {
                answer.completeExceptionally(status.asRuntimeException()); // no-op after onMessage
            }
        }, new Metadata());
        waiting.request(1);
        waiting.sendMessage(HealthCheckRequest.getDefaultInstance());
        assertThatThrownBy(() -> answer.get(1, TimeUnit.SECONDS)).isInstanceOf(TimeoutException.class);
        assertThat(streams.opened(check)).as("the server has not seen the waiting call").isEqualTo(1);
        // the 100 streams end: once the server has seen them end, the client has written their RST_STREAMs and
        // released the waiting call's frames; its half-close flushes them, and it runs
        open.forEach(o -> o.cancel("done", null));
        open.clear();
        streams.awaitClosed(watch, 100);
        waiting.halfClose();
        assertThat(answer.get(10, TimeUnit.SECONDS).getStatus()).isEqualTo(HealthCheckResponse.ServingStatus.SERVING);
        assertThat(streams.opened(check)).isEqualTo(2);
        assertThat(conns.ready.get()).isEqualTo(2);
    }

    @Test
    void rapidStreamResetsCloseTheConnection() throws Exception {
        ServerConfig c = config();
        c.maxRstFramesPerWindow = 50;
        c.rstWindowSeconds = 10;
        Connections conns = new Connections();
        DitServer server = start(c, conns);
        ManagedChannel ch = channel(server);
        // below the limit: the connection stays
        for (int i = 0; i < 40; i++) {
            openWatch(ch).cancel("reset", null);
        }
        assertThat(conns.closed.get()).isZero();
        // past it: the server closes the connection (GOAWAY ENHANCE_YOUR_CALM); the client reconnects
        for (int i = 0; i < 40 && conns.closed.get() == 0; i++) {
            try {
                openWatch(ch).cancel("reset", null);
            } catch (java.util.concurrent.ExecutionException e) {
                // a watch that was opening on the closed connection
            }
        }
        conns.awaitClosed(1, "the resetting connection is closed");
        assertThat(conns.closed.get()).isEqualTo(1);
        assertThat(new DitClient(ch).listModels()).isNotEmpty();
    }

    // ---- raw HTTP/2 on a socket, for what a well-behaved client never does

    private static final byte[] PREFACE = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".getBytes(StandardCharsets.US_ASCII);

    private static void frame(OutputStream out, int type, int flags, int stream, byte[] payload) throws IOException {
        int n = payload.length;
        out.write(new byte[] {(byte) (n >>> 16), (byte) (n >>> 8), (byte) n, (byte) type, (byte) flags,
            (byte) (stream >>> 24), (byte) (stream >>> 16), (byte) (stream >>> 8), (byte) stream});
        out.write(payload);
        out.flush();
    }

    /** Reads frames until a GOAWAY (returns its error code) or the end of the connection (returns -1). */
    private static int readUntilGoAway(DataInputStream in) throws IOException {
        try {
            while (true) {
                int len = (in.readUnsignedByte() << 16) | in.readUnsignedShort();
                int type = in.readUnsignedByte();
                in.readUnsignedByte();
                in.readInt();
                byte[] payload = new byte[len];
                in.readFully(payload);
                if (type == 7) { // GOAWAY: last stream id, error code, debug data
                    return java.nio.ByteBuffer.wrap(payload, 4, 4).getInt();
                }
            }
        } catch (EOFException | SocketException e) {
            return -1;
        }
    }

    @Test
    void keepalivePingsWithoutCallsGetGoAwayEnhanceYourCalm() throws Exception {
        DitServer server = start(config(), new Connections());
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", server.port()), 5000);
            s.setSoTimeout(10_000);
            OutputStream out = s.getOutputStream();
            out.write(PREFACE);
            frame(out, 4, 0, 0, new byte[0]); // SETTINGS
            for (int i = 0; i < 4; i++) {
                frame(out, 6, 0, 0, new byte[8]); // PING, far more often than permit_keepalive_time
            }
            assertThat(readUntilGoAway(new DataInputStream(s.getInputStream()))).isEqualTo(0xb); // ENHANCE_YOUR_CALM
        }
    }

    /** Seconds until the server closes a connection that sends nothing, or -1 if it does not within 8 s. */
    private static double secondsUntilClosed(int port) throws IOException {
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress("127.0.0.1", port), 5000);
            s.setSoTimeout(8000);
            long t0 = System.nanoTime();
            try {
                var in = s.getInputStream();
                while (in.read() >= 0) {
                    // the server's own handshake bytes, if any
                }
            } catch (SocketTimeoutException e) {
                return -1;
            } catch (SocketException e) {
                // reset
            }
            return (System.nanoTime() - t0) / 1e9;
        }
    }

    @Test
    void aConnectionThatNeverHandshakesIsDropped(@TempDir Path dir) throws Exception {
        ServerConfig c = config();
        c.handshakeTimeoutSeconds = 1;
        DitServer plain = start(c, new Connections());
        assertThat(secondsUntilClosed(plain.port())).isBetween(0.5, 5.0);
        ProductionTest.Pki pki = ProductionTest.Pki.create(dir);
        ServerConfig t = config();
        t.handshakeTimeoutSeconds = 1;
        t.tlsCert = pki.serverCert().toString();
        t.tlsKey = pki.serverKey().toString();
        DitServer tls = start(t, new Connections());
        assertThat(secondsUntilClosed(tls.port())).isBetween(0.5, 5.0);
    }

    /** A Generate stream that never asks for a single message. */
    private static CompletableFuture<Status> neverRead(ManagedChannel ch, GenerateRequest request) {
        CompletableFuture<Status> end = new CompletableFuture<>();
        DiffusionServiceGrpc.newStub(ch).generate(request,
                new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
                    @Override
                    public void beforeStart(ClientCallStreamObserver<GenerateRequest> requestStream) {
                        requestStream.disableAutoRequestWithInitial(0);
                    }

                    @Override
                    public void onNext(GenerateEvent e) {}

                    @Override
                    public void onError(Throwable t) {
                        end.complete(Status.fromThrowable(t));
                    }

                    @Override
                    public void onCompleted() {
                        end.complete(Status.OK);
                    }
                });
        return end;
    }

    @Test
    void aClientWithTwoHundredUnreadStreamsDoesNotStarveAnother(@TempDir Path dir) throws Exception {
        Path tokens = dir.resolve("tokens");
        Files.writeString(tokens, "hostile-token\npolite-token\n");
        ServerConfig c = config();
        c.authTokensFile = tokens.toString();
        c.maxActive = 2;
        c.maxQueued = 32; // defaults: max_queued_per_client 8, 100 calls per connection
        DitServer server = start(c, new Connections());
        String target = "127.0.0.1:" + server.port();
        DitClient hostile = DitClient.connect(target, null, null, null, "hostile-token");
        closers.add(hostile);
        DitClient polite = DitClient.connect(target, null, null, null, "polite-token");
        closers.add(polite);
        GenerateRequest slow = GenerateRequest.newBuilder().setModel("pixel-tiny").setClassId(1).setNumImages(4)
                .setSteps(200).setGuidanceScale(3).setPreviewInterval(1).build();
        List<CompletableFuture<Status>> streams = new ArrayList<>();
        CountDownLatch refusals = new CountDownLatch(90);
        for (int i = 0; i < 200; i++) {
            CompletableFuture<Status> f = neverRead(hostile.channel(), slow);
            f.thenAccept(s -> {
                if (s.getCode() == Status.Code.RESOURCE_EXHAUSTED) {
                    refusals.countDown();
                }
            });
            streams.add(f);
        }
        // the first 100 reach the server: 2 run, 8 wait (its share), the others are refused at once
        assertThat(refusals.await(30, TimeUnit.SECONDS)).as("the hostile client's share is full").isTrue();
        Status refused = streams.stream().filter(CompletableFuture::isDone).map(CompletableFuture::join)
                .filter(s -> s.getCode() == Status.Code.RESOURCE_EXHAUSTED).findFirst().orElseThrow();
        assertThat(refused.getDescription()).contains("max_queued_per_client = 8");
        assertThat(server.engine().snapshot().queued()).isLessThanOrEqualTo(8);
        // a normal request of another client is queued ahead of the hostile client's waiting ones and completes
        long t0 = System.nanoTime();
        int results = 0;
        try (DitClient.EventStream events = polite.generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(2).setSteps(10).build(), 20)) {
            boolean first = true;
            while (events.hasNext()) {
                GenerateEvent e = events.next();
                if (first) {
                    assertThat(e.getAccepted().getQueuePosition()).isBetween(1, 2); // hostile round ties go first
                    first = false;
                }
                results += e.hasResult() ? 1 : 0;
            }
        }
        assertThat(results).isEqualTo(1);
        System.out.printf("polite request done in %.1f s beside 200 unread hostile streams%n",
                (System.nanoTime() - t0) / 1e9);
        streams.forEach(f -> f.cancel(true));
    }
}
