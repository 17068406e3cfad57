package io.ditserve.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class TextEncoderConfigsTest {

    private static Path write(Path dir, String json) throws Exception {
        Files.writeString(dir.resolve("config.json"), json);
        return dir;
    }

    private static final String CLIP_L = """
            {"architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0, "bos_token_id": 0,
             "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768,
             "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
             "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
             "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768,
             "torch_dtype": "float16", "transformers_version": "4.41.2", "vocab_size": 49408}""";

    @Test
    void readsClipL(@TempDir Path dir) throws Exception {
        TextEncoderSpec s = TextEncoderConfigs.load(write(dir, CLIP_L), "text_encoder", 0);
        assertThat(s.kind()).isEqualTo(TextEncoderSpec.Kind.CLIP_WITH_PROJECTION);
        assertThat(s.hiddenSize()).isEqualTo(768);
        assertThat(s.heads()).isEqualTo(12);
        assertThat(s.headDim()).isEqualTo(64);
        assertThat(s.layers()).isEqualTo(12);
        assertThat(s.intermediate()).isEqualTo(3072);
        assertThat(s.vocab()).isEqualTo(49408);
        assertThat(s.maxTokens()).isEqualTo(77);
        assertThat(s.projectionDim()).isEqualTo(768);
        assertThat(s.activation()).isEqualTo("quick_gelu");
        assertThat(s.eps()).isEqualTo(1e-5);
        assertThat(s.hiddenLayer()).isEqualTo(11); // hidden_states[-2]
        assertThat(s.eosTokenId()).isEqualTo(2);
        assertThat(TextEncoderConfigs.load(dir, "text_encoder", 20).maxTokens()).isEqualTo(20);
    }

    @Test
    void readsTheCommittedFixtures() throws Exception {
        Path root = Path.of(System.getProperty("repo.root", "../.."));
        TextEncoderSpec g = TextEncoderConfigs.load(root.resolve("tools/fixtures/clip-tiny-g"), "text_encoder_2", 0);
        assertThat(g.activation()).isEqualTo("gelu");
        assertThat(g.layers()).isEqualTo(2);
        assertThat(g.hiddenLayer()).isEqualTo(1);
    }

    @Test
    void refusesWhatItCannotRun(@TempDir Path dir) throws Exception {
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, CLIP_L.replace("quick_gelu", "silu")), "t", 0))
                .hasMessageContaining("hidden_act 'silu'");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, CLIP_L.replace("\"num_attention_heads\": 12",
                "\"num_attention_heads\": 7")), "t", 0)).hasMessageContaining("not divisible");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, CLIP_L), "t", 78))
                .hasMessageContaining("max_position_embeddings 77");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, CLIP_L.replace("CLIPTextModelWithProjection",
                "CLIPTextModel")), "t", 0)).hasMessageContaining("architecture 'CLIPTextModel' is not supported");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, "{\"hidden_size\": 8}"), "t", 0))
                .hasMessageContaining("'architectures'");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, CLIP_L.replace("\"hidden_size\": 768",
                "\"hidden_size\": \"768\"")), "t", 0)).hasMessageContaining("'hidden_size' must be an integer");
        assertThatThrownBy(() -> TextEncoderConfigs.load(dir.resolve("absent"), "t", 0))
                .hasMessageContaining("missing");
    }

    @Test
    void readsT5V11(@TempDir Path dir) throws Exception {
        String t5 = """
                {"architectures": ["T5EncoderModel"], "d_ff": 10240, "d_kv": 64, "d_model": 4096,
                 "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1, "feed_forward_proj": "gated-gelu",
                 "initializer_factor": 1.0, "is_encoder_decoder": true, "is_gated_act": true,
                 "layer_norm_epsilon": 1e-06, "model_type": "t5", "num_decoder_layers": 24, "num_heads": 64,
                 "num_layers": 24, "output_past": true, "pad_token_id": 0, "relative_attention_max_distance": 128,
                 "relative_attention_num_buckets": 32, "tie_word_embeddings": false, "torch_dtype": "float16",
                 "transformers_version": "4.41.2", "use_cache": true, "vocab_size": 32128}""";
        TextEncoderSpec s = TextEncoderConfigs.load(write(dir, t5), "text_encoder_3", 256);
        assertThat(s.kind()).isEqualTo(TextEncoderSpec.Kind.T5_ENCODER);
        assertThat(s.hiddenSize()).isEqualTo(4096);
        assertThat(s.headDim()).isEqualTo(64);
        assertThat(s.heads()).isEqualTo(64);
        assertThat(s.intermediate()).isEqualTo(10240);
        assertThat(s.layers()).isEqualTo(24);
        assertThat(s.hiddenLayer()).isEqualTo(24);
        assertThat(s.maxTokens()).isEqualTo(256);
        assertThat(s.relativeBuckets()).isEqualTo(32);
        assertThat(s.relativeMaxDistance()).isEqualTo(128);
        assertThat(s.eps()).isEqualTo(1e-6);
        assertThatThrownBy(() -> TextEncoderConfigs.load(dir, "text_encoder_3", 0))
                .hasMessageContaining("max_sequence_length");
        assertThatThrownBy(() -> TextEncoderConfigs.load(write(dir, t5.replace("\"gated-gelu\"", "\"relu\"")),
                "text_encoder_3", 256)).hasMessageContaining("feed_forward_proj 'relu'");
    }
}
