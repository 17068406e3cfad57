package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import io.ditserve.backend.text.Tokenizer;
import io.ditserve.backend.text.Tokenizers;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The CLIP text encoder against tools/sd3/clip_text.py on the fixtures of tools/text/make_encoder_fixtures.py
 * (clip-tiny: quick_gelu, legacy eos_token_id 2, F32; clip-tiny-g: exact GELU, first-EOS pooling, F16 in shards).
 */
class ClipTextEncoderTest {
    private static final double TOLERANCE = 1e-4;

    private record Cases(int[][] ids, float[] hidden, float[] last, float[] textEmbeds, List<String> prompts) {}

    private static Path dir(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    private static Cases cases(Path dir) throws Exception {
        try (Safetensors st = Safetensors.open(dir.resolve("cases.safetensors"))) {
            long[] flat = st.longs("ids");
            int n = (int) st.entry("ids").shape()[0];
            int t = (int) st.entry("ids").shape()[1];
            int[][] ids = new int[n][t];
            for (int i = 0; i < flat.length; i++) {
                ids[i / t][i % t] = Math.toIntExact(flat[i]);
            }
            List<String> prompts = List.of(new ObjectMapper().readValue(st.metadata().get("prompts"), String[].class));
            return new Cases(ids, st.floats("hidden"), st.floats("last"), st.floats("text_embeds"), prompts);
        }
    }

    private static TextEncoder load(Path dir, int threads) throws BackendException {
        TextEncoderSpec spec = TextEncoderConfigs.load(dir, "text_encoder", 0);
        return ClipTextEncoder.create(spec, BackendOptions.ofThreads(threads));
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

    @ParameterizedTest
    @ValueSource(strings = {"clip-tiny", "clip-tiny-g"})
    void matchesTheReference(String name) throws Exception {
        Path dir = dir(name);
        Cases c = cases(dir);
        Tokenizer tok = Tokenizers.load(dir.resolve("tokenizer"), 0);
        for (int i = 0; i < c.prompts().size(); i++) {
            assertThat(tok.encode(c.prompts().get(i)).ids()).as("tokens of prompt %d", i).containsExactly(c.ids()[i]);
        }
        try (TextEncoder enc = load(dir, 2)) {
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            assertThat(out.tokens()).isEqualTo(77);
            assertThat(out.width()).isEqualTo(enc.spec().hiddenSize());
            double hidden = relativeError(out.hidden(), c.hidden());
            double pooled = relativeError(out.pooled(), c.textEmbeds());
            System.out.printf("%s: hidden_states[-2] rel. error %.2e, text_embeds %.2e%n", name, hidden, pooled);
            assertThat(hidden).isLessThan(TOLERANCE);
            assertThat(pooled).isLessThan(TOLERANCE);
        }
    }

    @Test
    void aPromptGetsTheSameBitsAloneAndInAnyBatch() throws Exception {
        Cases c = cases(dir("clip-tiny-g"));
        try (TextEncoder one = load(dir("clip-tiny-g"), 1); TextEncoder two = load(dir("clip-tiny-g"), 2)) {
            TextEncoder.Output batch = two.encode(c.ids(), Cancellation.NEVER);
            int n = c.ids().length;
            int h = 77 * two.spec().hiddenSize();
            int p = two.spec().projectionDim();
            for (int b = 0; b < n; b++) {
                TextEncoder.Output alone = one.encode(new int[][] {c.ids()[b]}, Cancellation.NEVER);
                assertThat(alone.hidden()).containsExactly(Arrays.copyOfRange(batch.hidden(), b * h, (b + 1) * h));
                assertThat(alone.pooled()).containsExactly(Arrays.copyOfRange(batch.pooled(), b * p, (b + 1) * p));
            }
            int[][] reversed = new int[n][];
            for (int b = 0; b < n; b++) {
                reversed[b] = c.ids()[n - 1 - b];
            }
            TextEncoder.Output back = two.encode(reversed, Cancellation.NEVER);
            assertThat(Arrays.copyOfRange(back.hidden(), 0, h))
                    .containsExactly(Arrays.copyOfRange(batch.hidden(), (n - 1) * h, n * h));
        }
    }

    @Test
    void cancellationStopsBetweenLayers() throws Exception {
        Cases c = cases(dir("clip-tiny"));
        try (TextEncoder enc = load(dir("clip-tiny"), 2)) {
            assertThatThrownBy(() -> enc.encode(c.ids(), () -> true)).isInstanceOf(BackendException.Cancelled.class);
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> enc.encode(c.ids(), () -> polls.incrementAndGet() > 2))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isEqualTo(3);
            // still usable afterwards
            assertThat(enc.encode(new int[][] {c.ids()[0]}, Cancellation.NEVER).pooled()).hasSize(32);
        }
    }

    @Test
    void refusesWrongIds() throws Exception {
        try (TextEncoder enc = load(dir("clip-tiny"), 1)) {
            assertThatThrownBy(() -> enc.encode(new int[][] {new int[76]}, Cancellation.NEVER))
                    .hasMessageContaining("76 ids");
            int[] row = new int[77];
            row[3] = enc.spec().vocab();
            assertThatThrownBy(() -> enc.encode(new int[][] {row}, Cancellation.NEVER))
                    .hasMessageContaining("outside the vocabulary");
        }
    }

    /** A copy of clip-tiny whose weights are rewritten (F32) after {@code edit}. */
    private static Path editedCopy(Path tmp, java.util.function.Consumer<Map<String, SafetensorsWriter.F32>> edit)
            throws Exception {
        Path src = dir("clip-tiny");
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
    void aMissingTensorIsNamed(@TempDir Path tmp) throws Exception {
        Path d = editedCopy(tmp, t -> t.remove("text_model.encoder.layers.1.mlp.fc2.bias"));
        assertThatThrownBy(() -> load(d, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_model.encoder.layers.1.mlp.fc2.bias' is missing");
    }

    @Test
    void anUnexpectedTensorIsNamed(@TempDir Path tmp) throws Exception {
        Path d = editedCopy(tmp, t -> t.put("text_model.encoder.layers.3.mlp.fc2.bias",
                new SafetensorsWriter.F32(new long[] {64}, new float[64])));
        assertThatThrownBy(() -> load(d, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'text_model.encoder.layers.3.mlp.fc2.bias'");
    }

    @Test
    void aWrongShapeIsNamed(@TempDir Path tmp) throws Exception {
        Path d = editedCopy(tmp, t -> t.put("text_projection.weight",
                new SafetensorsWriter.F32(new long[] {64, 64}, new float[64 * 64])));
        assertThatThrownBy(() -> load(d, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_projection.weight' has shape [64, 64], expected [32, 64]");
    }

    @Test
    void theLegacyPositionIdsBufferIsAccepted(@TempDir Path tmp) throws Exception {
        // older transformers files carry text_model.embeddings.position_ids (I64); write it as F32 to check the
        // name is accepted and its values read (a float buffer is refused as not an integer tensor)
        Path d = editedCopy(tmp, t -> t.put("text_model.embeddings.position_ids",
                new SafetensorsWriter.F32(new long[] {1, 77}, new float[77])));
        assertThatThrownBy(() -> load(d, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("not an integer tensor");
    }

    @Test
    void poolingFollowsTransformersRules() throws Exception {
        try (TextEncoder legacy = load(dir("clip-tiny"), 1); TextEncoder first = load(dir("clip-tiny-g"), 1)) {
            ClipTextEncoder l = (ClipTextEncoder) legacy;
            ClipTextEncoder f = (ClipTextEncoder) first;
            int eos = f.spec().eosTokenId();
            assertThat(l.eosPosition(new int[] {3512, 5, 3513, 3513, 3513})).isEqualTo(2); // argmax, first maximum
            assertThat(f.eosPosition(new int[] {3512, 5, eos, 0, 0})).isEqualTo(2); // first EOS
            assertThat(f.eosPosition(new int[] {3512, 5, 7, 0, 0})).isEqualTo(0); // none: position 0
        }
    }
}
