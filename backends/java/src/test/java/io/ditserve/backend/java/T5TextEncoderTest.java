package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.testkit.TextFixtures;
import io.ditserve.backend.text.Tokenizer;
import io.ditserve.backend.text.Tokenizers;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The T5 v1.1 encoder of the java backend beyond the shared suite that {@link JavaTextEncoderTest} runs (parity with
 * tools/sd3/t5_encoder.py on tools/fixtures/t5-tiny, BF16 weights, 256 tokens; batches, buckets, the weights'
 * validation): the T5 tokenizer gives the ids of the fixture's cases, the last prompt truncated, and the java
 * backend makes a {@link T5TextEncoder} of the folder.
 */
class T5TextEncoderTest {
    @Test
    void theTokenizerGivesTheIdsOfTheCases() throws Exception {
        List<String> prompts = TextFixtures.prompts("t5-tiny");
        int[][] ids = TextFixtures.encoderCases("t5-tiny").ids();
        assertThat(prompts).hasSize(ids.length);
        Tokenizer tok = Tokenizers.load(TextFixtures.dir("t5-tiny").resolve("tokenizer"), TextFixtures.T5_TOKENS);
        for (int i = 0; i < prompts.size(); i++) {
            assertThat(tok.encode(prompts.get(i)).ids()).as("tokens of prompt %d", i).containsExactly(ids[i]);
        }
        assertThat(tok.encode(prompts.get(3)).truncated()).isTrue();
        try (TextEncoder enc = JavaTextEncoders.create(TextFixtures.encoderSpec("t5-tiny"),
                BackendOptions.ofThreads(1))) {
            assertThat(enc).isInstanceOf(T5TextEncoder.class);
            assertThat(enc.spec().hiddenSize()).isEqualTo(64);
        }
    }
}
