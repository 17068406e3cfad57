package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Safetensors;
import io.ditserve.backend.cuda.EmulatedCudaProvider;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.Result;
import io.ditserve.server.config.ServerConfig;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
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
 * Text-to-image through the real server on the cuda backend's CPU emulation ({@link EmulatedCudaProvider}: the cuda
 * host code for the MMDiT, the CLIP and T5 encoders and the VAE, with the kernels' Java mirror in place of a GPU):
 * the pixel-space SD3 fixture pipeline sd3-tiny and the latent SD3.5 one sd35-tiny-full (RMS qk-norm, dual
 * attention, T5, AutoencoderKL; also served without its T5, {@link TextToImageTest#withoutT5}). Every case of the
 * reference pipeline gives the reference's sample within 1e-4 (relative) and its 8-bit image within one level on
 * ≥ 99.9 % of the values, as on the java and onnx backends ({@link TextToImageTest}, {@link OnnxTextToImageTest}).
 */
class CudaTextToImageTest {
    /** The fixture pipelines served here. */
    private static final List<String> FIXTURES = List.of("sd3-tiny", "sd35-tiny-full");

    @TempDir
    static Path models;
    private static TestServers.Running server;

    @BeforeAll
    static void start() throws Exception {
        for (String m : FIXTURES) {
            Files.createSymbolicLink(models.resolve(m), TextToImageTest.fixture(m));
            if (m.endsWith("-full")) {
                TextToImageTest.withoutT5(TextToImageTest.fixture(m), models.resolve(m + TextToImageTest.NO_T5));
            }
        }
        ServerConfig c = TestServers.config();
        c.backend = EmulatedCudaProvider.NAME;
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
        List<Arguments> out = new ArrayList<>();
        TextToImageTest.cases().filter(a -> FIXTURES.contains((String) a.get()[0])).forEach(out::add);
        return out.stream();
    }

    /** Loaded through the emulated provider, the models run on the cuda backend's own classes, which say "cuda". */
    @Test
    void thePipelinesAreServedOnTheCudaBackend() throws Exception {
        for (String m : List.of("sd3-tiny", "sd35-tiny-full", "sd35-tiny-full" + TextToImageTest.NO_T5)) {
            assertThat(server.client().getModel(m).getBackend()).as(m).isEqualTo("cuda");
            assertThat(server.client().getModel(m).getConditioning()).isEqualTo("text");
        }
    }

    @ParameterizedTest(name = "{0} case {1}")
    @MethodSource("cases")
    void aPromptGivesTheReferencePipelinesSampleAndImage(String model, int k) throws Exception {
        GenerateRequest r = TextToImageTest.request(model, k);
        List<GenerateEvent> events = new ArrayList<>();
        try (var s = server.client().generate(r)) {
            s.forEachRemaining(events::add);
        }
        Result result = events.stream().filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult();
        try (Safetensors st = Safetensors.open(TextToImageTest.fixture(model).resolve("cases.safetensors"))) {
            float[] want = st.tensor("case." + k + ".sample").data();
            float[] got = TextToImageTest.floats(result.getTensor().getData());
            assertThat(got).hasSameSizeAs(want);
            double maxAbs = 0;
            double maxErr = 0;
            for (int i = 0; i < want.length; i++) {
                maxAbs = Math.max(maxAbs, Math.abs(want[i]));
                maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
            }
            BufferedImage img = ImageIO.read(new ByteArrayInputStream(result.getPng().toByteArray()));
            var a = TextToImageTest.ImageAgreement.of(img, st.tensor("case." + k + ".image").data());
            System.out.printf("text-to-image cuda (emulated) %s case %d (%s): sample error %.2e (relative), %.3f %% "
                    + "of %d values within one level, max difference %d%n", model, k, TextToImageTest.served(model, k),
                    maxErr / maxAbs, 100 * a.withinOne(), a.values(), a.maxDiff());
            assertThat(maxErr / maxAbs).as("%s case %d sample vs the reference pipeline", model, k).isLessThan(1e-4);
            assertThat(a.withinOne()).as("%s case %d: values within one 8-bit level", model, k)
                    .isGreaterThanOrEqualTo(0.999);
        }
    }
}
