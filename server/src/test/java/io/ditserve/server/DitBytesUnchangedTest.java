package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.Result;
import io.ditserve.proto.v1.Sampler;
import io.ditserve.proto.v1.StepCacheMethod;
import io.ditserve.proto.v1.StepCacheSettings;
import io.ditserve.server.config.ServerConfig;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * A DiT folder serves the same bytes as before the model contract became family-neutral (issue 23): the float32
 * samples (and a latent model's decoded image) of the requests in tools/dit-bytes/cases.tsv, recorded by
 * tools/make_dit_bytes_fixture.sh with the server at the commit before the redesign, must come back bit for bit from
 * this server: DDIM, DDPM, DPM-Solver++(2M), guidance on three and on all channels, DDIM with eta, step caching, a
 * pixel and a latent model with its VAE, the fixture models and the bundled ones.
 */
class DitBytesUnchangedTest {
    @TempDir
    static Path models;
    private static TestServers.Running server;

    record Case(String name, String model, String label, int count, int steps, String sampler, float guidance,
            float eta, int stepCache, long seed, List<String> formats) {
        @Override
        public String toString() {
            return name;
        }
    }

    static Path dir() {
        return TestPaths.repoRoot().resolve("tools/dit-bytes");
    }

    static Stream<Case> cases() throws IOException {
        List<Case> out = new ArrayList<>();
        for (String line : Files.readAllLines(dir().resolve("cases.tsv"))) {
            if (line.isBlank() || line.startsWith("#")) {
                continue;
            }
            String[] f = line.split("\t");
            out.add(new Case(f[0], f[1], f[2], Integer.parseInt(f[3]), Integer.parseInt(f[4]), f[5],
                    Float.parseFloat(f[6]), Float.parseFloat(f[7]), Integer.parseInt(f[8]), Long.parseLong(f[9]),
                    List.of(f[10].split(","))));
        }
        return out.stream();
    }

    @BeforeAll
    static void start() throws Exception {
        Path root = TestPaths.repoRoot();
        for (String m : List.of("pixel-tiny", "latent-tiny")) {
            Files.createSymbolicLink(models.resolve(m), root.resolve("tools/fixtures").resolve(m));
        }
        for (String m : List.of("fashion-dit", "fashion-latent-dit")) {
            Files.createSymbolicLink(models.resolve(m), root.resolve("models").resolve(m));
        }
        ServerConfig c = TestServers.config();
        c.models = models.toString();
        server = TestServers.inProcess(c);
    }

    @AfterAll
    static void stop() {
        if (server != null) {
            server.server().stop();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("cases")
    void theSameRequestGivesTheBytesRecordedBeforeTheRedesign(Case c) throws Exception {
        GenerateRequest.Builder b = GenerateRequest.newBuilder().setModel(c.model()).setNumImages(c.count())
                .setSteps(c.steps()).setSeed(c.seed()).setGuidanceScale(c.guidance()).setEta(c.eta())
                .setSampler(switch (c.sampler()) {
                    case "ddim" -> Sampler.SAMPLER_DDIM;
                    case "ddpm" -> Sampler.SAMPLER_DDPM;
                    case "dpmpp-2m" -> Sampler.SAMPLER_DPMPP_2M;
                    default -> throw new IllegalArgumentException(c.sampler());
                });
        if (c.label().matches("\\d+")) {
            b.setClassId(Integer.parseInt(c.label()));
        } else {
            b.setClassName(c.label());
        }
        if (c.stepCache() > 0) {
            b.setStepCache(StepCacheSettings.newBuilder().setMethod(StepCacheMethod.STEP_CACHE_INTERVAL)
                    .setInterval(c.stepCache()));
        }
        for (String f : c.formats()) {
            b.addOutputFormats(f.equals("tensor") ? OutputFormat.OUTPUT_FORMAT_TENSOR
                    : OutputFormat.OUTPUT_FORMAT_IMAGE_TENSOR);
        }
        List<Result> results = new ArrayList<>();
        DitClient client = server.client();
        try (DitClient.EventStream events = client.generate(b.build())) {
            while (events.hasNext()) {
                GenerateEvent e = events.next();
                if (e.hasResult()) {
                    results.add(e.getResult());
                }
            }
        }
        assertThat(results).hasSize(c.count());
        int compared = 0;
        for (Result r : results) {
            if (c.formats().contains("tensor")) {
                assertThat(r.getTensor().getData().toByteArray()).as("%s sample of seed %d", c.name(), r.getSeed())
                        .isEqualTo(Files.readAllBytes(only(c.name(), "-" + r.getSeed() + ".tensor.")));
                compared++;
            }
            if (c.formats().contains("image-tensor")) {
                assertThat(r.getImageTensor().getData().toByteArray()).as("%s image of seed %d", c.name(),
                        r.getSeed()).isEqualTo(Files.readAllBytes(only(c.name(), "-" + r.getSeed() + ".image.")));
                compared++;
            }
        }
        assertThat(compared).isEqualTo(c.count() * c.formats().size());
    }

    /** The one recorded file of case {@code name} (NAME.MODEL-LABEL-SEED.KIND.SHAPE.f32) that contains {@code part}. */
    private static Path only(String name, String part) throws IOException {
        try (Stream<Path> files = Files.list(dir())) {
            List<Path> found = files.map(p -> p.getFileName().toString())
                    .filter(f -> f.startsWith(name + ".") && f.contains(part)).map(dir()::resolve).toList();
            assertThat(found).as("recorded files %s.*%s*", name, part).hasSize(1);
            return found.getFirst();
        }
    }
}
