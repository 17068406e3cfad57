// The client side of tools/container_test.sh, compiled there against the server's class path and run as
//   java -cp 'target/container/check:server/target/classes:server/target/lib/*' ContainerCheck MODE ARGS...
// It drives the containers with the podman command line ($PODMAN, default "podman"); every wait polls a condition
// against a deadline.
// MODE single GRPC_PORT METRICS_PORT CONTAINER: the metrics port answers; `podman stop -t 60` during a stream:
//   health goes NOT_SERVING, the stream completes with its image, the container exits with 0.
// MODE compose LB_PORT PORT_A PORT_B METRICS_A METRICS_B CONTAINER_A CONTAINER_B: two replicas behind the balancer:
//   calls through it reach both; both metrics ports answer; `podman kill` (SIGKILL) of replica B's container under
//   streams ends B's plain stream with an error (nginx: INTERNAL) and the stream read with
//   DitClient.generateResumable is sent again and completes on A, as do new calls; then B is started again and
//   gets calls through the balancer; then `podman stop -t 60` of B under streams: B's health goes NOT_SERVING, new
//   calls all run on A, B's streams complete and B exits with 0.
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
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class ContainerCheck {
    static final String PODMAN = System.getenv().getOrDefault("PODMAN", "podman");

    static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError("container_test: " + what);
        }
        System.out.println("container_test: ok: " + what);
    }

    static void await(String what, long seconds, BooleanSupplier c) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (!c.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("container_test: not within " + seconds + " s: " + what);
            }
            Thread.sleep(50);
        }
    }

    /** Runs a podman command, its errors passed through; returns its exit code. */
    static int podman(String... args) {
        List<String> cmd = new ArrayList<>(List.of(PODMAN.split(" ")));
        cmd.addAll(List.of(args));
        try {
            Process p = new ProcessBuilder(cmd).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                    .redirectError(ProcessBuilder.Redirect.INHERIT).start();
            return p.waitFor();
        } catch (IOException e) {
            throw new AssertionError("container_test: cannot run " + cmd, e);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new AssertionError(e);
        }
    }

    static String podmanOutput(String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(PODMAN.split(" ")));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.DISCARD).start();
        String out = new String(p.getInputStream().readAllBytes()).trim();
        p.waitFor();
        return out;
    }

    static ServerStatus status(DitClient c) {
        return DiffusionServiceGrpc.newBlockingStub(c.channel()).withDeadlineAfter(5, TimeUnit.SECONDS)
                .getServerStatus(GetServerStatusRequest.getDefaultInstance());
    }

    static int running(DitClient c) {
        return status(c).getRunningCount();
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
        int[] results = new int[1];
        DiffusionServiceGrpc.newStub(c.channel()).withDeadlineAfter(120, TimeUnit.SECONDS).generate(r,
                new StreamObserver<>() {
                    @Override
                    public void onNext(GenerateEvent e) {
                        results[0] += e.hasResult() && e.getResult().getPng().size() > 0 ? 1 : 0;
                    }

                    @Override
                    public void onError(Throwable t) {
                        end.complete(Status.fromThrowable(t));
                    }

                    @Override
                    public void onCompleted() {
                        end.complete(results[0] == 1 ? Status.OK
                                : Status.INTERNAL.withDescription("completed with " + results[0] + " images"));
                    }
                });
        return end;
    }

    static Status run(DitClient c, GenerateRequest r) throws Exception {
        return generate(c, r).get(120, TimeUnit.SECONDS);
    }

    /** GET /metrics: HTTP 200 with the dit_ metrics; returns dit_requests_total{code="OK"} of fashion-dit. */
    static double metrics(int port) throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics"))
                .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
        check(r.statusCode() == 200 && r.body().contains("dit_queue_depth"),
                "metrics port " + port + " answers (HTTP " + r.statusCode() + ")");
        Matcher m = Pattern.compile("(?m)^dit_requests_total\\{code=\"OK\",model=\"fashion-dit\"} ([0-9.]+)$")
                .matcher(r.body());
        return m.find() ? Double.parseDouble(m.group(1)) : 0;
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

    static void exitedWithZero(String container) throws Exception {
        String code = podmanOutput("inspect", "--format", "{{.State.ExitCode}}", container);
        check(code.equals("0"), container + " exited with code 0 after its drain (ExitCode " + code + ")");
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "single" -> single(Integer.parseInt(args[1]), Integer.parseInt(args[2]), args[3]);
            case "compose" -> compose(Integer.parseInt(args[1]), Integer.parseInt(args[2]), Integer.parseInt(args[3]),
                    Integer.parseInt(args[4]), Integer.parseInt(args[5]), args[6], args[7]);
            default -> throw new IllegalArgumentException(args[0]);
        }
        System.out.println("container_test: " + args[0] + " passed");
        System.exit(0);
    }

    static void single(int port, int metricsPort, String container) throws Exception {
        try (DitClient c = DitClient.connect("127.0.0.1:" + port)) {
            await("the container serves", 120, () -> serving(c));
            check(metrics(metricsPort) >= 1, "the metrics count the generation made before");
            CompletableFuture<Void> notServing = watchNotServing(c);
            CompletableFuture<Status> stream = generate(c, request(400, 41));
            await("the stream runs", 30, () -> running(c) == 1);
            CompletableFuture<Integer> stop = CompletableFuture.supplyAsync(() -> podman("stop", "-t", "60", container));
            notServing.get(20, TimeUnit.SECONDS);
            check(true, "health went NOT_SERVING after SIGTERM (podman stop)");
            Status s = stream.get(90, TimeUnit.SECONDS);
            check(s.isOk(), "the stream running at the SIGTERM completes with its image: " + s);
            check(stop.get(90, TimeUnit.SECONDS) == 0, "podman stop returns");
            exitedWithZero(container);
        }
    }

    static void compose(int lb, int portA, int portB, int metricsA, int metricsB, String containerA, String containerB)
            throws Exception {
        try (DitClient proxy = DitClient.connect("127.0.0.1:" + lb);
             DitClient a = DitClient.connect("127.0.0.1:" + portA);
             DitClient b = DitClient.connect("127.0.0.1:" + portB)) {
            await("both replicas and the balancer serve", 180, () -> serving(a) && serving(b) && serving(proxy));
            check(true, "both replicas and the balancer answer grpc.health.v1 with SERVING");
            long doneA = status(a).getGenerationsCompleted();
            long doneB = status(b).getGenerationsCompleted();
            for (int i = 0; i < 8; i++) {
                check(run(proxy, request(5, i)).isOk(), "generation " + i + " through the balancer");
            }
            long spreadA = status(a).getGenerationsCompleted() - doneA;
            long spreadB = status(b).getGenerationsCompleted() - doneB;
            check(spreadA + spreadB == 8 && spreadA >= 2 && spreadB >= 2,
                    "8 calls spread over both replicas: " + spreadA + " on A, " + spreadB + " on B");
            double okA = metrics(metricsA);
            double okB = metrics(metricsB);
            check(okA >= spreadA && okB >= spreadB,
                    "the metrics ports count the calls: " + okA + " OK on A, " + okB + " OK on B");

            // kill: two plain long streams and two resumable ones, each sent once the previous one runs, so that
            // round robin puts one of each kind on each replica; then SIGKILL to B's container
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
                    int[] counts = new int[2]; // Accepted events, images
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
            check(podman("kill", "--signal", "KILL", containerB) == 0, "podman kill (SIGKILL) of " + containerB);
            CompletableFuture.anyOf(streams.toArray(CompletableFuture[]::new)).get(30, TimeUnit.SECONDS);
            int cutIndex = streams.get(0).isDone() ? 0 : 1;
            Status cut = streams.get(cutIndex).join();
            System.out.println("container_test: the stream on the killed replica ended with " + cut);
            // nginx resets a proxied stream whose replica vanished with RST_STREAM INTERNAL_ERROR, which gRPC reports
            // as INTERNAL (a proxy that closes the connection instead would give UNAVAILABLE)
            check(cut.getCode() == Status.Code.INTERNAL || cut.getCode() == Status.Code.UNAVAILABLE,
                    "its client gets an error (" + cut.getCode() + ")");
            check(run(proxy, request(20, 100 + cutIndex)).isOk(), "the cut request sent again completes");
            for (int i = 0; i < 4; i++) {
                check(run(proxy, request(5, 200 + i)).isOk(), "call " + i + " after the kill completes");
            }
            Status survivor = streams.get(1 - cutIndex).get(120, TimeUnit.SECONDS);
            check(survivor.isOk(), "the stream on replica A completes: " + survivor);
            int resumed = 0;
            for (CompletableFuture<int[]> f : resumable) {
                int[] counts = f.get(120, TimeUnit.SECONDS);
                check(counts[1] == 1, "a resumable stream completes with its one image (Accepted events: "
                        + counts[0] + ")");
                resumed += counts[0] > 1 ? 1 : 0;
            }
            check(resumed == 1, "exactly the resumable stream on the killed replica was sent again and completed on"
                    + " the other: " + resumed);

            // B again: a new address on the compose network; the balancer's image re-resolves the replicas' names
            // and reloads nginx, and calls until it gets one
            check(podman("start", containerB) == 0, "podman start " + containerB);
            await("replica B serves again", 120, () -> serving(b));
            long bBefore = status(b).getGenerationsCompleted();
            int probes = 0;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (status(b).getGenerationsCompleted() == bBefore) {
                if (System.nanoTime() > deadline) {
                    throw new AssertionError("container_test: the balancer sent no call to the restarted B in 60 s");
                }
                check(run(proxy, request(2, 600 + probes++)).isOk(), "call " + probes + " while B comes back");
            }
            check(true, "the restarted replica B gets calls through the balancer again (after " + probes + ")");

            // drain: streams on both replicas, then podman stop -t 60 of B
            CompletableFuture<Void> notServing = watchNotServing(b);
            List<CompletableFuture<Status>> draining = new ArrayList<>();
            for (int i = 0; i < 4 && (running(a) == 0 || running(b) == 0); i++) {
                int before = running(a) + running(b);
                draining.add(generate(proxy, request(600, 300 + i)));
                await("a new stream runs", 30, () -> running(a) + running(b) > before);
            }
            check(running(a) >= 1 && running(b) >= 1, "streams running on both replicas");
            long beforeA = status(a).getGenerationsCompleted();
            int onA = running(a);
            CompletableFuture<Integer> stop = CompletableFuture.supplyAsync(() -> podman("stop", "-t", "60", containerB));
            notServing.get(20, TimeUnit.SECONDS);
            check(true, "replica B's health went NOT_SERVING (podman stop: SIGTERM)");
            for (int i = 0; i < 6; i++) {
                check(run(proxy, request(5, 400 + i)).isOk(), "new call " + i + " during B's drain");
            }
            for (CompletableFuture<Status> s : draining) {
                Status st = s.get(120, TimeUnit.SECONDS);
                check(st.isOk(), "a stream running at the SIGTERM completes: " + st);
            }
            long newOnA = status(a).getGenerationsCompleted() - beforeA;
            check(newOnA == 6 + onA, "the 6 new calls (and A's own streams) ran on replica A: " + newOnA);
            check(stop.get(90, TimeUnit.SECONDS) == 0, "podman stop returns");
            exitedWithZero(containerB);
        }
    }
}
