package io.ditserve.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.proto.v1.ClassInfo;
import io.ditserve.proto.v1.DecoderInfo;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelDefaults;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.PreviewDecoder;
import java.util.List;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

class ClientCommandsTest {
    static final ModelInfo LATENT = ModelInfo.newBuilder().setName("latent-e2e").setSpace("latent").setImageSize(8)
            .setInChannels(4).setOutChannels(8).setBackend("onnx").setPatchSize(2).setDepth(2).setHiddenSize(64)
            .setNumHeads(4).setParameters(123_456).setOutputImageSize(64)
            .addClasses(ClassInfo.newBuilder().setId(0).setName("c0"))
            .addClasses(ClassInfo.newBuilder().setId(1).setName("c1"))
            .setDefaults(ModelDefaults.newBuilder().setSteps(4).setGuidanceScale(4))
            .addDecoders(DecoderInfo.newBuilder().setRole("vae").setClassName("AutoencoderKL").setScaleFactor(8)
                    .addAllBlockOutChannels(List.of(128, 256, 512, 512)).setParameters(49_490_199).setBackend("onnx"))
            .addDecoders(DecoderInfo.newBuilder().setRole("taesd").setClassName("AutoencoderTiny").setScaleFactor(8)
                    .addAllBlockOutChannels(List.of(64, 64, 64, 64)).setParameters(1_222_531).setBackend("onnx"))
            .build();
    static final ModelInfo PIXEL = ModelInfo.newBuilder().setName("fashion-dit").setSpace("pixel").setImageSize(28)
            .setInChannels(1).setOutputImageSize(28).setBackend("java")
            .setDefaults(ModelDefaults.newBuilder().setSteps(50)).build();

    static GenerateRequest request(ModelInfo model, String... args) {
        ClientCommands.Generate g = new ClientCommands.Generate();
        new CommandLine(g).parseArgs(args);
        return g.buildRequest(model);
    }

    @Test
    void defaultsArePngAndTheServersPreviewDecoder() {
        GenerateRequest r = request(LATENT);
        assertThat(r.getOutputFormatsList()).containsExactly(OutputFormat.OUTPUT_FORMAT_PNG);
        assertThat(r.getPreviewDecoder()).isEqualTo(PreviewDecoder.PREVIEW_DECODER_UNSPECIFIED);
        assertThat(r.getPreviewInterval()).isZero();
        assertThat(r.getModel()).isEqualTo("latent-e2e");
        assertThat(r.getClassId()).isZero();
    }

    @Test
    void formatsAreRepeatableAndCommaSeparatedInOrderWithoutRepeats() {
        GenerateRequest r = request(LATENT, "--format", "png,tensor", "--format", "image-tensor", "--format", "PNG");
        assertThat(r.getOutputFormatsList()).containsExactly(OutputFormat.OUTPUT_FORMAT_PNG,
                OutputFormat.OUTPUT_FORMAT_TENSOR, OutputFormat.OUTPUT_FORMAT_IMAGE_TENSOR);
        assertThat(request(LATENT, "--format", "tensor").getOutputFormatsList())
                .containsExactly(OutputFormat.OUTPUT_FORMAT_TENSOR);
        assertThat(request(LATENT, "--format=image_tensor").getOutputFormatsList())
                .containsExactly(OutputFormat.OUTPUT_FORMAT_IMAGE_TENSOR);
    }

    @Test
    void tensorFlagStillAddsTheSampleToPng() {
        assertThat(request(PIXEL, "--tensor").getOutputFormatsList())
                .containsExactly(OutputFormat.OUTPUT_FORMAT_PNG, OutputFormat.OUTPUT_FORMAT_TENSOR);
        assertThat(request(PIXEL, "--tensor", "--format", "tensor").getOutputFormatsList())
                .containsExactly(OutputFormat.OUTPUT_FORMAT_TENSOR);
    }

    @Test
    void previewDecoderIsPassedThrough() {
        assertThat(request(LATENT, "--previews", "--preview-decoder", "linear").getPreviewDecoder())
                .isEqualTo(PreviewDecoder.PREVIEW_DECODER_LINEAR);
        assertThat(request(LATENT, "--preview-decoder", "TINY").getPreviewDecoder())
                .isEqualTo(PreviewDecoder.PREVIEW_DECODER_TINY);
        GenerateRequest r = request(LATENT, "--previews", "--preview-decoder=full", "--steps", "20");
        assertThat(r.getPreviewDecoder()).isEqualTo(PreviewDecoder.PREVIEW_DECODER_FULL);
        assertThat(r.getPreviewInterval()).isEqualTo(2);
        assertThat(request(LATENT, "--previews").getPreviewInterval()).isEqualTo(1); // 4 default steps
    }

