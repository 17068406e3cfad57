package io.ditserve.backend.text;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The settings transformers keeps beside a tokenizer's vocabulary: {@code special_tokens_map.json}, then
 * {@code tokenizer_config.json} over it (as transformers merges them: the config wins, a null value keeps what was
 * there). Special tokens are stored as a string or as {"content": …}.
 */
final class TokenizerConfig {
    static final String CONFIG_FILE = "tokenizer_config.json";
    static final String SPECIAL_TOKENS_FILE = "special_tokens_map.json";
    /** transformers' "no limit" model_max_length is int(1e30); anything above this counts as unset. */
    private static final long UNSET_ABOVE = 1_000_000;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path dir;
    private final Map<String, JsonNode> values;

    private TokenizerConfig(Path dir, Map<String, JsonNode> values) {
        this.dir = dir;
        this.values = values;
    }

    static TokenizerConfig read(Path dir) throws BackendException {
        Map<String, JsonNode> values = new LinkedHashMap<>();
        for (String name : new String[] {SPECIAL_TOKENS_FILE, CONFIG_FILE}) {
            Path file = dir.resolve(name);
            if (!Files.exists(file)) {
                continue;
            }
            JsonNode root;
            try {
                root = JSON.readTree(Files.readString(file, StandardCharsets.UTF_8));
            } catch (IOException e) {
                throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
            }
            if (root == null || !root.isObject()) {
                throw new BackendException(file + ": expected a JSON object");
            }
            root.properties().forEach(f -> {
                if (!f.getValue().isNull()) {
                    values.put(f.getKey(), f.getValue());
                }
            });
        }
        return new TokenizerConfig(dir, values);
    }

    boolean has(String key) {
        return values.containsKey(key);
    }

    JsonNode get(String key) {
        return values.get(key);
    }

    /** A special token's text, or {@code fallback} when neither file names it. */
    String special(String key, String fallback) throws BackendException {
        JsonNode v = values.get(key);
        if (v == null) {
            return fallback;
        }
        if (v.isTextual()) {
            return v.asText();
        }
        if (v.isObject() && v.path("content").isTextual()) {
            return v.path("content").asText();
        }
        throw new BackendException(dir + ": " + key + " must be a string or {\"content\": …}, found " + v);
    }

    /** model_max_length, or {@code fallback} when absent or transformers' "unset" huge value. */
    int modelMaxLength(int fallback) throws BackendException {
        JsonNode v = values.get("model_max_length");
        if (v == null) {
            return fallback;
        }
        if (!v.isNumber()) {
            throw new BackendException(dir.resolve(CONFIG_FILE) + ": model_max_length must be a number, found " + v);
        }
        double d = v.asDouble();
        if (d > UNSET_ABOVE) {
            return fallback;
        }
        if (d < 2 || d != Math.rint(d)) {
            throw new BackendException(dir.resolve(CONFIG_FILE) + ": model_max_length " + v + " is not a length");
        }
        return (int) d;
    }
}
