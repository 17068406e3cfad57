package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.ByteString;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.Accepted;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.Result;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import javax.imageio.ImageIO;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Text-to-image end to end through the real server (issue 24): random-weight pipeline folders in SD3's and SD3.5's
 * released layouts (tools/pipeline-fixtures, made by tools/make_sd3_fixtures.py with the PyTorch reference pipeline
 * tools/sd3/pipeline.py) give, for a prompt, a negative prompt and the reference's initial noise, the reference's
 * sample within 1e-4 and its 8-bit image within one level on ≥ 99.9 % of the values; guided and unguided, a prompt
 * cut by the tokenizer. The latent folders ({@code -full}: T5 text_encoder_3 with tokenizer_3 and a 16-channel
 * AutoencoderKL in SD3's configuration) are served as they are and once more without T5 ({@link #withoutT5}: the
 * folder's model_index.json leaves text_encoder_3/tokenizer_3 out, as diffusers' {@code text_encoder_3=None}); there
 * the sample is the latent and the image the VAE's decode. The prompt cache is hit by a repeated prompt (metric),
 * requests with different prompts share passes and give the same bytes alone and batched, and the API refuses what
 * does not fit.
 */
class TextToImageTest {
    /** The fixture pipelines; the -full ones have T5 and a VAE. */
    static final List<String> FIXTURES = List.of("sd3-tiny", "sd35-tiny", "sd3-tiny-full", "sd35-tiny-full");
    /** Suffix of the served copy of a -full folder without text_encoder_3 and tokenizer_3. */
    static final String NO_T5 = "-no-t5";

    @RegisterExtension
    static final PipelineServer server = new PipelineServer(FIXTURES, (c, models) -> c.maxBatch = 64);

    static Path fixture(String name) {
        return TestPaths.repoRoot().resolve("tools/pipeline-fixtures").resolve(name);
    }

    /**
     * The pipeline at {@code src} as a folder {@code dst} without its T5: every component linked except
     * text_encoder_3 and tokenizer_3, which model_index.json sets to [null, null] (how diffusers writes an absent
     * component); ditserve.json copied, so max_sequence_length zero rows stand in for T5's part of the context.
     */
    static void withoutT5(Path src, Path dst) throws Exception {
        Files.createDirectories(dst);
        ObjectMapper json = new ObjectMapper();
        var index = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(src.resolve("model_index.json")
                .toFile());
        for (String comp : List.of("text_encoder_3", "tokenizer_3")) {
            index.set(comp, json.createArrayNode().addNull().addNull());
        }
        Files.writeString(dst.resolve("model_index.json"), json.writeValueAsString(index));
        Files.copy(src.resolve("ditserve.json"), dst.resolve("ditserve.json"));
        for (String comp : List.of("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2",
                "transformer", "vae")) {
            Files.createSymbolicLink(dst.resolve(comp), src.resolve(comp));
        }
    }

    /** The model a case is served by: the fixture, or its copy without T5 for a case with {@code "t5": false}. */
    static String served(String model, int k) throws Exception {
        try (Safetensors st = Safetensors.open(fixture(model).resolve("cases.safetensors"))) {
            JsonNode c = new ObjectMapper().readTree(st.metadata().get("cases")).get(k);
            return c.path("t5").asBoolean(true) ? model : model + NO_T5;
        }
    }

