// The client side of tools/lb_test.sh: run with the server's class path as a single-file program,
//   java -cp 'server/target/classes:server/target/lib/*' tools/lb/LbCheck.java MODE LB_PORT PORT_A PORT_B PID_B
// MODE spread-kill: calls through the proxy are spread over both replicas; kill -9 of replica B during a stream
//   ends that stream with an error (nginx: INTERNAL), the stream on A completes, the cut request sent again and
//   new calls through the proxy complete (on A); a stream read with DitClient.generateResumable is sent again by the
//   client itself and completes.
// MODE drain: SIGTERM to replica B during a stream: B's health goes NOT_SERVING, new calls through the proxy all run
//   on A, and B's running generation completes.
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetServerStatusRequest;
import io.ditserve.proto.v1.ServerStatus;
import io.grpc.Status;
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

public class LbCheck {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError("lb_test: " + what);
        }
        System.out.println("lb_test: ok: " + what);
    }

    static void await(String what, long seconds, BooleanSupplier c) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!c.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("lb_test: not within " + seconds + " s: " + what);
            }
            Thread.sleep(20);
        }
    }

    static ServerStatus status(DitClient c) {
        return DiffusionServiceGrpc.newBlockingStub(c.channel()).withDeadlineAfter(5, TimeUnit.SECONDS)
                .getServerStatus(GetServerStatusRequest.getDefaultInstance());
    }

    static GenerateRequest request(int steps, long seed) {
        return GenerateRequest.newBuilder().setModel("fashion-dit").setClassId((int) (seed % 10)).setSteps(steps)
                .setSeed(seed).setGuidanceScale(1).build();
    }

    /** Runs a generation to its end; returns its status and how many results it got. */
    static CompletableFuture<Status> generate(DitClient c, GenerateRequest r) {
        CompletableFuture<Status> end = new CompletableFuture<>();
        int[] results = new int[1];
        DiffusionServiceGrpc.newStub(c.channel()).withDeadlineAfter(60, TimeUnit.SECONDS).generate(r,
                new StreamObserver<>() {
                    @Override
                    public void onNext(GenerateEvent e) {
                        results[0] += e.hasResult() ? 1 : 0;
                    }

                    @Override
                    public void onError(Throwable t) {
                        end.complete(Status.fromThrowable(t));
                    }

                    @Override
                    public void onCompleted() {
                        end.complete(results[0] == r.getNumImages() || results[0] == 1 ? Status.OK
                                : Status.INTERNAL.withDescription("completed with " + results[0] + " results"));
                    }
                });
        return end;
    }

    static Status run(DitClient c, GenerateRequest r) throws Exception {
        return generate(c, r).get(60, TimeUnit.SECONDS);
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        int lb = Integer.parseInt(args[1]);
        long pidB = Long.parseLong(args[4]);
        try (DitClient proxy = DitClient.connect("127.0.0.1:" + lb);
             DitClient a = DitClient.connect("127.0.0.1:" + args[2]);
             DitClient b = DitClient.connect("127.0.0.1:" + args[3])) {
            long doneA = status(a).getGenerationsCompleted();
            long doneB = status(b).getGenerationsCompleted();
            if (mode.equals("spread-kill")) {
                for (int i = 0; i < 8; i++) {
                    check(run(proxy, request(5, i)).isOk(), "generation " + i + " through the proxy");
                }
                long spreadA = status(a).getGenerationsCompleted() - doneA;
                long spreadB = status(b).getGenerationsCompleted() - doneB;
                check(spreadA + spreadB == 8 && spreadA >= 2 && spreadB >= 2,
                        "8 calls spread over both replicas: " + spreadA + " on A, " + spreadB + " on B");
                // two plain long streams, then two resumable ones, each sent once the previous one runs: round robin
                // puts one of each kind on each replica
                List<CompletableFuture<Status>> streams = new ArrayList<>();
                for (int i = 0; i < 2; i++) {
                    streams.add(generate(proxy, request(1000, 100 + i)));
                    int want = i + 1;
                    await("stream " + i + " runs", 20,
                            () -> status(a).getRunningCount() + status(b).getRunningCount() == want);
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
                    await("resumable stream " + i + " runs", 20,
                            () -> status(a).getRunningCount() + status(b).getRunningCount() == want);
                }
                await("two streams running on each replica", 20,
                        () -> status(a).getRunningCount() == 2 && status(b).getRunningCount() == 2);
                check(ProcessHandle.of(pidB).orElseThrow().destroyForcibly(), "kill -9 replica B");
                CompletableFuture.anyOf(streams.toArray(CompletableFuture[]::new)).get(30, TimeUnit.SECONDS);
                int cutIndex = streams.get(0).isDone() ? 0 : 1;
                Status cut = streams.get(cutIndex).join();
                System.out.println("lb_test: the stream on the killed replica ended with " + cut);
                // nginx ends a proxied stream whose replica vanished with RST_STREAM INTERNAL_ERROR, which gRPC
                // reports as INTERNAL (a proxy that closes the connection instead would give UNAVAILABLE)
                check(cut.getCode() == Status.Code.INTERNAL || cut.getCode() == Status.Code.UNAVAILABLE,
                        "its client gets an error (" + cut.getCode() + ")");
                // the client sends it again: same seed, same images, now on replica A
                check(run(proxy, request(20, 100 + cutIndex)).isOk(), "the cut request sent again completes");
                for (int i = 0; i < 4; i++) {
                    check(run(proxy, request(5, 200 + i)).isOk(), "call " + i + " after the kill completes");
                }
                Status survivor = streams.get(1 - cutIndex).get(60, TimeUnit.SECONDS);
                check(survivor.isOk(), "the stream on replica A completes: " + survivor);
                // DitClient.generateResumable: the one cut with replica B is sent again (same seed) and completes on A
                int resumed = 0;
                for (CompletableFuture<int[]> f : resumable) {
                    int[] counts = f.get(90, TimeUnit.SECONDS);
                    check(counts[1] == 1, "a resumable stream completes with its one result (Accepted events: "
                            + counts[0] + ")");
                    resumed += counts[0] > 1 ? 1 : 0;
                }
                check(resumed == 1, "exactly the resumable stream on the killed replica was resumed: " + resumed);
            } else if (mode.equals("drain")) {
                CompletableFuture<HealthCheckResponse.ServingStatus> notServing = new CompletableFuture<>();
                HealthGrpc.newStub(b.channel()).watch(HealthCheckRequest.getDefaultInstance(), new StreamObserver<>() {
                    @Override
                    public void onNext(HealthCheckResponse r) {
                        if (r.getStatus() == HealthCheckResponse.ServingStatus.NOT_SERVING) {
                            notServing.complete(r.getStatus());
                        }
                    }

                    @Override
                    public void onError(Throwable t) {}

                    @Override
                    public void onCompleted() {}
                });
                // the proxy left the address of the killed replica out for its fail_timeout: call until the new
                // replica B gets calls again
                long bBefore = status(b).getGenerationsCompleted();
                int probes = 0;
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
                while (status(b).getGenerationsCompleted() == bBefore) {
                    if (System.nanoTime() > deadline) {
                        throw new AssertionError("lb_test: the proxy sent no call to the new replica B in 30 s");
                    }
                    run(proxy, request(2, 500 + probes++));
                }
                System.out.println("lb_test: the new replica B got a call after " + probes + " calls");
                List<CompletableFuture<Status>> streams = new ArrayList<>();
                for (int i = 0; i < 4 && (status(a).getRunningCount() == 0 || status(b).getRunningCount() == 0); i++) {
                    int before = status(a).getRunningCount() + status(b).getRunningCount();
                    streams.add(generate(proxy, request(600, 300 + i)));
                    await("a new stream runs", 20,
                            () -> status(a).getRunningCount() + status(b).getRunningCount() > before);
                }
                check(status(a).getRunningCount() >= 1 && status(b).getRunningCount() >= 1,
                        "streams running on both replicas");
                long beforeA = status(a).getGenerationsCompleted();
                int onA = status(a).getRunningCount();
                check(ProcessHandle.of(pidB).orElseThrow().destroy(), "SIGTERM to replica B");
                notServing.get(10, TimeUnit.SECONDS);
                check(true, "replica B's health went NOT_SERVING");
                for (int i = 0; i < 6; i++) {
                    check(run(proxy, request(5, 400 + i)).isOk(), "new call " + i + " during the drain");
                }
                for (CompletableFuture<Status> s : streams) {
                    Status st = s.get(60, TimeUnit.SECONDS);
                    check(st.isOk(), "a stream running at the SIGTERM completes: " + st);
                }
                long newOnA = status(a).getGenerationsCompleted() - beforeA;
                check(newOnA == 6 + onA, "the 6 new calls (and A's own streams) ran on replica A: " + newOnA);
            } else {
                throw new IllegalArgumentException(mode);
            }
        }
        System.out.println("lb_test: " + mode + " passed");
        System.exit(0);
    }
}
