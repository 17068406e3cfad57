package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicIntegerArray;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * SIGTERM to a real {@code dit serve} process (this JVM's classpath, the launcher's JVM options) while three long
 * generations run with previews off, so that the process encodes its first PNG during the drain: they all complete
 * with their images.
 */
class ShutdownProcessTest {
    private static final int STEPS = 400;

    @Test
    void generationsRunningAtSigtermFinishWithTheirImages(@TempDir Path dir) throws Exception {
        ServerProcess proc = ServerProcess.start(dir.resolve("server.log"), "512m", java.util.Map.of(),
                "--threads", "1", "--models", TestPaths.repoRoot().resolve("tools/fixtures").toString(),
                "--set", "metrics_port=-1", "--set", "shutdown_grace_seconds=120");
        Process server = proc.process;
        Path log = proc.log;
        try {
            int port = proc.port;
            try (DitClient client = DitClient.connect("localhost:" + port)) {
                CountDownLatch stepping = new CountDownLatch(3);
                AtomicIntegerArray latestStep = new AtomicIntegerArray(3);
                List<CompletableFuture<List<GenerateEvent>>> runs = new ArrayList<>();
                for (int k = 0; k < 3; k++) {
                    int slot = k;
                    GenerateRequest req = GenerateRequest.newBuilder().setModel("latent-tiny").setClassId(k)
                            .setSteps(STEPS).setGuidanceScale(2).setSeed(10 + k).build(); // previews off
                    runs.add(CompletableFuture.supplyAsync(() -> {
                        List<GenerateEvent> events = new ArrayList<>();
                        try (DitClient.EventStream s = client.generate(req)) {
                            while (s.hasNext()) {
                                GenerateEvent e = s.next();
                                events.add(e);
                                if (e.hasProgress() && latestStep.getAndSet(slot, e.getProgress().getStep()) == 0) {
                                    stepping.countDown();
                                }
                            }
                        }
                        return events;
                    }));
                }
                assertThat(stepping.await(60, TimeUnit.SECONDS)).as("all three generations step").isTrue();
                int[] atTerm = {latestStep.get(0), latestStep.get(1), latestStep.get(2)};
                server.destroy(); // SIGTERM: the server drains, then exits with 0
                for (CompletableFuture<List<GenerateEvent>> run : runs) {
                    List<GenerateEvent> events = run.get(180, TimeUnit.SECONDS);
                    GenerateEvent last = events.getLast();
                    assertThat(last.hasResult()).as("ends with its image; server log:\n%s", Files.readString(log))
                            .isTrue();
                    assertThat(last.getResult().getPng().size()).isGreaterThan(0);
                }
                assertThat(Arrays.stream(atTerm).max().orElseThrow())
                        .as("no generation had finished when SIGTERM came: the drain had work").isLessThan(STEPS);
            }
            assertThat(server.waitFor(60, TimeUnit.SECONDS)).isTrue();
            assertThat(server.exitValue()).as("exit code after a complete drain").isZero();
            String text = Files.readString(log);
            assertThat(text).contains("shutting down").contains("stopped").doesNotContain("Shutdown in progress");
        } finally {
            server.destroyForcibly();
        }
    }
}