    /**
     * How an image's 8-bit values agree with a reference's: the share within one level, the largest difference, how
     * many values were compared and how many differ at all.
     */
    record ImageAgreement(double withinOne, int maxDiff, int values, int differing) {
        /** Against a reference image [H, W, 3] of 8-bit values as floats. */
        static ImageAgreement of(BufferedImage img, float[] ref) {
            int close = 0;
            int worst = 0;
            int differing = 0;
            int h = img.getHeight();
            int w = img.getWidth();
            assertThat(ref.length).as("reference image size").isEqualTo(h * w * 3);
            for (int y = 0; y < h; y++) {
                for (int x = 0; x < w; x++) {
                    int rgb = img.getRGB(x, y);
                    int[] c = {(rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255};
                    for (int ch = 0; ch < 3; ch++) {
                        int d = Math.abs(c[ch] - Math.round(ref[(y * w + x) * 3 + ch]));
                        close += d <= 1 ? 1 : 0;
                        differing += d > 0 ? 1 : 0;
                        worst = Math.max(worst, d);
                    }
                }
            }
            return new ImageAgreement(close / (double) (h * w * 3), worst, h * w * 3, differing);
        }

        /** Against another image of the same size. */
        static ImageAgreement of(BufferedImage img, BufferedImage ref) {
            assertThat(ref.getWidth()).as("width").isEqualTo(img.getWidth());
            assertThat(ref.getHeight()).as("height").isEqualTo(img.getHeight());
            float[] values = new float[ref.getHeight() * ref.getWidth() * 3];
            for (int y = 0, i = 0; y < ref.getHeight(); y++) {
                for (int x = 0; x < ref.getWidth(); x++, i += 3) {
                    int rgb = ref.getRGB(x, y);
                    values[i] = (rgb >> 16) & 255;
                    values[i + 1] = (rgb >> 8) & 255;
                    values[i + 2] = rgb & 255;
                }
            }
            return of(img, values);
        }
    }

    static Stream<Arguments> cases() throws Exception {
        List<Arguments> out = new ArrayList<>();
        for (String m : FIXTURES) {
            try (Safetensors st = Safetensors.open(fixture(m).resolve("cases.safetensors"))) {
                JsonNode cases = new ObjectMapper().readTree(st.metadata().get("cases"));
                for (int k = 0; k < cases.size(); k++) {
                    out.add(Arguments.of(m, k));
                }
            }
        }
        return out.stream();
    }

    static FloatTensor floatTensor(Tensor t) {
        ByteBuffer bb = ByteBuffer.allocate(t.size() * 4).order(ByteOrder.LITTLE_ENDIAN);
        bb.asFloatBuffer().put(t.data());
        FloatTensor.Builder b = FloatTensor.newBuilder().setData(ByteString.copyFrom(bb.array()));
        for (int d : t.shape()) {
            b.addShape(d);
        }
        return b.build();
    }

    static float[] floats(ByteString data) {
        float[] f = new float[data.size() / 4];
        data.asReadOnlyByteBuffer().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(f);
        return f;
    }

    static List<GenerateEvent> run(GenerateRequest r) {
        return run(server.client(), r);
    }

    /** Every event of one generation, to its end. */
    static List<GenerateEvent> run(DitClient client, GenerateRequest r) {
        List<GenerateEvent> events = new ArrayList<>();
        try (DitClient.EventStream s = client.generate(r)) {
            s.forEachRemaining(events::add);
        }
        return events;
    }

    /** The result of one generation. */
    static Result result(DitClient client, GenerateRequest r) {
        return run(client, r).stream().filter(GenerateEvent::hasResult).findFirst().orElseThrow().getResult();
    }

    /**
     * max |error| / max |reference| of a result's sample (its tensor) against the reference pipeline's sample of
     * case {@code k} of the fixture {@code model}.
     */
    static double sampleError(String model, int k, Result r) throws Exception {
        try (Safetensors st = Safetensors.open(fixture(model).resolve("cases.safetensors"))) {
            return Fixtures.relativeError(floats(r.getTensor().getData()), st.tensor("case." + k + ".sample").data());
        }
    }

    /** A result's PNG, decoded. */
    static BufferedImage image(Result r) throws Exception {
        return ImageIO.read(new ByteArrayInputStream(r.getPng().toByteArray()));
    }

