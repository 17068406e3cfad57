// The checks of tools/k8s/kube_play_test.sh against the pod that `podman kube play` started from deploy/k8s/:
// it serves (grpc.health.v1) with the ConfigMap's configuration, refuses a call without a token and serves one with
// the Secret's token, generates an image, its metrics port shows dit_queue_depth (the autoscaler's metric), and
// `podman stop -t GRACE CONTAINER` during a stream drains it: health NOT_SERVING, the stream completes with its
// image, the container exits with 0. The server's container is stopped, not the pod, as the kubelet does it: it
// stops a pod's containers within the grace and removes the pod's sandbox (its network) after they exited. podman
// 4.3's `pod stop` stops the infra container, and so the pod's network, at the same time: the draining server's
// last frames never reached the client (its stream hung until its deadline; measured here).
// Usage: KubePlayCheck GRPC_PORT METRICS_PORT TOKEN CONTAINER GRACE_SECONDS
// Compiled with tools/failover/Failover.java against the server's class path; podman from $PODMAN (default podman).
import io.ditserve.client.DitClient;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;

final class KubePlayCheck {
    static final String PODMAN = System.getenv().getOrDefault("PODMAN", "podman");

    static int podman(String... args) {
        try {
            String[] cmd = new String[args.length + 1];
            cmd[0] = PODMAN;
            System.arraycopy(args, 0, cmd, 1, args.length);
            return new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(ProcessBuilder.Redirect.DISCARD)
                    .start().waitFor();
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    static String podmanOutput(String... args) throws Exception {
        String[] cmd = new String[args.length + 1];
        cmd[0] = PODMAN;
        System.arraycopy(args, 0, cmd, 1, args.length);
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8).strip();
        p.waitFor();
        return out;
    }

    public static void main(String[] args) throws Exception {
        Failover.name = "kube_play_test";
        int port = Integer.parseInt(args[0]);
        int metricsPort = Integer.parseInt(args[1]);
        String token = args[2];
        String container = args[3];
        int grace = Integer.parseInt(args[4]);
        String target = "127.0.0.1:" + port;
        try (DitClient anonymous = DitClient.connect(target);
             DitClient c = DitClient.connect(target, null, null, null, token)) {
            Failover.await("the pod serves (grpc.health.v1 SERVING, no token needed)", 120,
                    () -> Failover.serving(anonymous));
            Failover.check(true, "the pod serves (grpc.health.v1 SERVING, no token needed)");
            try {
                anonymous.listModels();
                Failover.check(false, "a call without a token is refused");
            } catch (StatusRuntimeException e) {
                Failover.check(e.getStatus().getCode() == Status.Code.UNAUTHENTICATED,
                        "a call without a token is refused: " + e.getStatus().getCode() + " (the Secret's tokens apply)");
            }
            Failover.check(!c.listModels().isEmpty(), "with the Secret's token the models are listed: "
                    + c.listModels().stream().map(m -> m.getName()).toList());
            Status first = Failover.run(c, Failover.request(20, 5));
            Failover.check(first.isOk(), "a generation completes with its image: " + first);
            HttpResponse<String> r = HttpClient.newHttpClient().send(
                    HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + metricsPort + "/metrics"))
                            .timeout(Duration.ofSeconds(10)).build(), HttpResponse.BodyHandlers.ofString());
            Failover.check(r.statusCode() == 200 && r.body().contains("\ndit_queue_depth "),
                    "the metrics port answers with dit_queue_depth, the autoscaler's metric (HTTP " + r.statusCode() + ")");

            CompletableFuture<Void> notServing = Failover.watchNotServing(anonymous);
            CompletableFuture<Status> stream = Failover.generate(c, Failover.request(400, 41));
            Failover.await("the stream runs", 30, () -> Failover.running(c) == 1);
            CompletableFuture<Integer> stop = CompletableFuture.supplyAsync(
                    () -> podman("stop", "-t", String.valueOf(grace), container));
            notServing.get(20, TimeUnit.SECONDS);
            Failover.check(true, "health went NOT_SERVING after SIGTERM (podman stop -t " + grace + ")");
            Status s = stream.get(grace + 30, TimeUnit.SECONDS);
            Failover.check(s.isOk(), "the stream running at the SIGTERM completes with its image: " + s);
            Failover.check(stop.get(grace + 30, TimeUnit.SECONDS) == 0, "podman stop returns");
            String code = podmanOutput("inspect", "--format", "{{.State.ExitCode}}", container);
            Failover.check(code.equals("0"), container + " exited with code 0 after its drain (ExitCode " + code + ")");
        }
        System.out.println("kube_play_test: passed");
        System.exit(0);
    }
}
