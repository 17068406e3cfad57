package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.SafetensorsWriter;
import io.ditserve.backend.testkit.TextFixtures;
import io.ditserve.backend.text.Tokenizer;
import io.ditserve.backend.text.Tokenizers;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The CLIP text encoder of the java backend beyond the shared suite that {@link JavaTextEncoderTest} runs (parity with
 * tools/sd3/clip_text.py on the fixtures of tools/text/make_encoder_fixtures.py, batches, cancellation, pooling, the
 * weights' validation): the CLIP tokenizer gives the ids of the fixtures' cases (clip-tiny: quick_gelu, legacy
 * eos_token_id 2, F32; clip-tiny-g: exact GELU, first-EOS pooling, F16 in shards), and the legacy position_ids
 * buffer of older transformers files is accepted by name.
 */
class ClipTextEncoderTest {
    @ParameterizedTest
    @ValueSource(strings = {"clip-tiny", "clip-tiny-g"})
    void theTokenizerGivesTheIdsOfTheCases(String name) throws Exception {
        List<String> prompts = TextFixtures.prompts(name);
        int[][] ids = TextFixtures.encoderCases(name).ids();
        assertThat(prompts).hasSize(ids.length);
        Tokenizer tok = Tokenizers.load(TextFixtures.dir(name).resolve("tokenizer"), 0);
        for (int i = 0; i < prompts.size(); i++) {
            assertThat(tok.encode(prompts.get(i)).ids()).as("tokens of prompt %d", i).containsExactly(ids[i]);
        }
    }

    @Test
    void theLegacyPositionIdsBufferIsAccepted(@TempDir Path tmp) throws Exception {
        // older transformers files carry text_model.embeddings.position_ids (I64); write it as F32 to check the
        // name is accepted and its values read (a float buffer is refused as not an integer tensor)
        Path d = TextFixtures.encoderCopy("clip-tiny", tmp, t -> t.put("text_model.embeddings.position_ids",
                new SafetensorsWriter.F32(new long[] {1, 77}, new float[77])));
        TextEncoderSpec spec = TextFixtures.encoderSpec(d, false);
        assertThatThrownBy(() -> ClipTextEncoder.create(spec, BackendOptions.ofThreads(1)))
                .isInstanceOf(BackendException.class).hasMessageContaining("not an integer tensor");
    }
}