    /** How an image agrees with the reference pipeline's 8-bit image [H, W, 3] of case {@code k} of {@code model}. */
    static ImageAgreement agreement(String model, int k, BufferedImage img) throws Exception {
        try (Safetensors st = Safetensors.open(fixture(model).resolve("cases.safetensors"))) {
            return ImageAgreement.of(img, st.tensor("case." + k + ".image").data());
        }
    }

    static GenerateRequest request(String model, int k) throws Exception {
        try (Safetensors st = Safetensors.open(fixture(model).resolve("cases.safetensors"))) {
            JsonNode c = new ObjectMapper().readTree(st.metadata().get("cases")).get(k);
            GenerateRequest.Builder b = GenerateRequest.newBuilder().setModel(served(model, k))
                    .setPrompt(c.get("prompt").asText())
                    .setSteps(c.get("steps").asInt()).setGuidanceScale((float) c.get("guidance").asDouble())
                    .setInitialNoise(floatTensor(st.tensor("case." + k + ".noise")))
                    .addOutputFormats(OutputFormat.OUTPUT_FORMAT_TENSOR).addOutputFormats(OutputFormat.OUTPUT_FORMAT_PNG);
            if (!c.get("negative").asText().isEmpty()) {
                b.setNegativePrompt(c.get("negative").asText());
            }
            return b.build();
        }
    }

    @ParameterizedTest(name = "{0} case {1}")
    @MethodSource("cases")
    void aPromptGivesTheReferencePipelinesImage(String model, int k) throws Exception {
        Result r = result(server.client(), request(model, k));
        double err = sampleError(model, k, r);
        assertThat(err).as("%s case %d sample vs the reference pipeline", model, k).isLessThan(1e-4);
        BufferedImage img = image(r);
        ImageAgreement a = agreement(model, k, img);
        System.out.printf("text-to-image java %s case %d (%s, %dx%d): sample error %.2e (relative), %.3f %% of %d "
                + "values within one level, max difference %d%n", model, k, served(model, k), img.getWidth(),
                img.getHeight(), err, 100 * a.withinOne(), a.values(), a.maxDiff());
        assertThat(a.withinOne()).as("%s case %d: values within one 8-bit level", model, k)
                .isGreaterThanOrEqualTo(0.999);
    }

    @Test
    void theModelSaysItTakesTextAndAcceptedReportsTheTokens() throws Exception {
        ModelInfo info = server.client().getModel("sd3-tiny");
        assertThat(info.getConditioning()).isEqualTo("text");
        assertThat(info.getFamily()).isEqualTo("sd3");
        assertThat(info.getTextEncodersList()).extracting(e -> e.getRole())
                .containsExactly("text_encoder", "text_encoder_2");
        assertThat(info.getTextEncoders(0).getMaxTokens()).isEqualTo(16);
        Accepted a = run(request("sd3-tiny", 2)).getFirst().getAccepted(); // the long prompt
        assertThat(a.getPromptTokensList()).anySatisfy(t -> {
            assertThat(t.getNegative()).isFalse();
            assertThat(t.getTruncated()).isTrue();
            assertThat(t.getTokens()).isEqualTo(16);
        });
        assertThat(a.getPromptTokensList()).filteredOn(t -> t.getNegative()).allSatisfy(t ->
                assertThat(t.getTruncated()).isFalse());

        ModelInfo full = server.client().getModel("sd3-tiny-full");
        assertThat(full.getTextEncodersList()).extracting(e -> e.getRole() + " " + e.getClassName() + " "
                + e.getMaxTokens()).containsExactly("text_encoder CLIPTextModelWithProjection 16",
                "text_encoder_2 CLIPTextModelWithProjection 16", "text_encoder_3 T5EncoderModel 12");
        assertThat(server.client().getModel("sd3-tiny-full" + NO_T5).getTextEncodersList())
                .extracting(e -> e.getRole()).containsExactly("text_encoder", "text_encoder_2");
        Accepted cut = run(request("sd3-tiny-full", 3)).getFirst().getAccepted(); // the long prompt, with T5
        assertThat(cut.getPromptTokensList())
                .filteredOn(t -> t.getEncoder().equals("text_encoder_3") && !t.getNegative()).singleElement().satisfies(t -> {
                    assertThat(t.getTruncated()).isTrue();
                    assertThat(t.getTokens()).isEqualTo(12);
                    assertThat(t.getLimit()).isEqualTo(12);
                });
    }

