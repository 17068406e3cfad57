// The client side of tools/container_test.sh, compiled there with tools/failover/Failover.java against the server's
// class path and run as
//   java -cp 'target/container/check:server/target/classes:server/target/lib/*' ContainerCheck MODE ARGS...
// It drives the containers with the podman command line ($PODMAN, default "podman"); every wait polls a condition
// against a deadline.
// MODE single GRPC_PORT METRICS_PORT CONTAINER: the metrics port answers; `podman stop -t 60` during a stream:
//   health goes NOT_SERVING, the stream completes with its image, the container exits with 0.
// MODE compose LB_PORT PORT_A PORT_B METRICS_A METRICS_B CONTAINER_A CONTAINER_B: two replicas behind the balancer:
//   calls through it reach both; both metrics ports answer; `podman kill` (SIGKILL) of replica B's container under
//   streams (Failover.killUnderStreams); then B is started again and gets calls through the balancer; then
//   `podman stop -t 60` of B under streams (Failover.drainUnderStreams) and B exits with 0.
import io.ditserve.client.DitClient;
import io.grpc.Status;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

public class ContainerCheck {
    static final String PODMAN = System.getenv().getOrDefault("PODMAN", "podman");

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

    /** GET /metrics: HTTP 200 with the dit_ metrics; returns dit_requests_total{code="OK"} of fashion-dit. */
    static double metrics(int port) throws Exception {
        HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/metrics"))
                .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
        Failover.check(r.statusCode() == 200 && r.body().contains("dit_queue_depth"),
                "metrics port " + port + " answers (HTTP " + r.statusCode() + ")");
        Matcher m = Pattern.compile("(?m)^dit_requests_total\\{code=\"OK\",model=\"fashion-dit\"} ([0-9.]+)$")
                .matcher(r.body());
        return m.find() ? Double.parseDouble(m.group(1)) : 0;
    }

    static void exitedWithZero(String container) throws Exception {
        String code = podmanOutput("inspect", "--format", "{{.State.ExitCode}}", container);
        Failover.check(code.equals("0"), container + " exited with code 0 after its drain (ExitCode " + code + ")");
    }

    public static void main(String[] args) throws Exception {
        Failover.name = "container_test";
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
            Failover.await("the container serves", 120, () -> Failover.serving(c));
            Failover.check(metrics(metricsPort) >= 1, "the metrics count the generation made before");
            CompletableFuture<Void> notServing = Failover.watchNotServing(c);
            CompletableFuture<Status> stream = Failover.generate(c, Failover.request(400, 41));
            Failover.await("the stream runs", 30, () -> Failover.running(c) == 1);
            CompletableFuture<Integer> stop =
                    CompletableFuture.supplyAsync(() -> podman("stop", "-t", "60", container));
            notServing.get(20, TimeUnit.SECONDS);
            Failover.check(true, "health went NOT_SERVING after SIGTERM (podman stop)");
            Status s = stream.get(90, TimeUnit.SECONDS);
            Failover.check(s.isOk(), "the stream running at the SIGTERM completes with its image: " + s);
            Failover.check(stop.get(90, TimeUnit.SECONDS) == 0, "podman stop returns");
            exitedWithZero(container);
        }
    }

    static void compose(int lb, int portA, int portB, int metricsA, int metricsB, String containerA, String containerB)
            throws Exception {
        try (DitClient proxy = DitClient.connect("127.0.0.1:" + lb);
             DitClient a = DitClient.connect("127.0.0.1:" + portA);
             DitClient b = DitClient.connect("127.0.0.1:" + portB)) {
            Failover.await("both replicas and the balancer serve", 180,
                    () -> Failover.serving(a) && Failover.serving(b) && Failover.serving(proxy));
            Failover.check(true, "both replicas and the balancer answer grpc.health.v1 with SERVING");
            long[] spread = Failover.spread(proxy, a, b);
            double okA = metrics(metricsA);
            double okB = metrics(metricsB);
            Failover.check(okA >= spread[0] && okB >= spread[1],
                    "the metrics ports count the calls: " + okA + " OK on A, " + okB + " OK on B");

            Failover.killUnderStreams(proxy, a, b, "podman kill (SIGKILL) of " + containerB,
                    () -> podman("kill", "--signal", "KILL", containerB) == 0);

            // B again: a new address on the compose network; the balancer's image re-resolves the replicas' names
            // and reloads nginx
            Failover.check(podman("start", containerB) == 0, "podman start " + containerB);
            Failover.await("replica B serves again", 120, () -> Failover.serving(b));
            Failover.untilBGetsCalls(proxy, b, 60);

            CompletableFuture<Integer> stop = new CompletableFuture<>();
            Failover.drainUnderStreams(proxy, a, b, "podman stop -t 60 (SIGTERM) of " + containerB, () -> {
                CompletableFuture.runAsync(() -> stop.complete(podman("stop", "-t", "60", containerB)));
                return true;
            });
            Failover.check(stop.get(90, TimeUnit.SECONDS) == 0, "podman stop returns");
            exitedWithZero(containerB);
        }
    }
}
