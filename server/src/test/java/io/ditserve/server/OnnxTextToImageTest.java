package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Safetensors;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
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
 * {@link TextToImageTest}, served once on the onnx backend (its MMDiT, CLIP, T5 and VAE decoder graphs built at load
 * from the folders, no .onnx file in them) and once on the java backend, in one server; the latent T5 folders also
 * without their T5 ({@link TextToImageTest#withoutT5}). Each case of the reference pipeline gives on onnx the
 * reference's sample within 1e-4, the reference's 8-bit image within one level on ≥ 99.9 % of the values, and the
 * java backend's image within one level on every value.
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
        for (String m : TextToImageTest.FIXTURES) {
            Files.createSymbolicLink(models.resolve(m), TextToImageTest.fixture(m));
            Files.createSymbolicLink(models.resolve(m + JAVA_SUFFIX), TextToImageTest.fixture(m));
            c.modelBackends.put(m + JAVA_SUFFIX, "java");
            if (m.endsWith("-full")) {
                String noT5 = m + TextToImageTest.NO_T5;
                TextToImageTest.withoutT5(TextToImageTest.fixture(m), models.resolve(noT5));
                Files.createSymbolicLink(models.resolve(noT5 + JAVA_SUFFIX), models.resolve(noT5));
                c.modelBackends.put(noT5 + JAVA_SUFFIX, "java");
            }
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

    /** Case k of the fixture {@code model}, on the model it is served by plus {@code suffix}. */
    private static Result result(String model, String suffix, int k) throws Exception {
        List<GenerateEvent> events;
        GenerateRequest r = TextToImageTest.request(model, k);
        try (var s = server.client().generate(r.toBuilder().setModel(r.getModel() + suffix).build())) {
            events = new java.util.ArrayList<>();
            s.forEachRemaining(events::add);
        }
        return events.stream().filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult();
    }

    @Test
    void thePipelinesAreServedOnTheirBackends() throws Exception {
        for (Map.Entry<String, String> e : Map.of("sd3-tiny", "onnx", "sd3-tiny" + JAVA_SUFFIX, "java",
                "sd3-tiny-full", "onnx", "sd3-tiny-full" + TextToImageTest.NO_T5, "onnx").entrySet()) {
            ModelInfo info = server.client().getModel(e.getKey());
            assertThat(info.getBackend()).as(e.getKey()).isEqualTo(e.getValue());
            assertThat(info.getConditioning()).isEqualTo("text");
        }
        assertThat(server.client().getModel("sd3-tiny-full").getTextEncodersList()).extracting(t -> t.getRole())
                .containsExactly("text_encoder", "text_encoder_2", "text_encoder_3");
        for (String m : List.of("sd3-tiny", "sd3-tiny-full", "sd35-tiny-full")) {
            try (Stream<Path> files = Files.walk(TextToImageTest.fixture(m))) {
                assertThat(files.map(p -> p.getFileName().toString())).as(m).noneMatch(f -> f.endsWith(".onnx"));
            }
        }
    }

    @ParameterizedTest(name = "{0} case {1}")
    @MethodSource("cases")
    void onnxGivesTheReferenceSampleAndTheJavaBackendsImage(String model, int k) throws Exception {
        Result onnx = result(model, "", k);
        Result java = result(model, JAVA_SUFFIX, k);
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
            var ref = TextToImageTest.ImageAgreement.of(a, st.tensor("case." + k + ".image").data());
            System.out.printf("text-to-image onnx %s case %d (%s, %dx%d): vs the reference image %.3f %% of %d "
                    + "values within one level, max difference %d%n", model, k, TextToImageTest.served(model, k),
                    a.getWidth(), a.getHeight(), 100 * ref.withinOne(), ref.values(), ref.maxDiff());
            assertThat(ref.withinOne()).as("%s case %d onnx: values within one 8-bit level of the reference", model, k)
                    .isGreaterThanOrEqualTo(0.999);
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
