package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The text encoders on the onnx backend, their graphs built at load from the transformers folders, against the
 * PyTorch references on the java backend's fixtures (tools/text/make_encoder_fixtures.py), same tolerance 1e-4:
 * clip-tiny (quick_gelu, legacy eos_token_id 2, F32), clip-tiny-g (exact GELU, first-EOS pooling, F16 in four
 * shards) and t5-tiny (BF16, 256 tokens).
 */
class OnnxTextEncoderTest {
    private static final double TOLERANCE = 1e-4;

    private record Cases(int[][] ids, float[] hidden, float[] pooled) {}

    private static Path dir(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    private static boolean isT5(String name) {
        return name.startsWith("t5");
    }

    private static Cases cases(String name) throws Exception {
        try (Safetensors st = Safetensors.open(dir(name).resolve("cases.safetensors"))) {
            long[] flat = st.longs("ids");
            int n = (int) st.entry("ids").shape()[0];
            int t = (int) st.entry("ids").shape()[1];
            int[][] ids = new int[n][t];
            for (int i = 0; i < flat.length; i++) {
                ids[i / t][i % t] = Math.toIntExact(flat[i]);
            }
            return isT5(name) ? new Cases(ids, st.floats("last_hidden_state"), null)
                    : new Cases(ids, st.floats("hidden"), st.floats("text_embeds"));
        }
    }

    private static TextEncoderSpec spec(Path dir, boolean t5) throws BackendException {
        return t5 ? TextEncoderConfigs.load(dir, "text_encoder_3", 256) : TextEncoderConfigs.load(dir, "text_encoder", 0);
    }

    private static TextEncoder onnx(Path dir, boolean t5, int threads) throws BackendException {
        return Fixtures.provider(OnnxBackendProvider.NAME).createTextEncoder(spec(dir, t5),
                BackendOptions.ofThreads(threads));
    }

    /** max |a − b| / max |b|. */
    private static double relativeError(float[] a, float[] b) {
        assertThat(a).hasSameSizeAs(b);
        double diff = 0;
        double scale = 0;
        for (int i = 0; i < a.length; i++) {
            diff = Math.max(diff, Math.abs(a[i] - b[i]));
            scale = Math.max(scale, Math.abs(b[i]));
        }
        return diff / scale;
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({"clip-tiny, 1", "clip-tiny, 2", "clip-tiny-g, 2", "t5-tiny, 1", "t5-tiny, 2"})
    void matchesTheReference(String name, int threads) throws Exception {
        Cases c = cases(name);
        try (TextEncoder enc = onnx(dir(name), isT5(name), threads)) {
            assertThat(enc).isInstanceOf(OnnxTextEncoder.class);
            assertThat(enc.backendName()).isEqualTo("onnx");
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            assertThat(out.tokens()).isEqualTo(isT5(name) ? 256 : 77);
            assertThat(out.width()).isEqualTo(enc.spec().hiddenSize());
            double hidden = relativeError(out.hidden(), c.hidden());
            System.out.printf("onnx %s, %d threads: hidden rel. error %.2e", name, threads, hidden);
            assertThat(hidden).isLessThan(TOLERANCE);
            if (isT5(name)) {
                assertThat(out.pooled()).isNull();
                System.out.println();
            } else {
                double pooled = relativeError(out.pooled(), c.pooled());
                System.out.printf(", text_embeds %.2e%n", pooled);
                assertThat(pooled).isLessThan(TOLERANCE);
            }
        }
    }

    /** The java backend's encoders on the same ids, each prompt alone and in the batch: the same function. */
    @ParameterizedTest
    @CsvSource({"clip-tiny-g", "t5-tiny"})
    void agreesWithTheJavaBackendAloneAndBatched(String name) throws Exception {
        Cases c = cases(name);
        TextEncoderSpec spec = spec(dir(name), isT5(name));
        try (TextEncoder onnx = onnx(dir(name), isT5(name), 2);
                TextEncoder java = new JavaBackendProvider().createTextEncoder(spec, BackendOptions.ofThreads(2))) {
            TextEncoder.Output batch = onnx.encode(c.ids(), Cancellation.NEVER);
            assertThat(relativeError(batch.hidden(), java.encode(c.ids(), Cancellation.NEVER).hidden()))
                    .isLessThan(TOLERANCE);
            int h = spec.maxTokens() * spec.hiddenSize();
            for (int b = 0; b < c.ids().length; b++) {
                TextEncoder.Output alone = onnx.encode(new int[][] {c.ids()[b]}, Cancellation.NEVER);
                assertThat(relativeError(alone.hidden(), Arrays.copyOfRange(batch.hidden(), b * h, (b + 1) * h)))
                        .as("prompt %d alone vs batched", b).isLessThan(TOLERANCE);
                if (alone.pooled() != null) {
                    int p = spec.projectionDim();
                    assertThat(relativeError(alone.pooled(), Arrays.copyOfRange(batch.pooled(), b * p, (b + 1) * p)))
                            .isLessThan(TOLERANCE);
                }
            }
        }
    }

    /** 16-bit folders are read in place in their stored dtype: F16 shards (CLIP-G's layout) and BF16 (T5). */
    @ParameterizedTest
    @CsvSource({"clip-tiny-g, F16, 4", "t5-tiny, BF16, 1"})
    void sixteenBitWeightsAreReadInPlace(String name, String dtype, int files) throws Exception {
        TextEncoderSpec spec = spec(dir(name), isT5(name));
        Map<String, TextEncoderCheckpoint.Located> located = TextEncoderCheckpoint.open(spec);
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo(dtype));
        try (OnnxTextEncoder enc = (OnnxTextEncoder) onnx(dir(name), isT5(name), 1)) {
            ExternalData.Summary data = enc.externalData();
            assertThat(data.bytesByFile()).hasSize(files);
            long bytes = data.bytesByFile().values().stream().mapToLong(Long::longValue).sum();
            long elements = located.values().stream().mapToLong(t -> t.entry().numel()).sum();
            // every tensor but the ones the graph does not read (none for these folders) at 2 bytes a value
            assertThat(bytes).isEqualTo(2 * elements);
            assertThat(data.tensors()).isEqualTo(located.size());
        }
    }

    @Test
    void cancellationAndWrongIdsAreRefused() throws Exception {
        Cases c = cases("clip-tiny");
        try (TextEncoder enc = onnx(dir("clip-tiny"), false, 2)) {
            assertThatThrownBy(() -> enc.encode(c.ids(), () -> true)).isInstanceOf(BackendException.Cancelled.class);
            assertThatThrownBy(() -> enc.encode(new int[][] {new int[76]}, Cancellation.NEVER))
                    .hasMessageContaining("76 ids");
            int[] row = new int[77];
            row[3] = enc.spec().vocab();
            assertThatThrownBy(() -> enc.encode(new int[][] {row}, Cancellation.NEVER))
                    .hasMessageContaining("outside the vocabulary");
            // still usable afterwards
            assertThat(enc.encode(new int[][] {c.ids()[0]}, Cancellation.NEVER).pooled()).hasSize(32);
            assertThat(enc.encode(new int[0][], Cancellation.NEVER).hidden()).isEmpty();
        }
    }

    @Test
    void poolingFollowsTransformersRules() throws Exception {
        try (OnnxTextEncoder legacy = (OnnxTextEncoder) onnx(dir("clip-tiny"), false, 1);
                OnnxTextEncoder first = (OnnxTextEncoder) onnx(dir("clip-tiny-g"), false, 1)) {
            int eos = first.spec().eosTokenId();
            assertThat(legacy.eosPosition(new int[] {3512, 5, 3513, 3513, 3513})).isEqualTo(2); // argmax, first max
            assertThat(first.eosPosition(new int[] {3512, 5, eos, 0, 0})).isEqualTo(2); // first EOS
            assertThat(first.eosPosition(new int[] {3512, 5, 7, 0, 0})).isEqualTo(0); // none: position 0
        }
    }

    @Test
    void bucketsAreTransformers() throws Exception {
        long[] buckets;
        try (Safetensors st = Safetensors.open(dir("t5-tiny").resolve("cases.safetensors"))) {
            buckets = st.longs("buckets");
        }
        for (int rel = -600; rel <= 600; rel++) {
            assertThat(TextEncoderGraphs.bucket(rel, 32, 128)).as("rel %d", rel).isEqualTo((int) buckets[rel + 600]);
        }
    }

    /** A copy of {@code name} with its weights rewritten (F32) after {@code edit}. */
    private static Path editedCopy(String name, Path tmp,
            java.util.function.Consumer<Map<String, SafetensorsWriter.F32>> edit) throws Exception {
        Path src = dir(name);
        Files.copy(src.resolve("config.json"), tmp.resolve("config.json"));
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(src.resolve("model.safetensors"))) {
            for (Safetensors.Entry e : st.entries().values()) {
                tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
            }
        }
        edit.accept(tensors);
        SafetensorsWriter.write(tmp.resolve("model.safetensors"), tensors);
        return tmp;
    }

