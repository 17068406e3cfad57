package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.cuda.EmulatedCudaProvider;
import io.ditserve.proto.v1.Result;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
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

    @RegisterExtension
    static final PipelineServer server = new PipelineServer(FIXTURES,
            (c, models) -> c.backend = EmulatedCudaProvider.NAME);

    static Stream<Arguments> cases() throws Exception {
        return TextToImageTest.cases().filter(a -> FIXTURES.contains((String) a.get()[0]));
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
        Result result = TextToImageTest.result(server.client(), TextToImageTest.request(model, k));
        double err = TextToImageTest.sampleError(model, k, result);
        var a = TextToImageTest.agreement(model, k, TextToImageTest.image(result));
        System.out.printf("text-to-image cuda (emulated) %s case %d (%s): sample error %.2e (relative), %.3f %% of %d "
                + "values within one level, max difference %d%n", model, k, TextToImageTest.served(model, k), err,
                100 * a.withinOne(), a.values(), a.maxDiff());
        assertThat(err).as("%s case %d sample vs the reference pipeline", model, k).isLessThan(1e-4);
        assertThat(a.withinOne()).as("%s case %d: values within one 8-bit level", model, k)
                .isGreaterThanOrEqualTo(0.999);
    }
}
