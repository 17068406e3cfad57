package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import com.google.inject.Guice;
import com.google.inject.Stage;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.security.Transport;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryMXBean;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/**
 * 64 concurrent streams over a real Netty transport for a bounded time: a quarter cancel midway, a quarter read
 * slowly (one message per 15 ms, with gRPC flow control), the rest read normally. Every stream that is not
 * cancelled must complete with all its results; heap use must stay bounded and return to its baseline.
 * Prints its figures (the issue note quotes them).
 */
class LoadTest {
    static final int STREAMS = 64;
    static final int IMAGES = 2;
    static final int STEPS = 20;

    enum Kind { NORMAL, CANCEL, SLOW }

    record Outcome(Kind kind, Status status, int results, int previews, long millis) {}

    @Test
    void sixtyFourStreamsWithCancellersAndSlowReaders() throws Exception {
        ServerConfig c = new ServerConfig();
        c.models = TestPaths.repoRoot().resolve("tools/fixtures").toString();
        c.port = 0;
        c.metricsPort = -1;
        c.threads = 2;
        c.maxActive = 4;
        c.maxQueued = STREAMS;
        c.maxQueuedPerClient = 0; // one client on purpose: this test is about load, not the per-client share
        c.authTokensEnv = null;
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, Transport.serverBuilder(c)))
                .getInstance(DitServer.class).start();
        ManagedChannel channel = ManagedChannelBuilder.forAddress("localhost", server.port()).usePlaintext().build();
        ScheduledExecutorService slowReader = Executors.newScheduledThreadPool(2);
        MemoryMXBean mem = ManagementFactory.getMemoryMXBean();
        try {
            System.gc();
            long baseline = mem.getHeapMemoryUsage().getUsed();
            AtomicLong peak = new AtomicLong(baseline);
            ScheduledExecutorService sampler = Executors.newSingleThreadScheduledExecutor();
            sampler.scheduleAtFixedRate(() -> peak.accumulateAndGet(mem.getHeapMemoryUsage().getUsed(), Math::max),
                    0, 10, TimeUnit.MILLISECONDS);
            long t0 = System.nanoTime();
            List<CompletableFuture<Outcome>> outcomes = new ArrayList<>();
            for (int i = 0; i < STREAMS; i++) {
                Kind kind = i % 4 == 1 ? Kind.CANCEL : i % 4 == 2 ? Kind.SLOW : Kind.NORMAL;
                outcomes.add(start(channel, kind, i, slowReader));
            }
            CompletableFuture.allOf(outcomes.toArray(CompletableFuture[]::new)).get(120, TimeUnit.SECONDS);
            double seconds = (System.nanoTime() - t0) / 1e9;
            sampler.shutdownNow();
            int completed = 0;
            int cancelled = 0;
            long previews = 0;
            for (CompletableFuture<Outcome> f : outcomes) {
                Outcome o = f.get();
                if (o.kind() == Kind.CANCEL) {
                    assertThat(o.status().getCode()).isEqualTo(Status.Code.CANCELLED);
                    cancelled++;
                } else {
                    assertThat(o.status().getCode()).as(o.kind() + " stream").isEqualTo(Status.Code.OK);
                    assertThat(o.results()).as("results of a " + o.kind() + " stream").isEqualTo(IMAGES);
                    completed++;
                    previews += o.previews();
                }
            }
            awaitIdle(server);
            System.gc();
            long after = mem.getHeapMemoryUsage().getUsed();
            System.out.printf("load: %d streams (%d completed, %d cancelled) in %.2f s; %d steps computed; "
                    + "preview frames delivered %d of %d produced; heap baseline %.1f MB, peak %.1f MB, after %.1f MB%n",
                    STREAMS, completed, cancelled, seconds, server.engine().stepsComputed(), previews,
                    (long) completed * IMAGES * STEPS, baseline / 1e6, peak.get() / 1e6, after / 1e6);
            assertThat(completed).isEqualTo(STREAMS * 3 / 4);
            assertThat(cancelled).isEqualTo(STREAMS / 4);
            assertThat(peak.get() - baseline).as("peak heap growth").isLessThan(400L << 20);
            assertThat(after - baseline).as("heap after the load").isLessThan(64L << 20);
        } finally {
            slowReader.shutdownNow();
            channel.shutdownNow();
            server.stop();
        }
    }

    private static CompletableFuture<Outcome> start(ManagedChannel channel, Kind kind, int i,
            ScheduledExecutorService slow) {
        CompletableFuture<Outcome> f = new CompletableFuture<>();
        long t0 = System.nanoTime();
        AtomicInteger results = new AtomicInteger();
        AtomicInteger previews = new AtomicInteger();
        AtomicInteger progress = new AtomicInteger();
        GenerateRequest req = GenerateRequest.newBuilder().setModel(i % 2 == 0 ? "pixel-tiny" : "latent-tiny")
                .setClassId(i % 10).setNumImages(IMAGES).setSteps(STEPS).setPreviewInterval(1).setSeed(i + 1).build();
        DiffusionServiceGrpc.newStub(channel).generate(req, new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
            private ClientCallStreamObserver<GenerateRequest> call;

            @Override
            public void beforeStart(ClientCallStreamObserver<GenerateRequest> rs) {
                call = rs;
                if (kind == Kind.SLOW) {
                    rs.disableAutoRequestWithInitial(1);
                }
            }

            @Override
            public void onNext(GenerateEvent e) {
                if (e.hasResult()) {
                    results.incrementAndGet();
                } else if (e.hasPreview()) {
                    previews.incrementAndGet();
                } else if (e.hasProgress() && progress.incrementAndGet() == 3 && kind == Kind.CANCEL) {
                    call.cancel("test cancels midway", null);
                }
                if (kind == Kind.SLOW) {
                    slow.schedule(() -> call.request(1), 15, TimeUnit.MILLISECONDS);
                }
            }

            @Override
            public void onError(Throwable t) {
                f.complete(new Outcome(kind, Status.fromThrowable(t), results.get(), previews.get(), ms(t0)));
            }

            @Override
            public void onCompleted() {
                f.complete(new Outcome(kind, Status.OK, results.get(), previews.get(), ms(t0)));
            }
        });
        return f;
    }

    private static long ms(long t0) {
        return (System.nanoTime() - t0) / 1_000_000;
    }

    private static void awaitIdle(DitServer server) throws InterruptedException {
        assertThat(server.engine().awaitIdle(java.time.Duration.ofSeconds(30))).as("engine idle; now %s",
                server.engine().snapshot()).isTrue();
    }
}
