package io.ditserve.backend.cuda;

import static io.ditserve.backend.cuda.TextFixtures.encoderCases;
import static io.ditserve.backend.cuda.TextFixtures.isT5;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.cuda.TextFixtures.EncoderCases;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * SD3's text encoders on the cuda backend ({@link CudaTextEncoder}, {@link TextEncoderForward}) run on
 * {@link EmulatedDevice}, against the PyTorch references on the java backend's fixtures
 * (tools/text/make_encoder_fixtures.py), with the same measure and tolerance (max |error| / max |reference| below
 * 1e-4): clip-tiny (quick_gelu, legacy eos_token_id 2, F32), clip-tiny-g (exact GELU, first-EOS pooling, F16 in four
 * shards) and t5-tiny (BF16, 256 tokens, relative position buckets up to the cap). Also: the java backend's output,
 * a prompt alone and batched, attention in chunks, cancellation, argument checks, the weights' validation.
 */
class CudaTextEncoderTest {
    private static final double TOLERANCE = 1e-4;

    private static Path dir(String name) {
        return TextFixtures.dir(name);
    }

    private static TextEncoderSpec spec(Path dir, boolean t5) throws BackendException {
        return TextFixtures.encoderSpec(dir, t5);
    }

    private static CudaTextEncoder emulated(Path dir, boolean t5) throws BackendException {
        return Emulation.textEncoder(spec(dir, t5), ActivationLayout.SCORES_BUDGET);
    }

    @ParameterizedTest
    @ValueSource(strings = {"clip-tiny", "clip-tiny-g", "t5-tiny"})
    void matchesTheReference(String name) throws Exception {
        EncoderCases c = encoderCases(name);
        try (TextEncoder enc = emulated(dir(name), isT5(name))) {
            assertThat(enc.backendName()).isEqualTo("cuda");
            TextEncoder.Output out = enc.encode(c.ids(), Cancellation.NEVER);
            assertThat(out.tokens()).isEqualTo(isT5(name) ? 256 : 77);
            assertThat(out.width()).isEqualTo(enc.spec().hiddenSize());
            double hidden = Fixtures.relativeError(out.hidden(), c.hidden());
            System.out.printf("cuda (emulated) %s: hidden rel. error %.2e", name, hidden);
            assertThat(hidden).isLessThan(TOLERANCE);
            if (isT5(name)) {
                assertThat(out.pooled()).isNull();
                System.out.println();
            } else {
                double pooled = Fixtures.relativeError(out.pooled(), c.pooled());
                System.out.printf(", text_embeds %.2e%n", pooled);
                assertThat(pooled).isLessThan(TOLERANCE);
            }
        }
    }

    /**
     * The java backend's encoders on the same ids; each prompt alone gets the bytes it gets in the batch, also with
     * attention in chunks of one sequence (a scores budget of one float).
     */
    @ParameterizedTest
    @ValueSource(strings = {"clip-tiny", "clip-tiny-g", "t5-tiny"})
    void agreesWithTheJavaBackendAloneAndBatched(String name) throws Exception {
        EncoderCases c = encoderCases(name);
        TextEncoderSpec spec = spec(dir(name), isT5(name));
        try (TextEncoder cuda = emulated(dir(name), isT5(name));
                TextEncoder chunked = Emulation.textEncoder(spec, 1);
                TextEncoder java = new JavaBackendProvider().createTextEncoder(spec, BackendOptions.ofThreads(2))) {
            TextEncoder.Output batch = cuda.encode(c.ids(), Cancellation.NEVER);
            TextEncoder.Output reference = java.encode(c.ids(), Cancellation.NEVER);
            double err = Fixtures.relativeError(batch.hidden(), reference.hidden());
            System.out.printf("cuda (emulated) %s vs java: hidden %.2e%n", name, err);
            assertThat(err).isLessThan(TOLERANCE);
            if (batch.pooled() != null) {
                assertThat(Fixtures.relativeError(batch.pooled(), reference.pooled())).isLessThan(TOLERANCE);
            }
            TextEncoder.Output inChunks = chunked.encode(c.ids(), Cancellation.NEVER);
            assertThat(inChunks.hidden()).isEqualTo(batch.hidden());
            int h = spec.maxTokens() * spec.hiddenSize();
            for (int b = 0; b < c.ids().length; b++) {
                TextEncoder.Output alone = cuda.encode(new int[][] {c.ids()[b]}, Cancellation.NEVER);
                assertThat(alone.hidden()).as("prompt %d alone vs batched", b)
                        .isEqualTo(Arrays.copyOfRange(batch.hidden(), b * h, (b + 1) * h));
                if (alone.pooled() != null) {
                    int p = spec.projectionDim();
                    assertThat(alone.pooled()).isEqualTo(Arrays.copyOfRange(batch.pooled(), b * p, (b + 1) * p));
                }
            }
        }
    }

