package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.Tensor;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.PreviewDecoder;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.image.ImageCodec;
import io.ditserve.server.model.BackendRegistry;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A latent model with decoders, served for real: the latent-tiny fixture DiT with the small AutoencoderKL fixture
 * in its {@code vae/} folder (f = 2) and the small TAESD fixture (f = 8) shared from a folder beside the models
 * (named by a relative path in config.json). Results are decoded images, tensors stay latents, previews come from
 * the decoder the request asks for, and the decoded floats are exactly what the decoder gives for the latent.
 */
class LatentDecodingTest {
    @TempDir
    Path root;
    private TestServers.Running running;
    private DitServer server;
    private ManagedChannel channel;
    private DitClient client;

    static void copyFolder(Path from, Path to) throws Exception {
        Files.createDirectories(to);
        try (var files = Files.list(from)) {
            for (Path f : files.toList()) {
                if (!f.getFileName().toString().equals("cases.safetensors")) {
                    Files.copy(f, to.resolve(f.getFileName()));
                }
            }
        }
    }

    @BeforeEach
    void start() throws Exception {
        Path models = root.resolve("models");
        Path lat = models.resolve("lat");
        copyFolder(TestPaths.fixture("latent-tiny"), lat);
        copyFolder(TestPaths.fixture("vae-small"), lat.resolve("vae"));
        copyFolder(TestPaths.fixture("taesd-small"), models.resolve("shared-taesd"));
        String config = Files.readString(lat.resolve("config.json"));
        Files.writeString(lat.resolve("config.json"),
                config.replaceFirst("\\{", "{\n  \"taesd\": \"../shared-taesd\","));
        ServerConfig c = TestServers.config();
        c.models = models.toString();
        c.metricsPort = -1;
        running = TestServers.inProcess(c);
        server = running.server();
        channel = running.channel();
        client = running.client();
    }

    @AfterEach
    void stop() {
        running.close();
    }

    private List<GenerateEvent> collect(GenerateRequest r) {
        List<GenerateEvent> out = new ArrayList<>();
        try (DitClient.EventStream s = client.generate(r)) {
            s.forEachRemaining(out::add);
        }
        return out;
    }

    private static GenerateRequest.Builder request() {
        return GenerateRequest.newBuilder().setModel("lat").setClassId(2).setNumImages(2).setSeed(5).setSteps(4);
    }

    private static float[] floats(FloatTensor t) {
        float[] f = new float[t.getData().size() / 4];
        t.getData().asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(f);
        return f;
    }

    private static BufferedImage image(com.google.protobuf.ByteString png) throws Exception {
        return ImageIO.read(new ByteArrayInputStream(png.toByteArray()));
    }

    @Test
    void getModelReportsTheDecodersAndTheDecoderFolderIsNoModel() {
        var stub = DiffusionServiceGrpc.newBlockingStub(channel);
        ModelInfo m = stub.getModel(GetModelRequest.newBuilder().setName("lat").build());
        assertThat(m.getImageSize()).isEqualTo(16);
        assertThat(m.getOutputImageSize()).isEqualTo(32);
        assertThat(m.getDecodersList()).extracting(d -> d.getRole() + ":" + d.getClassName() + ":" + d.getScaleFactor())
                .containsExactly("vae:AutoencoderKL:2", "taesd:AutoencoderTiny:8");
        assertThat(m.getDecoders(0).getParameters()).isPositive();
        assertThatThrownBy(() -> stub.getModel(GetModelRequest.newBuilder().setName("shared-taesd").build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class,
                        e -> assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.NOT_FOUND));
    }

    @Test
    void resultsAreDecodedImagesOfTheReturnedLatentsAndPreviewsComeFromTaesd() throws Exception {
        List<GenerateEvent> ev = collect(request().setPreviewInterval(2).addOutputFormats(OutputFormat.OUTPUT_FORMAT_PNG)
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR)
                .addOutputFormats(OutputFormat.OUTPUT_FORMAT_IMAGE_TENSOR).build());
        List<GenerateEvent> previews = ev.stream().filter(GenerateEvent::hasPreview).toList();
        assertThat(previews).isNotEmpty();
        for (GenerateEvent p : previews) {
            assertThat(p.getPreview().getDecoder()).isEqualTo(PreviewDecoder.PREVIEW_DECODER_TINY);
            assertThat(image(p.getPreview().getPng()).getWidth()).isEqualTo(128);
        }
        List<GenerateEvent> results = ev.stream().filter(GenerateEvent::hasResult).toList();
        assertThat(results).hasSize(2);
        try (Decoder vae = new BackendRegistry().get("java").createDecoder(
                DecoderConfigs.load(root.resolve("models/lat/vae")), BackendOptions.ofThreads(2))) {
            for (GenerateEvent e : results) {
                var r = e.getResult();
                assertThat(r.getTensor().getShapeList()).containsExactly(4, 16, 16);
                assertThat(r.getImageTensor().getShapeList()).containsExactly(3, 32, 32);
                Tensor want = Tensor.zeros(1, 3, 32, 32);
                vae.decode(new Tensor(floats(r.getTensor()), 1, 4, 16, 16), want, () -> false);
                float[] got = floats(r.getImageTensor());
                assertThat(got).as("the served image is the decoder's image of the served latent")
                        .containsExactly(want.data());
                BufferedImage png = image(r.getPng());
                assertThat(png.getWidth()).isEqualTo(32);
                assertThat(png.getType()).isNotEqualTo(BufferedImage.TYPE_BYTE_GRAY);
                for (int p = 0; p < 32 * 32; p++) {
                    int rgb = png.getRGB(p % 32, p / 32);
                    assertThat((rgb >> 16) & 255).isEqualTo(ImageCodec.toByte(got[p]));
                    assertThat((rgb >> 8) & 255).isEqualTo(ImageCodec.toByte(got[1024 + p]));
                    assertThat(rgb & 255).isEqualTo(ImageCodec.toByte(got[2048 + p]));
                }
                assertThat(r.getTimings().getDecodeSeconds()).isPositive();
            }
        }
    }

    @Test
    void previewDecoderChoicesAndTheirLimits() throws Exception {
        GenerateEvent full = collect(request().setPreviewInterval(4)
                .setPreviewDecoder(PreviewDecoder.PREVIEW_DECODER_FULL).build()).stream()
                .filter(GenerateEvent::hasPreview).findFirst().orElseThrow();
        assertThat(image(full.getPreview().getPng()).getWidth()).isEqualTo(32);
        GenerateEvent linear = collect(request().setPreviewInterval(4)
                .setPreviewDecoder(PreviewDecoder.PREVIEW_DECODER_LINEAR).build()).stream()
                .filter(GenerateEvent::hasPreview).findFirst().orElseThrow();
        assertThat(image(linear.getPreview().getPng()).getWidth()).isEqualTo(16);
        // the plain latent-tiny fixture beside it has no decoders
        assertThatThrownBy(() -> collect(GenerateRequest.newBuilder().setModel("lat").setClassId(1).setSteps(2)
                .setPreviewDecoderValue(9).build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription()).contains("preview_decoder", "PREVIEW_DECODER_TINY");
                });
    }
}
