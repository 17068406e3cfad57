package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.TextFixtures.EncoderCases;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.FieldSource;

/**
 * The contract every backend's SD3 text encoders keep, as a JUnit suite: a backend's test extends it and says how to
 * create an encoder. Parity with the PyTorch references (tools/sd3/clip_text.py, tools/sd3/t5_encoder.py) on the
 * fixtures of tools/text/make_encoder_fixtures.py ({@link TextFixtures#ENCODERS}: CLIP with quick_gelu and the legacy
 * eos_token_id, CLIP with the exact GELU and first-EOS pooling in F16 shards, T5 v1.1 in BF16) on one and two
 * threads, with the measure of {@link Fixtures#relativeError} (max |error| / max |reference| below 1e-4); the java
 * backend's output; a prompt alone and in any batch; cancellation and wrong ids; transformers' pooling position and
 * T5 buckets; the weights' validation (missing, unexpected, misshapen tensors; T5's tied embedding name).
 */
public abstract class TextEncoderConformance extends Sd3Conformance {
    /** The encoder under test for {@code spec}, on {@code threads} threads. */
    protected abstract TextEncoder create(TextEncoderSpec spec, int threads) throws BackendException;

    /**
     * The backend's own entry points to the two rules of the encoders that are data rather than layers (the api's
     * TextEncoderRules states them): where a CLIP encoder pools a row of ids, and T5's bucket of a relative position.
     */
    protected abstract Rules rules();

    /** See {@link #rules()}. */
    public record Rules(ClipPoolPosition clipPoolPosition, T5Bucket t5Bucket) {}

    /** Where the CLIP encoder {@code clip} pools a row of ids. */
    @FunctionalInterface
    public interface ClipPoolPosition {
        int of(TextEncoder clip, int[] ids);
    }

    /** T5's relative-position bucket of rel = key − query, of {@code buckets} up to {@code maxDistance}. */
    @FunctionalInterface
    public interface T5Bucket {
        int of(int rel, int buckets, int maxDistance);
    }

    private static float[] row(float[] a, int b, int length) {
        return Arrays.copyOfRange(a, b * length, (b + 1) * length);
    }

