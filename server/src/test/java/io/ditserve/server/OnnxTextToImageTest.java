package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Safetensors;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.Result;
import io.ditserve.server.config.ServerConfig;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Text-to-image on the onnx backend through the real server (issue 24): the SD3 and SD3.5 fixture pipelines of
 * {@link TextToImageTest}, served once on the onnx backend (its MMDiT and CLIP graphs built at load from the
 * folders, no .onnx file in them) and once on the java backend, in one server. Each case of the reference pipeline
 * gives on onnx the reference's sample within 1e-4 and the java backend's 8-bit image within one level on every
 * value.
 */
class OnnxTextToImageTest {
    private static final String JAVA_SUFFIX = "-java";

    @TempDir
    static Path models;
    private static TestServers.Running server;

    @BeforeAll
    static void start() throws Exception {
        ServerConfig c = TestServers.config();
        c.backend = "onnx";
        for (String m : List.of("sd3-tiny", "sd35-tiny")) {
            Files.createSymbolicLink(models.resolve(m), TextToImageTest.fixture(m));
            Files.createSymbolicLink(models.resolve(m + JAVA_SUFFIX), TextToImageTest.fixture(m));
            c.modelBackends.put(m + JAVA_SUFFIX, "java");
        }
        c.models = models.toString();
        server = TestServers.inProcess(c);
    }

    @AfterAll
    static void stop() {
        if (server != null) {
            server.close();
        }
    }

    static Stream<Arguments> cases() throws Exception {
        return TextToImageTest.cases();
    }

    private static Result result(String model, String served, int k) throws Exception {
        List<GenerateEvent> events;
        try (var s = server.client().generate(TextToImageTest.request(model, k).toBuilder().setModel(served)
                .build())) {
            events = new java.util.ArrayList<>();
            s.forEachRemaining(events::add);
        }
        return events.stream().filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult();
    }

    @Test
    void thePipelinesAreServedOnTheirBackends() throws Exception {
        for (Map.Entry<String, String> e : Map.of("sd3-tiny", "onnx", "sd3-tiny" + JAVA_SUFFIX, "java").entrySet()) {
            ModelInfo info = server.client().getModel(e.getKey());
            assertThat(info.getBackend()).as(e.getKey()).isEqualTo(e.getValue());
            assertThat(info.getConditioning()).isEqualTo("text");
        }
        try (Stream<Path> files = Files.list(TextToImageTest.fixture("sd3-tiny").resolve("transformer"))) {
            assertThat(files.map(p -> p.getFileName().toString())).noneMatch(f -> f.endsWith(".onnx"));
        }
    }

    @ParameterizedTest(name = "{0} case {1}")
    @MethodSource("cases")
    void onnxGivesTheReferenceSampleAndTheJavaBackendsImage(String model, int k) throws Exception {
        Result onnx = result(model, model, k);
        Result java = result(model, model + JAVA_SUFFIX, k);
        try (Safetensors st = Safetensors.open(TextToImageTest.fixture(model).resolve("cases.safetensors"))) {
            float[] want = st.tensor("case." + k + ".sample").data();
            float[] got = TextToImageTest.floats(onnx.getTensor().getData());
            double maxAbs = 0;
            double maxErr = 0;
            for (int i = 0; i < want.length; i++) {
                maxAbs = Math.max(maxAbs, Math.abs(want[i]));
                maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
            }
            assertThat(maxErr / maxAbs).as("%s case %d onnx sample vs the reference pipeline", model, k)
                    .isLessThan(1e-4);
            BufferedImage a = ImageIO.read(new ByteArrayInputStream(onnx.getPng().toByteArray()));
            BufferedImage b = ImageIO.read(new ByteArrayInputStream(java.getPng().toByteArray()));
            assertThat(a.getWidth()).isEqualTo(b.getWidth());
            assertThat(a.getHeight()).isEqualTo(b.getHeight());
            int worst = 0;
            int differing = 0;
            for (int y = 0; y < a.getHeight(); y++) {
                for (int x = 0; x < a.getWidth(); x++) {
                    int p = a.getRGB(x, y);
                    int q = b.getRGB(x, y);
                    for (int shift = 0; shift <= 16; shift += 8) {
                        int diff = Math.abs(((p >> shift) & 255) - ((q >> shift) & 255));
                        worst = Math.max(worst, diff);
                        differing += diff > 0 ? 1 : 0;
                    }
                }
            }
            System.out.printf("onnx text-to-image %s case %d: sample error %.2e (relative) vs the reference; vs java "
                    + "%d of %d values differ, by at most %d%n", model, k, maxErr / maxAbs, differing,
                    a.getWidth() * a.getHeight() * 3, worst);
            assertThat(worst).as("%s case %d: onnx vs java, 8-bit levels", model, k).isLessThanOrEqualTo(1);
        }
    }
}
