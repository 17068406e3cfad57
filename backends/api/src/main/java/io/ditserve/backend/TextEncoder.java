package io.ditserve.backend;

/**
 * One loaded text encoder of a text-to-image pipeline on one compute backend, beside {@link Backend} (the
 * transformer) and {@link Decoder} (the VAE): it turns token ids into the hidden states and pooled vector the
 * transformer's conditioning is built from (docs/TEXT_MODELS.md). Created by the backend's provider
 * ({@link BackendProvider#createTextEncoder}); runs once per request, never per step. Implementations may serialise
 * calls.
 */
public interface TextEncoder extends AutoCloseable {

    /** What {@link #encode} returns for a batch of n sequences of T tokens. */
    record Output(float[] hidden, int tokens, int width, float[] pooled) {
        /**
         * @param hidden [n, T, width]: for CLIP the hidden state SD3 uses ({@link TextEncoderSpec#hiddenLayer}); for
         *     T5 the last hidden state after its final norm
         * @param pooled [n, projection]: CLIP's projected pooled output (text_embeds); null for T5
         */
        public Output {
            java.util.Objects.requireNonNull(hidden, "hidden");
        }
    }

    TextEncoderSpec spec();

    /** The backend it runs on (for listings). */
    String backendName();

    /**
     * Encodes {@code ids} (n sequences of exactly {@link TextEncoderSpec#maxTokens()} ids each, padded as the
     * tokenizer pads them), every id in 0..vocab−1.
     *
     * @throws BackendException.Cancelled when {@code cancel} fires
     */
    Output encode(int[][] ids, Cancellation cancel) throws BackendException;

    @Override
    void close();
}