    @Test
    void badValuesAreUsageErrorsNamingTheChoices() {
        assertThatThrownBy(() -> request(LATENT, "--format", "png,jpeg"))
                .isInstanceOf(CommandLine.ParameterException.class)
                .hasMessageContaining("expected png, tensor or image-tensor, got 'jpeg'");
        assertThatThrownBy(() -> request(LATENT, "--preview-decoder", "huge"))
                .isInstanceOf(CommandLine.ParameterException.class)
                .hasMessageContaining("expected linear, tiny or full, got 'huge'");
    }

    @Test
    void otherOptionsKeepTheirMeaning() {
        GenerateRequest r = request(LATENT, "--label", "none", "--count", "3", "--seed", "9", "--sampler", "ddpm",
                "--guidance", "1", "--eta", "0.5", "--preview-interval", "2");
        assertThat(r.getUnconditional()).isTrue();
        assertThat(r.getNumImages()).isEqualTo(3);
        assertThat(r.getSeed()).isEqualTo(9);
        assertThat(r.getSampler()).isEqualTo(io.ditserve.proto.v1.Sampler.SAMPLER_DDPM);
        assertThat(r.getGuidanceScale()).isEqualTo(1f);
        assertThat(r.getEta()).isEqualTo(0.5f);
        assertThat(r.getPreviewInterval()).isEqualTo(2);
        assertThat(request(LATENT, "--label", "c1").getClassName()).isEqualTo("c1");
        assertThat(request(LATENT, "--label", "1").getClassId()).isEqualTo(1);
    }

    @Test
    void modelsShowsDecodersAndTheOutputSize() {
        assertThat(ClientCommands.describe(LATENT)).contains(
                "  output: 64x64 px (the 8x8 latent decoded by the vae)",
                "  decoder vae: AutoencoderKL, f=8, channels [128, 256, 512, 512], 49.49 M params (backend onnx)",
                "  decoder taesd: AutoencoderTiny, f=8, channels [64, 64, 64, 64], 1.22 M params (backend onnx)");
        assertThat(ClientCommands.describe(LATENT).get(0)).startsWith("latent-e2e  backend=onnx  8x8 x4 ch (latent)");
        List<String> pixel = ClientCommands.describe(PIXEL);
        assertThat(pixel).contains("  output: 28x28 px").noneMatch(l -> l.contains("decoder"));
        // a latent model without a vae, and a server that does not fill output_image_size
        ModelInfo bare = LATENT.toBuilder().clearDecoders().clearOutputImageSize().build();
        assertThat(ClientCommands.describe(bare)).contains("  output: 8x8 px (the latent itself: no vae)");
    }

    @Test
    void initialNoiseIsReadFromAFileWithItsShapeInTheName(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir)
            throws Exception {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(4 * 2 * 3 * 3).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < 18; i++) {
            b.putFloat(i * 0.5f - 3);
        }
        java.nio.file.Path one = java.nio.file.Files.write(dir.resolve("noise.2x3x3.f32"), b.array());
        GenerateRequest r = request(LATENT, "--initial-noise", one.toString());
        assertThat(r.getInitialNoise().getShapeList()).containsExactly(1, 2, 3, 3);
        assertThat(r.getInitialNoise().getData().toByteArray()).isEqualTo(b.array());
        java.nio.file.Path two = java.nio.file.Files.write(dir.resolve("n.2x1x3x3.f32"), b.array());
        assertThat(request(LATENT, "--count", "2", "--initial-noise", two.toString()).getInitialNoise().getShapeList())
                .containsExactly(2, 1, 3, 3);

        java.nio.file.Path noShape = java.nio.file.Files.write(dir.resolve("noise.f32"), b.array());
        assertThatThrownBy(() -> request(LATENT, "--initial-noise", noShape.toString()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining(".CxHxW.f32");
        java.nio.file.Path wrongSize = java.nio.file.Files.write(dir.resolve("noise.4x3x3.f32"), b.array());
        assertThatThrownBy(() -> request(LATENT, "--initial-noise", wrongSize.toString()))
                .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("72 bytes, but shape [1, 4, 3, 3] needs 144");
    }
}
