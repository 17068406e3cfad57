package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;

/**
 * Reads a text encoder folder's {@code config.json} as transformers writes it (docs/TEXT_MODELS.md, "Text encoders"):
 * {@code architectures} names the class ({@code CLIPTextModelWithProjection} or {@code T5EncoderModel}), the
 * architecture keys are read with transformers' defaults where a key is absent, and a value this server does not
 * implement (an activation, a feed-forward kind, a head split that does not divide) fails naming the file and the
 * key. Bookkeeping keys (dropout rates, initializer ranges, token ids other than EOS, torch_dtype, versions) are
 * ignored: they do not change inference.
 */
public final class TextEncoderConfigs {
    public static final String CONFIG_FILE = "config.json";
    /** CLIP activations this server computes (hidden_act). */
    public static final List<String> CLIP_ACTIVATIONS = List.of("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh");
    /** The relative-attention defaults of T5Config. */
    public static final int T5_BUCKETS = 32;
    public static final int T5_MAX_DISTANCE = 128;

    private static final ObjectMapper JSON = new ObjectMapper();
    /** Keys that would change a CLIP text model in ways this server does not implement. */
    private static final Set<String> CLIP_UNSUPPORTED = Set.of("use_attention_mask", "attention_type");

    private TextEncoderConfigs() {}

