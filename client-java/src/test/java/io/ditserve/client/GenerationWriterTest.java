package io.ditserve.client;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import io.ditserve.proto.v1.Accepted;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.Preview;
import io.ditserve.proto.v1.PreviewDecoder;
import io.ditserve.proto.v1.Progress;
import io.ditserve.proto.v1.Result;
import io.ditserve.proto.v1.Timings;
import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import javax.imageio.ImageReader;
import javax.imageio.stream.ImageInputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** GenerationWriter on events built as protos, as the server sends them (no gRPC involved). */
class GenerationWriterTest {
    @TempDir
    Path dir;

    final ByteArrayOutputStream console = new ByteArrayOutputStream();

    static byte[] png(int w, int h, int rgb) throws IOException {
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                img.setRGB(x, y, rgb + x);
            }
        }
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        ImageIO.write(img, "png", b);
        return b.toByteArray();
    }

    static FloatTensor tensor(int... shape) {
        int n = 1;
        for (int d : shape) {
            n *= d;
        }
        ByteBuffer bb = ByteBuffer.allocate(n * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            bb.putFloat(i * 0.25f - 1f);
        }
        FloatTensor.Builder t = FloatTensor.newBuilder().setData(ByteString.copyFrom(bb.array()));
        for (int d : shape) {
            t.addShape(d);
        }
        return t.build();
    }

    static GenerateEvent accepted(long... seeds) {
        Accepted.Builder a = Accepted.newBuilder().setRequestId("r1").setModel("latent-e2e").setBackend("onnx")
                .setSteps(4);
        for (long s : seeds) {
            a.addSeeds(s);
        }
        return GenerateEvent.newBuilder().setAccepted(a).build();
    }

    static GenerateEvent progress(int step, int total) {
        return GenerateEvent.newBuilder().setProgress(Progress.newBuilder().setStep(step).setTotalSteps(total)
                .setElapsedSeconds(step * 0.5)).build();
    }

    static GenerateEvent preview(int index, int step, byte[] png, PreviewDecoder decoder) {
        return GenerateEvent.newBuilder().setPreview(Preview.newBuilder().setImageIndex(index).setStep(step)
                .setPng(ByteString.copyFrom(png)).setDecoder(decoder)).build();
    }

    static Result.Builder result(int index, long seed, double decodeSeconds) {
        return Result.newBuilder().setImageIndex(index).setSeed(seed)
                .setTimings(Timings.newBuilder().setSamplingSeconds(2).setDecodeSeconds(decodeSeconds));
    }

    static GenerateEvent event(Result.Builder r) {
        return GenerateEvent.newBuilder().setResult(r).build();
    }

    GenerationWriter.Written write(boolean tty, List<GenerateEvent> events) throws IOException {
        GenerationWriter w = new GenerationWriter(new PrintStream(console, true, StandardCharsets.UTF_8), 4, tty);
        GenerateRequest request = GenerateRequest.newBuilder().setModel("latent-e2e").setClassId(1).build();
        return w.write(events.iterator(), request, ClientCommandsTest.LATENT, dir);
    }

    static int[] gifFramesAndSize(Path gif) throws IOException {
        ImageReader reader = ImageIO.getImageReadersByFormatName("gif").next();
        try (ImageInputStream in = ImageIO.createImageInputStream(gif.toFile())) {
            reader.setInput(in);
            int n = reader.getNumImages(true);
            int w = reader.getWidth(0);
            int h = reader.getHeight(0);
            for (int i = 1; i < n; i++) {
                assertThat(reader.getWidth(i)).isEqualTo(w);
                assertThat(reader.getHeight(i)).isEqualTo(h);
            }
            return new int[] {n, w, h};
        } finally {
            reader.dispose();
        }
    }

    @Test
    void writesPngsTensorsPreviewFramesAndGifs() throws IOException {
        byte[] final0 = png(64, 64, 0x102030);
        byte[] final1 = png(64, 64, 0x405060);
        List<GenerateEvent> events = new ArrayList<>(List.of(accepted(7, 8)));
        for (int step = 1; step <= 4; step++) {
            events.add(progress(step, 4));
            if (step % 2 == 0) {
                events.add(preview(0, step, png(64, 64, step), PreviewDecoder.PREVIEW_DECODER_TINY));
                events.add(preview(1, step, png(64, 64, step + 1), PreviewDecoder.PREVIEW_DECODER_TINY));
            }
        }
        events.add(event(result(0, 7, 0.75).setPng(ByteString.copyFrom(final0)).setTensor(tensor(4, 8, 8))
                .setImageTensor(tensor(3, 64, 64))));
        events.add(event(result(1, 8, 0.75).setPng(ByteString.copyFrom(final1)).setTensor(tensor(4, 8, 8))
                .setImageTensor(tensor(3, 64, 64))));

        GenerationWriter.Written w = write(false, events);

        assertThat(w.seeds()).containsExactly(7L, 8L);
        assertThat(w.images()).containsExactly(dir.resolve("latent-e2e-c1-7.png"), dir.resolve("latent-e2e-c1-8.png"));
        assertThat(Files.readAllBytes(w.images().get(0))).isEqualTo(final0);
        assertThat(Files.readAllBytes(w.images().get(1))).isEqualTo(final1);
        assertThat(w.tensors()).containsExactly(dir.resolve("latent-e2e-c1-7.tensor.4x8x8.f32"),
                dir.resolve("latent-e2e-c1-7.image.3x64x64.f32"), dir.resolve("latent-e2e-c1-8.tensor.4x8x8.f32"),
                dir.resolve("latent-e2e-c1-8.image.3x64x64.f32"));
        assertThat(Files.readAllBytes(w.tensors().get(0))).isEqualTo(tensor(4, 8, 8).getData().toByteArray());
        assertThat(Files.readAllBytes(w.tensors().get(1))).isEqualTo(tensor(3, 64, 64).getData().toByteArray());
        // raw little-endian float32, row-major
        ByteBuffer latent = ByteBuffer.wrap(Files.readAllBytes(w.tensors().get(0))).order(ByteOrder.LITTLE_ENDIAN);
        assertThat(latent.getFloat(4 * 5)).isEqualTo(5 * 0.25f - 1f);

        assertThat(w.previewFrames()).isEqualTo(4);
        assertThat(w.previewDecoder()).isEqualTo(PreviewDecoder.PREVIEW_DECODER_TINY);
        for (String f : List.of("latent-e2e-c1-7-step0002.png", "latent-e2e-c1-7-step0004.png",
                "latent-e2e-c1-8-step0002.png", "latent-e2e-c1-8-step0004.png")) {
            assertThat(ImageIO.read(dir.resolve(f).toFile()).getWidth()).as(f).isEqualTo(64);
        }
        assertThat(w.animations()).containsExactly(dir.resolve("latent-e2e-c1-7.gif"), dir.resolve("latent-e2e-c1-8.gif"));
        // two previews and the result, scaled ×4 (up to 256 px)
        assertThat(gifFramesAndSize(w.animations().get(0))).containsExactly(3, 256, 256);

        assertThat(w.decodeSeconds()).isEqualTo(0.75);
        String log = console.toString(StandardCharsets.UTF_8);
        assertThat(log).contains("request r1 on latent-e2e/onnx: 2 image(s), 4 steps", "seeds [7, 8]",
                "step 4/4 2.0s\n", "step 4/4 2.0s, decode 0.75s\n");
        assertThat(log.split("decode", -1)).hasSize(2); // shown once per generation
    }

    @Test
    void latentSizedLinearPreviewsAreScaledToTheImageInTheGif() throws IOException {
        GenerationWriter.Written w = write(false, List.of(accepted(3), progress(1, 2),
                preview(0, 1, png(8, 8, 1), PreviewDecoder.PREVIEW_DECODER_LINEAR), progress(2, 2),
                preview(0, 2, png(8, 8, 2), PreviewDecoder.PREVIEW_DECODER_LINEAR),
                event(result(0, 3, 0.5).setPng(ByteString.copyFrom(png(64, 64, 3))))));
        assertThat(w.previewDecoder()).isEqualTo(PreviewDecoder.PREVIEW_DECODER_LINEAR);
        assertThat(ImageIO.read(dir.resolve("latent-e2e-c1-3-step0001.png").toFile()).getWidth()).isEqualTo(8);
        assertThat(gifFramesAndSize(w.animations().get(0))).containsExactly(3, 256, 256);
    }

    @Test
    void tensorOnlyResultsWithPreviewsStillGetAGif() throws IOException {
        GenerationWriter.Written w = write(false, List.of(accepted(5), progress(1, 1),
                preview(0, 1, png(28, 28, 9), PreviewDecoder.PREVIEW_DECODER_LINEAR),
                event(result(0, 5, 0).setTensor(tensor(1, 28, 28)))));
        assertThat(w.images()).isEmpty();
        assertThat(w.tensors()).containsExactly(dir.resolve("latent-e2e-c1-5.tensor.1x28x28.f32"));
        assertThat(gifFramesAndSize(w.animations().get(0))).containsExactly(1, 112, 112);
        assertThat(w.decodeSeconds()).isZero();
        assertThat(console.toString(StandardCharsets.UTF_8)).doesNotContain("decode");
    }

    @Test
    void terminalProgressIsOneRedrawnLineEndingWithTheDecodeTime() throws IOException {
        write(true, List.of(accepted(1), progress(1, 2), progress(2, 2),
                event(result(0, 1, 1.5).setPng(ByteString.copyFrom(png(16, 16, 0))))));
        String log = console.toString(StandardCharsets.UTF_8);
        String last = log.substring(log.lastIndexOf('\r') + 1);
        assertThat(last).isEqualTo("[" + "#".repeat(30) + "] 2/2 steps 1.0s, decode 1.50s\n");
    }

    @Test
    void aTensorWhoseBytesDoNotMatchItsShapeIsRefused() {
        FloatTensor bad = tensor(4, 8, 8).toBuilder().clearShape().addShape(4).addShape(8).addShape(9).build();
        assertThatThrownBy(() -> write(false, List.of(accepted(1), event(result(0, 1, 0).setTensor(bad)))))
                .isInstanceOf(IOException.class).hasMessageContaining("1024 bytes for a float32 tensor of shape [4, 8, 9]");
    }

    @Test
    void tensorFileNamesCarryTheShape() {
        assertThat(GenerationWriter.tensorFileName("m-x-1.tensor", List.of(4, 32, 32))).isEqualTo("m-x-1.tensor.4x32x32.f32");
    }
}
