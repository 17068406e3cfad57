package io.ditserve.backend;

import java.nio.file.Path;
import java.util.Objects;

/**
 * A text encoder folder of a diffusers pipeline ({@code text_encoder/}, {@code text_encoder_2/},
 * {@code text_encoder_3/}): its transformers config.json, validated (docs/TEXT_MODELS.md).
 *
 * @param directory the folder (config.json and model.safetensors, or a sharded index)
 * @param kind CLIPTextModelWithProjection or T5EncoderModel
 * @param hiddenSize CLIP hidden_size / T5 d_model
 * @param layers CLIP num_hidden_layers / T5 num_layers
 * @param heads attention heads
 * @param headDim hidden_size/heads for CLIP; T5's d_kv
 * @param intermediate CLIP intermediate_size / T5 d_ff
 * @param vocab vocab_size
 * @param maxTokens the sequence length the pipeline feeds it (CLIP: max_position_embeddings, normally 77; T5: the
 *     pipeline's max_sequence_length)
 * @param projectionDim CLIP projection_dim (0 for T5)
 * @param activation CLIP hidden_act ("quick_gelu" or "gelu") / T5 dense_act_fn ("gelu_new")
 * @param eps layer_norm_eps / layer_norm_epsilon
 * @param hiddenLayer CLIP: the index into hidden_states (embeddings = 0, layer k = k) that SD3 takes: the
 *     penultimate, layers − 1; T5: layers (the last, after the final norm)
 * @param eosTokenId CLIP: the id whose first occurrence the pooled output is taken at (T5: −1)
 * @param relativeBuckets T5 relative_attention_num_buckets (0 for CLIP)
 * @param relativeMaxDistance T5 relative_attention_max_distance (0 for CLIP)
 */
public record TextEncoderSpec(Path directory, String role, Kind kind, int hiddenSize, int layers, int heads, int headDim,
        int intermediate, int vocab, int maxTokens, int projectionDim, String activation, double eps, int hiddenLayer,
        int eosTokenId, int relativeBuckets, int relativeMaxDistance) {

    /** The architectures, by their transformers class names. */
    public enum Kind {
        CLIP_WITH_PROJECTION("CLIPTextModelWithProjection"),
        T5_ENCODER("T5EncoderModel");

        private final String className;

        Kind(String className) {
            this.className = className;
        }

        public String className() {
            return className;
        }
    }

    public TextEncoderSpec {
        Objects.requireNonNull(directory, "directory");
        Objects.requireNonNull(role, "role");
        Objects.requireNonNull(kind, "kind");
        Objects.requireNonNull(activation, "activation");
    }

    /** Width of the hidden states it returns. */
    public int width() {
        return hiddenSize;
    }

    public String summary() {
        return role + " (" + kind.className() + ", " + layers + " layers of " + hiddenSize + ", " + maxTokens
                + " tokens)";
    }
}