    private TextEncoder open(String name, int threads) throws BackendException {
        return create(TextFixtures.encoderSpec(name), threads);
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({"clip-tiny, 1", "clip-tiny, 2", "clip-tiny-g, 1", "clip-tiny-g, 2", "t5-tiny, 1", "t5-tiny, 2"})
    void matchesTheReference(String name, int threads) throws Exception {
        EncoderCases c = TextFixtures.encoderCases(name);
        boolean t5 = TextFixtures.isT5(name);
        try (TextEncoder enc = open(name, threads)) {
            namesItsProvider(enc.backendName(), enc);
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            assertThat(out.tokens()).isEqualTo(t5 ? TextFixtures.T5_TOKENS : 77);
            assertThat(out.width()).isEqualTo(enc.spec().hiddenSize());
            double hidden = Fixtures.relativeError(out.hidden(), c.hidden());
            System.out.printf("%s %s, %d threads: %s rel. error %.2e", enc.backendName(), name, threads,
                    t5 ? "last_hidden_state" : "hidden_states[-2]", hidden);
            assertThat(hidden).isLessThan(tolerance());
            if (t5) {
                assertThat(out.pooled()).isNull();
                System.out.println();
            } else {
                double pooled = Fixtures.relativeError(out.pooled(), c.pooled());
                System.out.printf(", text_embeds %.2e%n", pooled);
                assertThat(pooled).isLessThan(tolerance());
            }
        }
    }

    /** The java backend's encoder (on one thread) on the same ids; on the java backend itself, two threads vs one. */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#ENCODERS")
    void agreesWithTheJavaBackend(String name) throws Exception {
        EncoderCases c = TextFixtures.encoderCases(name);
        TextEncoderSpec spec = TextFixtures.encoderSpec(name);
        try (TextEncoder enc = create(spec, 2);
                TextEncoder java = Fixtures.provider("java").createTextEncoder(spec, BackendOptions.ofThreads(1))) {
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            TextEncoder.Output reference = java.encode(c.ids(), Cancellation.NEVER);
            double err = Fixtures.relativeError(out.hidden(), reference.hidden());
            System.out.printf("%s %s vs java: hidden %.2e%n", enc.backendName(), name, err);
            assertThat(err).isLessThan(tolerance());
            if (out.pooled() != null) {
                assertThat(Fixtures.relativeError(out.pooled(), reference.pooled())).isLessThan(tolerance());
            }
        }
    }

    /**
     * Each prompt encoded alone on one thread gets what it gets in the batch on two (hidden state and CLIP's pooled
     * output), and the last prompt first in the batch reversed (within {@link #batchTolerance}).
     */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#ENCODERS")
    void aPromptGetsTheSameOutputAloneAndInAnyBatch(String name) throws Exception {
        int[][] ids = TextFixtures.encoderCases(name).ids();
        try (TextEncoder one = open(name, 1); TextEncoder two = open(name, 2)) {
            TextEncoder.Output batch = two.encode(ids, Cancellation.NEVER);
            int n = ids.length;
            int h = two.spec().maxTokens() * two.spec().hiddenSize();
            int p = two.spec().projectionDim();
            for (int b = 0; b < n; b++) {
                TextEncoder.Output alone = one.encode(new int[][] {ids[b]}, Cancellation.NEVER);
                same(alone.hidden(), row(batch.hidden(), b, h), "prompt " + b + " alone vs batched");
                if (alone.pooled() != null) {
                    same(alone.pooled(), row(batch.pooled(), b, p), "pooled output of prompt " + b);
                }
            }
            int[][] reversed = new int[n][];
            for (int b = 0; b < n; b++) {
                reversed[b] = ids[n - 1 - b];
            }
            TextEncoder.Output back = two.encode(reversed, Cancellation.NEVER);
            same(row(back.hidden(), 0, h), row(batch.hidden(), n - 1, h), "last prompt first");
        }
    }

    /**
     * Cancellation ({@link #cancels}); a row of the wrong length and an id outside the vocabulary are refused; the
     * encoder stays usable, and an empty batch gives an empty output.
     */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#ENCODERS")
    void cancellationAndWrongIdsAreRefused(String name) throws Exception {
        EncoderCases c = TextFixtures.encoderCases(name);
        try (TextEncoder enc = open(name, 2)) {
            cancels(cancel -> enc.encode(c.ids(), cancel), enc.spec().layers());
            int t = enc.spec().maxTokens();
            assertThatThrownBy(() -> enc.encode(new int[][] {new int[t - 1]}, Cancellation.NEVER))
                    .hasMessageContaining((t - 1) + " ids");
            int[] row = new int[t];
            row[3] = enc.spec().vocab();
            assertThatThrownBy(() -> enc.encode(new int[][] {row}, Cancellation.NEVER))
                    .hasMessageContaining("outside the vocabulary");
            // still usable afterwards
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            assertThat(Fixtures.relativeError(out.hidden(), c.hidden())).isLessThan(tolerance());
            if (c.pooled() != null) {
                assertThat(Fixtures.relativeError(out.pooled(), c.pooled())).isLessThan(tolerance());
            }
            assertThat(enc.encode(new int[0][], Cancellation.NEVER).hidden()).isEmpty();
        }
    }

    /**
     * Where CLIP pools, as transformers chooses it: the first maximum of the ids with the legacy eos_token_id 2 or
     * when the highest id is CLIP's released end-of-text id 49407; else the first eos_token_id, position 0 where
     * there is none.
     */
    @Test
    void poolingFollowsTransformersRules() throws Exception {
        ClipPoolPosition pool = rules().clipPoolPosition();
        try (TextEncoder legacy = open("clip-tiny", 1); TextEncoder first = open("clip-tiny-g", 1)) {
            int eos = first.spec().eosTokenId();
            assertThat(pool.of(legacy, new int[] {3512, 5, 3513, 3513, 3513})).isEqualTo(2);
            assertThat(pool.of(first, new int[] {3512, 5, eos, 0, 0})).isEqualTo(2);
            assertThat(pool.of(first, new int[] {3512, 5, 7, 0, 0})).isEqualTo(0);
            assertThat(pool.of(first, new int[] {3, 49407, 5, 49407})).isEqualTo(1);
        }
    }

    @Test
    void bucketsAreTransformers() throws Exception {
        long[] buckets = TextFixtures.t5Buckets();
        for (int rel = -600; rel <= 600; rel++) {
            assertThat(rules().t5Bucket().of(rel, 32, 128)).as("rel %d", rel).isEqualTo((int) buckets[rel + 600]);
        }
    }

    /** An encoder of a folder (a changed copy of a fixture). */
    private TextEncoder load(Path dir, boolean t5) throws BackendException {
        return create(TextFixtures.encoderSpec(dir, t5), 1);
    }

    @Test
    void aMissingTensorIsNamed(@TempDir Path tmp) throws Exception {
        Path d = TextFixtures.encoderCopy("clip-tiny", tmp, t -> t.remove("text_model.encoder.layers.1.mlp.fc2.bias"));
        assertThatThrownBy(() -> load(d, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_model.encoder.layers.1.mlp.fc2.bias' is missing");
    }

    @Test
    void anUnexpectedTensorIsNamed(@TempDir Path tmp) throws Exception {
        Path d = TextFixtures.encoderCopy("clip-tiny", tmp, t -> t.put("text_model.encoder.layers.3.mlp.fc2.bias",
                new SafetensorsWriter.F32(new long[] {64}, new float[64])));
        assertThatThrownBy(() -> load(d, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'text_model.encoder.layers.3.mlp.fc2.bias'");
    }

    @Test
    void aMisshapenTensorIsNamed(@TempDir Path tmp) throws Exception {
        Path d = TextFixtures.encoderCopy("clip-tiny", tmp, t -> t.put("text_projection.weight",
                new SafetensorsWriter.F32(new long[] {64, 64}, new float[64 * 64])));
        assertThatThrownBy(() -> load(d, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_projection.weight' has shape [64, 64], expected [32, 64]");
    }

    /** T5's tensors are checked too: a missing or unexpected position bias, a missing embedding. */
    @Test
    void missingAndUnexpectedT5TensorsAreNamed(@TempDir Path tmp) throws Exception {
        String bias = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";
        Path a = TextFixtures.encoderCopy("t5-tiny", Files.createDirectory(tmp.resolve("a")), t -> t.remove(bias));
        assertThatThrownBy(() -> load(a, true)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'" + bias + "' is missing");
        Path b = TextFixtures.encoderCopy("t5-tiny", Files.createDirectory(tmp.resolve("b")), t -> t.put(
                bias.replace("block.0", "block.1"), new SafetensorsWriter.F32(new long[] {32, 3}, new float[96])));
        assertThatThrownBy(() -> load(b, true)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor '" + bias.replace("block.0", "block.1") + "'");
        Path c = TextFixtures.encoderCopy("t5-tiny", Files.createDirectory(tmp.resolve("c")),
                t -> t.remove(TextEncoderCheckpoint.T5_SHARED));
        assertThatThrownBy(() -> load(c, true)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'" + TextEncoderCheckpoint.T5_SHARED + "' is missing");
    }

    /**
     * T5's tied embedding name in place of shared.weight (an F32 rewrite of the BF16 values) gives the fixture's own
     * output (within {@link #batchTolerance}).
     */
    @Test
    void theTiedEmbeddingNameIsAccepted(@TempDir Path tmp) throws Exception {
        Path d = TextFixtures.encoderCopy("t5-tiny", tmp, t -> t.put(TextEncoderCheckpoint.T5_TIED,
                t.remove(TextEncoderCheckpoint.T5_SHARED)));
        int[][] ids = {TextFixtures.encoderCases("t5-tiny").ids()[0]};
        try (TextEncoder a = load(d, true); TextEncoder b = open("t5-tiny", 1)) {
            same(a.encode(ids, Cancellation.NEVER).hidden(), b.encode(ids, Cancellation.NEVER).hidden(),
                    "tied name, F32");
        }
    }
}
