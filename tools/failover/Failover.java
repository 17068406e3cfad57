// The failover scenarios shared by tools/lb/LbCheck.java (replicas as processes behind nginx, tools/lb_test.sh) and
// tools/container/ContainerCheck.java (replicas as containers behind the balancer image, tools/container_test.sh):
// the checks differ only in how a replica is killed, stopped and started. Compiled together with either check
// against the server's class path. Every wait polls a condition against a deadline.
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetServerStatusRequest;
import io.ditserve.proto.v1.ServerStatus;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.health.v1.HealthCheckRequest;
import io.grpc.health.v1.HealthCheckResponse;
import io.grpc.health.v1.HealthGrpc;
import io.grpc.stub.StreamObserver;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

final class Failover {
    /** Prefix of every line and failure ("lb_test", "container_test"). */
    static String name = "failover";

    private Failover() {}

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(name + ": " + what);
        }
        System.out.println(name + ": ok: " + what);
    }

    static void await(String what, long seconds, BooleanSupplier c) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!c.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError(name + ": not within " + seconds + " s: " + what);
            }
            Thread.sleep(20);
        }
    }

    static ServerStatus status(DitClient c) {
        return DiffusionServiceGrpc.newBlockingStub(c.channel()).withDeadlineAfter(5, TimeUnit.SECONDS)
                .getServerStatus(GetServerStatusRequest.getDefaultInstance());
    }

    static int running(DitClient c) {
        return status(c).getRunningCount();
    }

    static long completed(DitClient c) {
        return status(c).getGenerationsCompleted();
    }

    static boolean serving(DitClient c) {
        try {
            return HealthGrpc.newBlockingStub(c.channel()).withDeadlineAfter(3, TimeUnit.SECONDS)
                    .check(HealthCheckRequest.getDefaultInstance()).getStatus()
                    == HealthCheckResponse.ServingStatus.SERVING;
        } catch (StatusRuntimeException e) {
            return false;
        }
    }

    static GenerateRequest request(int steps, long seed) {
        return GenerateRequest.newBuilder().setModel("fashion-dit").setClassId((int) (seed % 10)).setSteps(steps)
                .setSeed(seed).setGuidanceScale(1).build();
    }

    /** A generation read to its end: OK with its one image, or the status it ended with. */
    static CompletableFuture<Status> generate(DitClient c, GenerateRequest r) {
        CompletableFuture<Status> end = new CompletableFuture<>();
        int[] images = new int[1];
        DiffusionServiceGrpc.newStub(c.channel()).withDeadlineAfter(120, TimeUnit.SECONDS).generate(r,
                new StreamObserver<>() {
                    @Override
                    public void onNext(GenerateEvent e) {
                        images[0] += e.hasResult() && e.getResult().getPng().size() > 0 ? 1 : 0;
                    }

                    @Override
                    public void onError(Throwable t) {
                        end.complete(Status.fromThrowable(t));
                    }

                    @Override
                    public void onCompleted() {
                        end.complete(images[0] == 1 ? Status.OK
                                : Status.INTERNAL.withDescription("completed with " + images[0] + " images"));
                    }
                });
        return end;
    }

    static Status run(DitClient c, GenerateRequest r) throws Exception {
        return generate(c, r).get(120, TimeUnit.SECONDS);
    }

    /** A health Watch that completes when the server reports NOT_SERVING. */
    static CompletableFuture<Void> watchNotServing(DitClient c) {
        CompletableFuture<Void> notServing = new CompletableFuture<>();
        HealthGrpc.newStub(c.channel()).watch(HealthCheckRequest.getDefaultInstance(), new StreamObserver<>() {
            @Override
            public void onNext(HealthCheckResponse r) {
                if (r.getStatus() == HealthCheckResponse.ServingStatus.NOT_SERVING) {
                    notServing.complete(null);
                }
            }

            @Override
            public void onError(Throwable t) {}

            @Override
            public void onCompleted() {}
        });
        return notServing;
    }

    /** Eight calls through the balancer land on both replicas (at least two each); returns {on A, on B}. */
    static long[] spread(DitClient proxy, DitClient a, DitClient b) throws Exception {
        long doneA = completed(a);
        long doneB = completed(b);
        for (int i = 0; i < 8; i++) {
            check(run(proxy, request(5, i)).isOk(), "generation " + i + " through the balancer");
        }
        long onA = completed(a) - doneA;
        long onB = completed(b) - doneB;
        check(onA + onB == 8 && onA >= 2 && onB >= 2, "8 calls spread over both replicas: " + onA + " on A, " + onB
                + " on B");
        return new long[] {onA, onB};
    }

    /** What kills or stops replica B; returns whether the kill or stop was delivered. */
    interface Action {
        boolean run() throws Exception;
    }

    /**
     * Replica B dies under streams: two plain long streams and two read with {@link DitClient#generateResumable},
     * each sent once the previous one runs, so that round robin puts one of each kind on each replica; then
     * {@code kill}. B's plain stream ends with an error (nginx resets it: INTERNAL), the same request sent again and
     * new calls complete on A, A's stream completes, and exactly the resumable stream that was on B is sent again by
     * the client and completes.
     */
    static void killUnderStreams(DitClient proxy, DitClient a, DitClient b, String what, Action kill)
            throws Exception {
        List<CompletableFuture<Status>> streams = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            streams.add(generate(proxy, request(1000, 100 + i)));
            int want = i + 1;
            await("stream " + i + " runs", 30, () -> running(a) + running(b) == want);
        }
        List<CompletableFuture<int[]>> resumable = new ArrayList<>();
        for (int i = 0; i < 2; i++) {
            GenerateRequest r = request(300, 500 + i);
            resumable.add(CompletableFuture.supplyAsync(() -> {
                int[] counts = new int[2]; // Accepted events, results
                Iterator<GenerateEvent> it = proxy.generateResumable(r, 4);
                while (it.hasNext()) {
                    GenerateEvent e = it.next();
                    counts[0] += e.hasAccepted() ? 1 : 0;
                    counts[1] += e.hasResult() ? 1 : 0;
                }
                return counts;
            }));
            int want = i + 3;
            await("resumable stream " + i + " runs", 30, () -> running(a) + running(b) == want);
        }
        await("two streams running on each replica", 30, () -> running(a) == 2 && running(b) == 2);
        check(kill.run(), what);
        CompletableFuture.anyOf(streams.toArray(CompletableFuture[]::new)).get(30, TimeUnit.SECONDS);
        int cutIndex = streams.get(0).isDone() ? 0 : 1;
        Status cut = streams.get(cutIndex).join();
        System.out.println(name + ": the stream on the killed replica ended with " + cut);
        // nginx resets a proxied stream whose replica vanished with RST_STREAM INTERNAL_ERROR, which gRPC reports as
        // INTERNAL (a proxy that closes the connection instead would give UNAVAILABLE)
        check(cut.getCode() == Status.Code.INTERNAL || cut.getCode() == Status.Code.UNAVAILABLE,
                "its client gets an error (" + cut.getCode() + ")");
        // the client sends it again: same seed, same images, now on replica A
        check(run(proxy, request(20, 100 + cutIndex)).isOk(), "the cut request sent again completes");
        for (int i = 0; i < 4; i++) {
            check(run(proxy, request(5, 200 + i)).isOk(), "call " + i + " after the kill completes");
        }
        Status survivor = streams.get(1 - cutIndex).get(120, TimeUnit.SECONDS);
        check(survivor.isOk(), "the stream on replica A completes: " + survivor);
        int resumed = 0;
        for (CompletableFuture<int[]> f : resumable) {
            int[] counts = f.get(120, TimeUnit.SECONDS);
            check(counts[1] == 1, "a resumable stream completes with its one result (Accepted events: " + counts[0]
                    + ")");
            resumed += counts[0] > 1 ? 1 : 0;
        }
        check(resumed == 1, "exactly the resumable stream on the killed replica was sent again and completed on the"
                + " other: " + resumed);
    }

    /** Calls through the balancer until the (new or restarted) replica B gets one; returns how many it took. */
    static int untilBGetsCalls(DitClient proxy, DitClient b, long seconds) throws Exception {
        long bBefore = completed(b);
        int probes = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (completed(b) == bBefore) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError(name + ": the balancer sent no call to replica B in " + seconds + " s");
            }
            check(run(proxy, request(2, 600 + probes++)).isOk(), "call " + probes + " while B comes back");
        }
        check(true, "replica B gets calls through the balancer again (after " + probes + ")");
        return probes;
    }

    /**
     * Replica B drains under streams: streams on both replicas, then {@code stop} (SIGTERM): B's health goes
     * NOT_SERVING, six new calls all run on A, and every stream running at the SIGTERM completes.
     */
    static void drainUnderStreams(DitClient proxy, DitClient a, DitClient b, String what, Action stop)
            throws Exception {
        CompletableFuture<Void> notServing = watchNotServing(b);
        List<CompletableFuture<Status>> draining = new ArrayList<>();
        for (int i = 0; i < 4 && (running(a) == 0 || running(b) == 0); i++) {
            int before = running(a) + running(b);
            draining.add(generate(proxy, request(600, 300 + i)));
            await("a new stream runs", 30, () -> running(a) + running(b) > before);
        }
        check(running(a) >= 1 && running(b) >= 1, "streams running on both replicas");
        long beforeA = completed(a);
        int onA = running(a);
        check(stop.run(), what);
        notServing.get(20, TimeUnit.SECONDS);
        check(true, "replica B's health went NOT_SERVING");
        for (int i = 0; i < 6; i++) {
            check(run(proxy, request(5, 400 + i)).isOk(), "new call " + i + " during B's drain");
        }
        for (CompletableFuture<Status> s : draining) {
            Status st = s.get(120, TimeUnit.SECONDS);
            check(st.isOk(), "a stream running at the SIGTERM completes: " + st);
        }
        long newOnA = completed(a) - beforeA;
        check(newOnA == 6 + onA, "the 6 new calls (and A's own streams) ran on replica A: " + newOnA);
    }
}
