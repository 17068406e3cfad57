package io.ditserve.backend.text;

/**
 * A text encoder's tokenizer as a pipeline folder distributes it (CLIP's byte-level BPE, T5's SentencePiece;
 * docs/TEXT_MODELS.md): text in, exactly {@link #maxLength()} ids out, cut and padded as the reference pipeline does.
 */
public interface Tokenizer {

    /**
     * @param ids exactly maxLength ids, special tokens included, padded
     * @param count ids before the padding
     * @param truncated whether the text was longer than the limit and was cut
     */
    record Tokens(int[] ids, int count, boolean truncated) {}

    Tokens encode(String text);

    int maxLength();
}