    /**
     * CLIP's other hidden layers, as the java backend returns them: the embeddings (k = 0) and the last layer's raw
     * output (k = layers, before final_layer_norm); the pooled output does not depend on k.
     */
    @ParameterizedTest
    @ValueSource(ints = {0, 3})
    void otherHiddenLayersAreTheJavaBackends(int layer) throws Exception {
        EncoderCases c = encoderCases("clip-tiny");
        TextEncoderSpec s = spec(dir("clip-tiny"), false);
        TextEncoderSpec other = new TextEncoderSpec(s.directory(), s.role(), s.kind(), s.hiddenSize(), s.layers(),
                s.heads(), s.headDim(), s.intermediate(), s.vocab(), s.maxTokens(), s.projectionDim(), s.activation(),
                s.eps(), layer, s.eosTokenId(), s.relativeBuckets(), s.relativeMaxDistance());
        try (TextEncoder cuda = Emulation.textEncoder(other, ActivationLayout.SCORES_BUDGET);
                TextEncoder java = new JavaBackendProvider().createTextEncoder(other, BackendOptions.ofThreads(1))) {
            TextEncoder.Output out = cuda.encode(c.ids(), Cancellation.NEVER);
            assertThat(Fixtures.relativeError(out.hidden(), java.encode(c.ids(), Cancellation.NEVER).hidden()))
                    .isLessThan(TOLERANCE);
            assertThat(Fixtures.relativeError(out.pooled(), c.pooled())).isLessThan(TOLERANCE);
        }
    }

