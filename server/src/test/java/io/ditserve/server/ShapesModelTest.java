package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.client.DitClient;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.Result;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The bundled prompt-following model (models/shapes, issue 25) through the real server, at its defaults: a request
 * gives the same bytes as the first request of a fresh server and again while other prompts' generations share its
 * passes (java), and the onnx backend's images are within one 8-bit level of java's. The folder is served twice,
 * as {@code shapes} on java and as {@code shapes-onnx} on onnx ({@code model_backends}).
 */
class ShapesModelTest {
    @TempDir
    static Path models;
    private static TestServers.Running server;

    private static final String PROMPT = "a red cube left of a blue ball";
    private static final List<String> OTHERS = List.of("a green sphere", "a small yellow box above a purple cone",
            "a blue triangle on the right", "a big white circle below a red square", "an orange cube at the top",
            "a purple ball right of a green pyramid");

    @BeforeAll
    static void start() throws Exception {
        Path shapes = TestPaths.repoRoot().resolve("models/shapes");
        Files.createSymbolicLink(models.resolve("shapes"), shapes);
        Files.createSymbolicLink(models.resolve("shapes-onnx"), shapes);
        ServerConfig c = TestServers.config();
        c.models = models.toString();
        c.modelBackends.put("shapes-onnx", "onnx");
        c.maxBatch = 64; // every running generation's evaluation in one pass (the test's 11 images, guided: 22)
        server = TestServers.inProcess(c);
    }

    @AfterAll
    static void stop() {
        if (server != null) {
            server.close();
        }
    }

    static GenerateRequest request(String model, String prompt, long seed, int images) {
        return GenerateRequest.newBuilder().setModel(model).setPrompt(prompt).setSeed(seed).setNumImages(images)
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_PNG).addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR)
                .build();
    }

    static List<Result> results(GenerateRequest r) {
        List<Result> out = new ArrayList<>();
        try (DitClient.EventStream s = server.client().generate(r)) {
            s.forEachRemaining(e -> {
                if (e.hasResult()) {
                    out.add(e.getResult());
                }
            });
        }
        return out;
    }

    @Test
    void aPromptGivesTheSameBytesFirstAloneAndAmongOtherPrompts() throws Exception {
        GenerateRequest target = request("shapes", PROMPT, 7, 2);
        double[] start = server.server().metrics().passesAndSamples("java", "shapes");
        List<Result> first = results(target); // the first generation of this server
        double alonePasses = server.server().metrics().passesAndSamples("java", "shapes")[0] - start[0];
        assertThat(first).hasSize(2);

        // other prompts with more steps, each seen running (a progress event) before the target is sent, so that the
        // target's passes are shared with theirs (max_batch default)
        CountDownLatch running = new CountDownLatch(OTHERS.size());
        List<CompletableFuture<Integer>> others = new ArrayList<>();
        for (int i = 0; i < OTHERS.size(); i++) {
            GenerateRequest o = request("shapes", OTHERS.get(i), 100 + i, 1 + i % 2).toBuilder().setSteps(60).build();
            others.add(CompletableFuture.supplyAsync(() -> {
                int n = 0;
                boolean seen = false;
                try (DitClient.EventStream s = server.client().generate(o)) {
                    while (s.hasNext()) {
                        GenerateEvent e = s.next();
                        if (e.hasProgress() && !seen) {
                            seen = true;
                            running.countDown();
                        }
                        n += e.hasResult() ? 1 : 0;
                    }
                }
                return n;
            }));
        }
        assertThat(running.await(120, TimeUnit.SECONDS)).as("the other generations started").isTrue();
        double[] before = server.server().metrics().passesAndSamples("java", "shapes");
        List<Result> batched = results(target);
        double[] after = server.server().metrics().passesAndSamples("java", "shapes");
        long stillRunning = others.stream().filter(f -> !f.isDone()).count();
        System.out.printf("shapes on java: the target took %.0f passes alone, %.0f passes (%.0f samples) among %d "
                + "other generations, %d of them still running at its end%n", alonePasses, after[0] - before[0],
                after[1] - before[1], OTHERS.size(), stillRunning);

        assertThat(stillRunning).as("others still running when the target finished").isPositive();
        // alone, the target took alonePasses passes; among the others, had it not shared their passes, the window
        // would hold its passes and theirs (at least twice as many)
        assertThat(after[0] - before[0]).as("passes while the target ran among others (%s alone)", alonePasses)
                .isLessThan(2 * alonePasses);
        for (int i = 0; i < 2; i++) {
            assertThat(batched.get(i).getSeed()).isEqualTo(first.get(i).getSeed());
            assertThat(batched.get(i).getTensor().getData()).as("image %d: the same sample alone and batched", i)
                    .isEqualTo(first.get(i).getTensor().getData());
            assertThat(batched.get(i).getPng()).as("image %d: the same PNG alone and batched", i)
                    .isEqualTo(first.get(i).getPng());
        }
        for (int i = 0; i < others.size(); i++) {
            assertThat(others.get(i).get(120, TimeUnit.SECONDS)).as("other %d's images", i).isEqualTo(1 + i % 2);
        }
    }

    @Test
    void onnxGivesJavasImagesWithinOneLevel() throws Exception {
        int values = 0;
        int identical = 0;
        int worst = 0;
        List<String> prompts = new ArrayList<>(OTHERS);
        prompts.add(PROMPT);
        for (int p = 0; p < prompts.size(); p++) {
            List<Result> java = results(request("shapes", prompts.get(p), 40 + p, 1));
            List<Result> onnx = results(request("shapes-onnx", prompts.get(p), 40 + p, 1));
            BufferedImage a = ImageIO.read(new ByteArrayInputStream(java.getFirst().getPng().toByteArray()));
            BufferedImage b = ImageIO.read(new ByteArrayInputStream(onnx.getFirst().getPng().toByteArray()));
            assertThat(b.getWidth()).isEqualTo(a.getWidth()).isEqualTo(32);
            assertThat(b.getHeight()).isEqualTo(a.getHeight()).isEqualTo(32);
            for (int y = 0; y < a.getHeight(); y++) {
                for (int x = 0; x < a.getWidth(); x++) {
                    for (int shift = 0; shift <= 16; shift += 8) {
                        int d = Math.abs(((a.getRGB(x, y) >> shift) & 255) - ((b.getRGB(x, y) >> shift) & 255));
                        worst = Math.max(worst, d);
                        identical += d == 0 ? 1 : 0;
                        values++;
                    }
                }
            }
        }
        System.out.printf("shapes java vs onnx: %d prompts, %d of %d 8-bit values identical, max difference %d%n",
                prompts.size(), identical, values, worst);
        assertThat(worst).as("largest difference between java's and onnx's images (8-bit levels)")
                .isLessThanOrEqualTo(1);
    }
}