    /**
     * @param dir the encoder folder (text_encoder/, text_encoder_2/, text_encoder_3/)
     * @param role its name in the pipeline (for messages)
     * @param maxTokens the sequence length the pipeline feeds it: CLIP 0 for max_position_embeddings (or at most
     *     that); T5 the pipeline's max_sequence_length (required, > 0)
     */
    public static TextEncoderSpec load(Path dir, String role, int maxTokens) throws BackendException {
        Path file = dir.resolve(CONFIG_FILE);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file));
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing (a text encoder folder holds config.json and "
                    + "model.safetensors, as transformers saves them)");
        } catch (IOException e) {
            throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new BackendException(file + ": expected a JSON object");
        }
        JsonNode arch = root.get("architectures");
        if (arch == null || !arch.isArray() || arch.size() != 1 || !arch.get(0).isTextual()) {
            throw new BackendException(file + ": 'architectures' must be a list of one class name "
                    + "(CLIPTextModelWithProjection or T5EncoderModel), found " + arch);
        }
        String cls = arch.get(0).asText();
        Fields f = new Fields(file, root);
        if (cls.equals(TextEncoderSpec.Kind.CLIP_WITH_PROJECTION.className())) {
            return clip(dir, role, maxTokens, f);
        }
        if (cls.equals(TextEncoderSpec.Kind.T5_ENCODER.className())) {
            return t5(dir, role, maxTokens, f);
        }
        throw new BackendException(file + ": architecture '" + cls + "' is not supported (CLIPTextModelWithProjection, "
                + "T5EncoderModel); SD3's text encoders are these two");
    }

    private static TextEncoderSpec clip(Path dir, String role, int maxTokens, Fields f) throws BackendException {
        f.expectText("model_type", "clip_text_model");
        for (String key : CLIP_UNSUPPORTED) {
            if (f.node().has(key)) {
                throw new BackendException(f.file() + ": '" + key + "' is not supported by this server's CLIP");
            }
        }
        // CLIPTextConfig's defaults (transformers)
        int hidden = f.intIn("hidden_size", 512, 1, 1 << 16);
        int layers = f.intIn("num_hidden_layers", 12, 1, 1024);
        int heads = f.intIn("num_attention_heads", 8, 1, 1024);
        int intermediate = f.intIn("intermediate_size", 2048, 1, 1 << 18);
        int vocab = f.intIn("vocab_size", 49408, 2, 1 << 24);
        int positions = f.intIn("max_position_embeddings", 77, 2, 1 << 16);
        int projection = f.intIn("projection_dim", 512, 1, 1 << 16);
        String act = f.text("hidden_act", "quick_gelu");
        double eps = f.positive("layer_norm_eps", 1e-5);
        int eos = f.intIn("eos_token_id", 2, 0, Integer.MAX_VALUE);
        if (hidden % heads != 0) {
            throw new BackendException(f.file() + ": hidden_size " + hidden + " is not divisible by num_attention_heads "
                    + heads);
        }
        if (!CLIP_ACTIVATIONS.contains(act)) {
            throw new BackendException(f.file() + ": hidden_act '" + act + "' is not supported (" + CLIP_ACTIVATIONS
                    + ")");
        }
        if (maxTokens < 0 || maxTokens > positions) {
            throw new BackendException(f.file() + ": " + role + " is fed " + maxTokens
                    + " tokens but has max_position_embeddings " + positions);
        }
        int tokens = maxTokens == 0 ? positions : maxTokens;
        // SD3 takes hidden_states[-2]: the output of the penultimate layer (the embeddings for a 1-layer model)
        return new TextEncoderSpec(dir, role, TextEncoderSpec.Kind.CLIP_WITH_PROJECTION, hidden, layers, heads,
                hidden / heads, intermediate, vocab, tokens, projection, act, eps, layers - 1, eos, 0, 0);
    }

    private static TextEncoderSpec t5(Path dir, String role, int maxTokens, Fields f) throws BackendException {
        f.expectText("model_type", "t5");
        int dModel = f.intIn("d_model", 512, 1, 1 << 16);
        int dKv = f.intIn("d_kv", 64, 1, 1 << 12);
        int dFf = f.intIn("d_ff", 2048, 1, 1 << 18);
        int layers = f.intIn("num_layers", 6, 1, 1024);
        int heads = f.intIn("num_heads", 8, 1, 1024);
        int vocab = f.intIn("vocab_size", 32128, 2, 1 << 24);
        int buckets = f.intIn("relative_attention_num_buckets", T5_BUCKETS, 2, 1 << 12);
        int distance = f.intIn("relative_attention_max_distance", T5_MAX_DISTANCE, 1, 1 << 20);
        double eps = f.positive("layer_norm_epsilon", 1e-6);
        String ff = f.text("feed_forward_proj", "relu");
        if (!ff.equals("gated-gelu")) {
            throw new BackendException(f.file() + ": feed_forward_proj '" + ff + "' is not supported (T5 v1.1's "
                    + "'gated-gelu', which SD3's text_encoder_3 uses)");
        }
        String act = f.text("dense_act_fn", "gelu_new");
        if (!act.equals("gelu_new")) {
            throw new BackendException(f.file() + ": dense_act_fn '" + act + "' does not match feed_forward_proj "
                    + "gated-gelu (gelu_new)");
        }
        if (f.node().has("is_encoder_decoder") && !f.node().get("is_encoder_decoder").isBoolean()) {
            throw new BackendException(f.file() + ": is_encoder_decoder must be a boolean");
        }
        if (maxTokens <= 0) {
            throw new BackendException(f.file() + ": " + role + " needs the pipeline's max_sequence_length (got "
                    + maxTokens + ")");
        }
        return new TextEncoderSpec(dir, role, TextEncoderSpec.Kind.T5_ENCODER, dModel, layers, heads, dKv, dFf, vocab,
                maxTokens, 0, act, eps, layers, -1, buckets, distance);
    }

    private record Fields(Path file, JsonNode node) {
        int intIn(String key, int fallback, int min, int max) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isIntegralNumber() || !v.canConvertToInt() || v.asInt() < min || v.asInt() > max) {
                throw new BackendException(file + ": '" + key + "' must be an integer in " + min + ".." + max
                        + ", found " + v);
            }
            return v.asInt();
        }

        double positive(String key, double fallback) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isNumber() || !(v.asDouble() > 0) || v.asDouble() >= 1) {
                throw new BackendException(file + ": '" + key + "' must be a number in (0, 1), found " + v);
            }
            return v.asDouble();
        }

        String text(String key, String fallback) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isTextual()) {
                throw new BackendException(file + ": '" + key + "' must be a string, found " + v);
            }
            return v.asText();
        }

        void expectText(String key, String expected) throws BackendException {
            JsonNode v = node.get(key);
            if (v != null && !v.isNull() && !expected.equals(v.asText())) {
                throw new BackendException(file + ": '" + key + "' is '" + v.asText() + "', expected '" + expected
                        + "' for " + node.get("architectures").get(0).asText());
            }
        }
    }
}
