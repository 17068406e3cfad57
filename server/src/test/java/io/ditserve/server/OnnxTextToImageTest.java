package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.Result;
import io.ditserve.server.config.ServerConfig;
import java.awt.image.BufferedImage;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
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

    @RegisterExtension
    static final PipelineServer server = new PipelineServer(TextToImageTest.FIXTURES, OnnxTextToImageTest::alsoOnJava);

    /** The onnx backend for the fixtures; each also served on the java backend, with the suffix -java. */
    private static void alsoOnJava(ServerConfig c, Path models) throws Exception {
        c.backend = "onnx";
        for (String m : TextToImageTest.FIXTURES) {
            List<String> served = m.endsWith("-full") ? List.of(m, m + TextToImageTest.NO_T5) : List.of(m);
            for (String s : served) {
                Files.createSymbolicLink(models.resolve(s + JAVA_SUFFIX), models.resolve(s));
                c.modelBackends.put(s + JAVA_SUFFIX, "java");
            }
        }
    }

    static Stream<Arguments> cases() throws Exception {
        return TextToImageTest.cases();
    }

    /** Case k of the fixture {@code model}, on the model it is served by plus {@code suffix}. */
    private static Result result(String model, String suffix, int k) throws Exception {
        GenerateRequest r = TextToImageTest.request(model, k);
        return TextToImageTest.result(server.client(), r.toBuilder().setModel(r.getModel() + suffix).build());
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
        double err = TextToImageTest.sampleError(model, k, onnx);
        assertThat(err).as("%s case %d onnx sample vs the reference pipeline", model, k).isLessThan(1e-4);
        BufferedImage a = TextToImageTest.image(onnx);
        BufferedImage b = TextToImageTest.image(java);
        var ref = TextToImageTest.agreement(model, k, a);
        System.out.printf("text-to-image onnx %s case %d (%s, %dx%d): vs the reference image %.3f %% of %d "
                + "values within one level, max difference %d%n", model, k, TextToImageTest.served(model, k),
                a.getWidth(), a.getHeight(), 100 * ref.withinOne(), ref.values(), ref.maxDiff());
        assertThat(ref.withinOne()).as("%s case %d onnx: values within one 8-bit level of the reference", model, k)
                .isGreaterThanOrEqualTo(0.999);
        var vsJava = TextToImageTest.ImageAgreement.of(a, b);
        System.out.printf("onnx text-to-image %s case %d: sample error %.2e (relative) vs the reference; vs java "
                + "%d of %d values differ, by at most %d%n", model, k, err, vsJava.differing(), vsJava.values(),
                vsJava.maxDiff());
        assertThat(vsJava.maxDiff()).as("%s case %d: onnx vs java, 8-bit levels", model, k).isLessThanOrEqualTo(1);
    }
}
