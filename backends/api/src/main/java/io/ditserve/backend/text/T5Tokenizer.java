package io.ditserve.backend.text;

import io.ditserve.backend.BackendException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * T5's tokenizer (transformers' T5Tokenizer / T5TokenizerFast as SD3's pipeline calls it: padding="max_length",
 * truncation=True): the SentencePiece ids of the text ({@link SentencePieceModel}), cut to max − 1, then
 * {@code </s>}, then {@code <pad>} up to max. No BOS.
 *
 * <p>Read from a {@code tokenizer_3/} folder's {@code spiece.model}; the eos and pad tokens are those
 * tokenizer_config.json / special_tokens_map.json name (default {@code </s>} and {@code <pad>}). What is not done
 * (docs/TEXT_MODELS.md): transformers splits its added tokens ({@code <extra_id_N>}, {@code </s>}, …) out of the
 * text before SentencePiece sees it, and the fast tokenizer fuses runs of unknown characters into one
 * {@code <unk>}; here, as in python3-sentencepiece, such strings are ordinary text and each unknown character is
 * its own {@code <unk>}. A folder with only {@code tokenizer.json} is refused.
 */
public final class T5Tokenizer implements Tokenizer {
    public static final String MODEL_FILE = "spiece.model";
    public static final String FAST_FILE = "tokenizer.json";
    /** diffusers' SD3 pipeline default max_sequence_length. */
    public static final int DEFAULT_MAX_LENGTH = 256;

    private final SentencePieceModel model;
    private final int maxLength;
    private final int eosId;
    private final int padId;

    public T5Tokenizer(SentencePieceModel model, int maxLength, int eosId, int padId) {
        if (maxLength < 1) {
            throw new IllegalArgumentException("max length " + maxLength + " leaves no room for </s>");
        }
        this.model = model;
        this.maxLength = maxLength;
        this.eosId = eosId;
        this.padId = padId;
    }

    /**
     * Reads a T5Tokenizer(Fast) folder.
     *
     * @param maxLength the padded length (the pipeline's max_sequence_length); 0 takes {@value #DEFAULT_MAX_LENGTH}
     */
    public static T5Tokenizer load(Path dir, int maxLength) throws BackendException {
        Path file = dir.resolve(MODEL_FILE);
        if (!Files.exists(file)) {
            if (Files.exists(dir.resolve(FAST_FILE))) {
                throw new BackendException(dir + ": only " + FAST_FILE + " is present; this server reads T5's "
                        + "SentencePiece model from " + MODEL_FILE + " (the diffusers SD3 folders ship both)");
            }
            throw new BackendException(file + ": missing (a T5 tokenizer folder holds " + MODEL_FILE + ")");
        }
        SentencePieceModel model = SentencePieceModel.read(file);
        TokenizerConfig cfg = TokenizerConfig.read(dir);
        int eos = pieceId(dir, model, "eos_token", cfg.special("eos_token", "</s>"));
        int pad = pieceId(dir, model, "pad_token", cfg.special("pad_token", "<pad>"));
        return new T5Tokenizer(model, maxLength > 0 ? maxLength : DEFAULT_MAX_LENGTH, eos, pad);
    }

    private static int pieceId(Path dir, SentencePieceModel model, String what, String token)
            throws BackendException {
        int id = model.id(token);
        if (id < 0) {
            throw new BackendException(dir + ": " + what + " '" + token + "' is not a piece of " + MODEL_FILE);
        }
        return id;
    }

    public SentencePieceModel model() {
        return model;
    }

    public int eosId() {
        return eosId;
    }

    public int padId() {
        return padId;
    }

    @Override
    public int maxLength() {
        return maxLength;
    }

    @Override
    public Tokens encode(String text) {
        int[] raw = model.encode(text);
        int keep = Math.min(raw.length, maxLength - 1);
        int[] ids = new int[maxLength];
        System.arraycopy(raw, 0, ids, 0, keep);
        ids[keep] = eosId;
        Arrays.fill(ids, keep + 1, maxLength, padId);
        return new Tokens(ids, keep + 1, raw.length > maxLength - 1);
    }
}