    @Test
    void aClassLabelForATextModelIsRefusedNamingWhatItTakes() {
        assertThatThrownBy(() -> run(GenerateRequest.newBuilder().setModel("sd3-tiny").setClassId(1).build()))
                .isInstanceOfSatisfying(StatusRuntimeException.class, e -> {
                    assertThat(e.getStatus().getCode()).isEqualTo(Status.Code.INVALID_ARGUMENT);
                    assertThat(e.getStatus().getDescription()).startsWith("class_id")
                            .contains("takes a prompt");
                });
        assertThatThrownBy(() -> run(GenerateRequest.newBuilder().setModel("sd3-tiny").setPrompt("x".repeat(10_001))
                .build())).isInstanceOfSatisfying(StatusRuntimeException.class, e ->
                        assertThat(e.getStatus().getDescription()).startsWith("prompt: 10001 characters"));
    }

    @Test
    void aRepeatedPromptHitsTheCacheAndDifferentPromptsGiveTheSameBytesAloneAndBatched() throws Exception {
        GenerateRequest target = request("sd35-tiny", 0).toBuilder().setPrompt("a green ball above a white box")
                .build();
        double hitsBefore = cacheLookups("hit");
        double[] start = server.server().metrics().passesAndSamples("java", "sd35-tiny");
        byte[] alone = result(server.client(), target).getTensor().getData().toByteArray();
        double alonePasses = server.server().metrics().passesAndSamples("java", "sd35-tiny")[0] - start[0];
        // the same request among others with other prompts and more steps, each seen running before the target is
        // sent, so that the target's passes are theirs too (max_batch 64 holds them all)
        CountDownLatch running = new CountDownLatch(3);
        List<CompletableFuture<Void>> others = new ArrayList<>();
        for (int i = 0; i < 3; i++) {
            GenerateRequest other = target.toBuilder().setPrompt("a yellow pyramid number " + i)
                    .setSteps(4 * target.getSteps()).build();
            others.add(CompletableFuture.runAsync(() -> {
                boolean seen = false;
                try (DitClient.EventStream s = server.client().generate(other)) {
                    while (s.hasNext()) {
                        if (s.next().hasProgress() && !seen) {
                            seen = true;
                            running.countDown();
                        }
                    }
                }
            }));
        }
        assertThat(running.await(120, TimeUnit.SECONDS)).as("the other prompts' generations started").isTrue();
        double[] before = server.server().metrics().passesAndSamples("java", "sd35-tiny");
        byte[] batched = result(server.client(), target).getTensor().getData().toByteArray();
        double[] after = server.server().metrics().passesAndSamples("java", "sd35-tiny");
        assertThat(others.stream().filter(f -> !f.isDone()).count()).as("others still running at the target's end")
                .isPositive();
        assertThat(after[0] - before[0]).as("passes while the target ran among others (%s alone): shared", alonePasses)
                .isLessThan(2 * alonePasses);
        assertThat(batched).as("same bytes alone and among other prompts").isEqualTo(alone);
        for (CompletableFuture<Void> o : others) {
            o.get(120, TimeUnit.SECONDS);
        }
        assertThat(cacheLookups("hit") - hitsBefore).as("the repeated prompt and negative prompt hit the cache")
                .isGreaterThanOrEqualTo(2);
    }

    private static double cacheLookups(String result) {
        return server.server().metrics().promptCacheLookups(result.equals("hit"));
    }
}
