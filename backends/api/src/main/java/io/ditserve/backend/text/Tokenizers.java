package io.ditserve.backend.text;

import com.fasterxml.jackson.databind.JsonNode;
import io.ditserve.backend.BackendException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * Reads a tokenizer folder of a diffusers pipeline ({@code tokenizer/}, {@code tokenizer_2/}, {@code tokenizer_3/}) by
 * what it holds: tokenizer_config.json's {@code tokenizer_class} when present (CLIPTokenizer[Fast] or
 * T5Tokenizer[Fast]), else the files ({@code vocab.json} + {@code merges.txt}: CLIP; {@code spiece.model}: T5).
 */
public final class Tokenizers {
    /** The tokenizer kinds this server reads. */
    public enum Kind {
        CLIP,
        T5
    }

    private Tokenizers() {}

    /**
     * @param maxLength the padded length the pipeline uses (CLIP: 0 for model_max_length, normally 77; T5: the
     *     pipeline's max_sequence_length, 0 for {@value T5Tokenizer#DEFAULT_MAX_LENGTH})
     */
    public static Tokenizer load(Path dir, int maxLength) throws BackendException {
        return switch (kind(dir)) {
            case CLIP -> ClipTokenizer.load(dir, maxLength);
            case T5 -> T5Tokenizer.load(dir, maxLength);
        };
    }

    /** Which tokenizer the folder holds; fails naming what it found. */
    public static Kind kind(Path dir) throws BackendException {
        if (!Files.isDirectory(dir)) {
            throw new BackendException(dir + ": missing (a tokenizer folder)");
        }
        TokenizerConfig cfg = TokenizerConfig.read(dir);
        JsonNode cls = cfg.get("tokenizer_class");
        if (cls != null) {
            String name = cls.asText();
            if (name.equals("CLIPTokenizer") || name.equals("CLIPTokenizerFast")) {
                return Kind.CLIP;
            }
            if (name.equals("T5Tokenizer") || name.equals("T5TokenizerFast")) {
                return Kind.T5;
            }
            throw new BackendException(dir.resolve(TokenizerConfig.CONFIG_FILE) + ": tokenizer_class '" + name
                    + "' is not supported (CLIPTokenizer, CLIPTokenizerFast, T5Tokenizer, T5TokenizerFast)");
        }
        if (Files.exists(dir.resolve("vocab.json")) && Files.exists(dir.resolve("merges.txt"))) {
            return Kind.CLIP;
        }
        if (Files.exists(dir.resolve(T5Tokenizer.MODEL_FILE)) || Files.exists(dir.resolve(T5Tokenizer.FAST_FILE))) {
            return Kind.T5;
        }
        throw new BackendException(dir + ": no tokenizer_class in " + TokenizerConfig.CONFIG_FILE
                + " and neither vocab.json + merges.txt (CLIP) nor " + T5Tokenizer.MODEL_FILE + " (T5)");
    }
}
