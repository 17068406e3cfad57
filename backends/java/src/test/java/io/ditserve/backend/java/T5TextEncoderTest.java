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
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The T5 v1.1 encoder against tools/sd3/t5_encoder.py on tools/fixtures/t5-tiny (BF16 weights, 256 tokens). */
class T5TextEncoderTest {
    private static Path dir;
    private static int[][] ids;
    private static float[] last;
    private static long[] buckets;
    private static List<String> prompts;

    @BeforeAll
    static void load() throws Exception {
        dir = Fixtures.repoRoot().resolve("tools/fixtures/t5-tiny");
        try (Safetensors st = Safetensors.open(dir.resolve("cases.safetensors"))) {
            long[] flat = st.longs("ids");
            int n = (int) st.entry("ids").shape()[0];
            int t = (int) st.entry("ids").shape()[1];
            ids = new int[n][t];
            for (int i = 0; i < flat.length; i++) {
                ids[i / t][i % t] = Math.toIntExact(flat[i]);
            }
            last = st.floats("last_hidden_state");
            buckets = st.longs("buckets");
            prompts = List.of(new ObjectMapper().readValue(st.metadata().get("prompts"), String[].class));
        }
    }

    private static TextEncoder encoder(Path dir, int threads) throws BackendException {
        TextEncoderSpec spec = TextEncoderConfigs.load(dir, "text_encoder_3", 256);
        return JavaTextEncoders.create(spec, BackendOptions.ofThreads(threads));
    }

    @Test
    void matchesTheReference() throws Exception {
        Tokenizer tok = Tokenizers.load(dir.resolve("tokenizer"), 256);
        for (int i = 0; i < prompts.size(); i++) {
            assertThat(tok.encode(prompts.get(i)).ids()).as("tokens of prompt %d", i).containsExactly(ids[i]);
        }
        assertThat(tok.encode(prompts.get(3)).truncated()).isTrue();
        try (TextEncoder enc = encoder(dir, 2)) {
            assertThat(enc).isInstanceOf(T5TextEncoder.class);
            TextEncoder.Output out = enc.encode(ids, Cancellation.NEVER);
            assertThat(out.pooled()).isNull();
            assertThat(out.tokens()).isEqualTo(256);
            assertThat(out.width()).isEqualTo(64);
            double diff = 0;
            double scale = 0;
            for (int i = 0; i < last.length; i++) {
                diff = Math.max(diff, Math.abs(out.hidden()[i] - last[i]));
                scale = Math.max(scale, Math.abs(last[i]));
            }
            System.out.printf("t5-tiny: last_hidden_state rel. error %.2e%n", diff / scale);
            assertThat(diff / scale).isLessThan(1e-4);
        }
    }

    @Test
    void bucketsAreTransformers() {
        for (int rel = -600; rel <= 600; rel++) {
            assertThat(T5TextEncoder.bucket(rel, 32, 128)).as("rel %d", rel).isEqualTo((int) buckets[rel + 600]);
        }
    }

    @Test
    void aPromptGetsTheSameBitsAloneAndInAnyBatch() throws Exception {
        try (TextEncoder one = encoder(dir, 1); TextEncoder two = encoder(dir, 2)) {
            TextEncoder.Output batch = two.encode(ids, Cancellation.NEVER);
            int h = 256 * 64;
            for (int b = 0; b < ids.length; b++) {
                float[] alone = one.encode(new int[][] {ids[b]}, Cancellation.NEVER).hidden();
                assertThat(alone).containsExactly(Arrays.copyOfRange(batch.hidden(), b * h, (b + 1) * h));
            }
            assertThatThrownBy(() -> two.encode(ids, () -> true)).isInstanceOf(BackendException.Cancelled.class);
        }
    }

    /** A copy of t5-tiny with its weights rewritten (F32) after {@code edit}. */
    private static Path editedCopy(Path tmp, java.util.function.Consumer<Map<String, SafetensorsWriter.F32>> edit)
            throws Exception {
        Files.copy(dir.resolve("config.json"), tmp.resolve("config.json"));
        Map<String, SafetensorsWriter.F32> tensors = new LinkedHashMap<>();
        try (Safetensors st = Safetensors.open(dir.resolve("model.safetensors"))) {
            for (Safetensors.Entry e : st.entries().values()) {
                tensors.put(e.name(), new SafetensorsWriter.F32(e.shape(), st.floats(e.name())));
            }
        }
        edit.accept(tensors);
        SafetensorsWriter.write(tmp.resolve("model.safetensors"), tensors);
        return tmp;
    }

    @Test
    void theTiedEmbeddingNameIsAccepted(@TempDir Path tmp) throws Exception {
        Path d = editedCopy(tmp, t -> t.put(T5TextEncoder.TIED, t.remove(T5TextEncoder.SHARED)));
        try (TextEncoder a = encoder(d, 1); TextEncoder b = encoder(dir, 1)) {
            assertThat(a.encode(new int[][] {ids[0]}, Cancellation.NEVER).hidden())
                    .containsExactly(b.encode(new int[][] {ids[0]}, Cancellation.NEVER).hidden());
        }
    }

    @Test
    void missingAndUnexpectedTensorsAreNamed(@TempDir Path tmp) throws Exception {
        Path a = Files.createDirectory(tmp.resolve("a"));
        editedCopy(a, t -> t.remove("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"));
        assertThatThrownBy(() -> encoder(a, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight' is missing");
        Path b = Files.createDirectory(tmp.resolve("b"));
        editedCopy(b, t -> t.put("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight",
                new SafetensorsWriter.F32(new long[] {32, 3}, new float[96])));
        assertThatThrownBy(() -> encoder(b, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'encoder.block.1.layer.0.SelfAttention.relative_attention_bias");
        Path c = Files.createDirectory(tmp.resolve("c"));
        editedCopy(c, t -> t.remove(T5TextEncoder.SHARED));
        assertThatThrownBy(() -> encoder(c, 1)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'shared.weight' is missing");
    }
}