    @Test
    void cancellationAndWrongIdsAreRefused() throws Exception {
        EncoderCases c = encoderCases("clip-tiny");
        try (TextEncoder enc = emulated(dir("clip-tiny"), false)) {
            assertThatThrownBy(() -> enc.encode(c.ids(), () -> true)).isInstanceOf(BackendException.Cancelled.class);
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> enc.encode(c.ids(), () -> polls.incrementAndGet() > 2))
                    .isInstanceOf(BackendException.Cancelled.class);
            AtomicInteger all = new AtomicInteger();
            enc.encode(c.ids(), () -> all.incrementAndGet() < 0);
            assertThat(all.get()).as("before the run, before each layer and after the last")
                    .isEqualTo(enc.spec().layers() + 2);
            assertThatThrownBy(() -> enc.encode(new int[][] {new int[76]}, Cancellation.NEVER))
                    .hasMessageContaining("76 ids");
            int[] row = new int[77];
            row[3] = enc.spec().vocab();
            assertThatThrownBy(() -> enc.encode(new int[][] {row}, Cancellation.NEVER))
                    .hasMessageContaining("outside the vocabulary");
            // still usable afterwards
            assertThat(Fixtures.relativeError(enc.encode(c.ids(), Cancellation.NEVER).pooled(), c.pooled()))
                    .isLessThan(TOLERANCE);
            assertThat(enc.encode(new int[0][], Cancellation.NEVER).hidden()).isEmpty();
        }
    }

    @Test
    void poolingFollowsTransformersRules() throws Exception {
        TextEncoderSpec legacy = spec(dir("clip-tiny"), false);
        TextEncoderSpec first = spec(dir("clip-tiny-g"), false);
        int eos = first.eosTokenId();
        assertThat(TextEncoderRules.clipPoolPosition(legacy, new int[] {3512, 5, 3513, 3513, 3513})).isEqualTo(2);
        assertThat(TextEncoderRules.clipPoolPosition(first, new int[] {3512, 5, eos, 0, 0})).isEqualTo(2);
        assertThat(TextEncoderRules.clipPoolPosition(first, new int[] {3512, 5, 7, 0, 0})).isEqualTo(0);
        assertThat(TextEncoderRules.clipPoolPosition(first, new int[] {3, 49407, 5, 49407})).isEqualTo(1);
    }

    @Test
    void bucketsAreTransformers() throws Exception {
        long[] buckets;
        try (Safetensors st = Safetensors.open(dir("t5-tiny").resolve("cases.safetensors"))) {
            buckets = st.longs("buckets");
        }
        for (int rel = -600; rel <= 600; rel++) {
            assertThat(TextEncoderRules.t5Bucket(rel, 32, 128)).as("rel %d", rel).isEqualTo((int) buckets[rel + 600]);
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
        assertThatThrownBy(() -> emulated(a, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_model.encoder.layers.1.mlp.fc2.bias' is missing");
        Path b = editedCopy("clip-tiny", Files.createDirectory(tmp.resolve("b")),
                t -> t.put("text_model.encoder.layers.3.mlp.fc2.bias", new SafetensorsWriter.F32(new long[] {64},
                        new float[64])));
        assertThatThrownBy(() -> emulated(b, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("unexpected tensor 'text_model.encoder.layers.3.mlp.fc2.bias'");
        Path c = editedCopy("clip-tiny", Files.createDirectory(tmp.resolve("c")),
                t -> t.put("text_projection.weight", new SafetensorsWriter.F32(new long[] {64, 64},
                        new float[64 * 64])));
        assertThatThrownBy(() -> emulated(c, false)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'text_projection.weight' has shape [64, 64], expected [32, 64]");
        Path d = editedCopy("t5-tiny", Files.createDirectory(tmp.resolve("d")),
                t -> t.remove(TextEncoderCheckpoint.T5_SHARED));
        assertThatThrownBy(() -> emulated(d, true)).isInstanceOf(BackendException.class)
                .hasMessageContaining("'shared.weight' is missing");
    }

    /** T5's tied embedding name in place of shared.weight (an F32 rewrite of the BF16 values) gives the same bytes. */
    @Test
    void theTiedEmbeddingNameIsAccepted(@TempDir Path tmp) throws Exception {
        Path d = editedCopy("t5-tiny", tmp, t -> t.put(TextEncoderCheckpoint.T5_TIED,
                t.remove(TextEncoderCheckpoint.T5_SHARED)));
        int[][] ids = {encoderCases("t5-tiny").ids()[0]};
        try (TextEncoder a = emulated(d, true); TextEncoder b = emulated(dir("t5-tiny"), true)) {
            assertThat(a.encode(ids, Cancellation.NEVER).hidden()).isEqualTo(b.encode(ids, Cancellation.NEVER)
                    .hidden());
        }
    }

    /** The provider makes a cuda text encoder; without a GPU here the device is what fails. */
    @Test
    void theProviderCreatesTextEncoders() throws Exception {
        TextEncoderSpec spec = spec(dir("t5-tiny"), true);
        try (TextEncoder e = new CudaBackendProvider().createTextEncoder(spec, BackendOptions.ofThreads(1))) {
            assertThat(e).isInstanceOf(CudaTextEncoder.class); // on a machine with a GPU
        } catch (BackendException e) {
            assertThat(e.getMessage()).doesNotContain("cannot run text encoders");
        }
    }
}