    @Test
    void missingUnexpectedAndMisshapenTensorsAreNamed(@TempDir Path tmp) throws Exception {
        Path a = editedCopy("clip-tiny", Files.createDirectory(tmp.resolve("a")),
                t -> t.remove("text_model.encoder.layers.1.mlp.fc2.bias"));
        assertThatThrownBy(() -> onnx(a, false, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_model.encoder.layers.1.mlp.fc2.bias' is missing");
        Path b = editedCopy("clip-tiny", Files.createDirectory(tmp.resolve("b")),
                t -> t.put("text_model.encoder.layers.3.mlp.fc2.bias", new SafetensorsWriter.F32(new long[] {64},
                        new float[64])));
        assertThatThrownBy(() -> onnx(b, false, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'text_model.encoder.layers.3.mlp.fc2.bias'");
        Path c = editedCopy("clip-tiny", Files.createDirectory(tmp.resolve("c")),
                t -> t.put("text_projection.weight", new SafetensorsWriter.F32(new long[] {64, 64},
                        new float[64 * 64])));
        assertThatThrownBy(() -> onnx(c, false, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_projection.weight' has shape [64, 64], expected [32, 64]");
        Path d = editedCopy("t5-tiny", Files.createDirectory(tmp.resolve("d")),
                t -> t.remove(TextEncoderCheckpoint.T5_SHARED));
        assertThatThrownBy(() -> onnx(d, true, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'shared.weight' is missing");
    }

    /** T5's tied embedding name in place of shared.weight (an F32 rewrite of the BF16 values) gives the same output. */
    @Test
    void theTiedEmbeddingNameIsAccepted(@TempDir Path tmp) throws Exception {
        Path d = editedCopy("t5-tiny", tmp, t -> t.put(TextEncoderCheckpoint.T5_TIED,
                t.remove(TextEncoderCheckpoint.T5_SHARED)));
        int[][] ids = {cases("t5-tiny").ids()[0]};
        try (TextEncoder a = onnx(d, true, 1); TextEncoder b = onnx(dir("t5-tiny"), true, 1)) {
            assertThat(relativeError(a.encode(ids, Cancellation.NEVER).hidden(), b.encode(ids, Cancellation.NEVER)
                    .hidden())).isLessThan(1e-6);
        }
    }
}
