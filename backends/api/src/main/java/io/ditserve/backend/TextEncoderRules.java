package io.ditserve.backend;

/**
 * The rules of the text encoders that are data rather than layers (docs/TEXT_MODELS.md, "Text encoders"), stated
 * once for the backends that compute them on the host: where CLIP pools, T5's relative-position buckets, CLIP's MLP
 * activation; and the checks every backend's encoder makes of its spec ({@link #checkHiddenLayer}) and of the ids
 * it is given ({@link #checkIds}, {@link #checkOpen}).
 */
public final class TextEncoderRules {
    /** CLIP's end-of-text id in the released vocabularies; a row whose highest id is this pools at its argmax. */
    public static final int CLIP_EOS = 49407;

    private TextEncoderRules() {}

    /** CLIP's MLP activation ({@code hidden_act}), as transformers' ACT2FN names them. */
    public enum ClipActivation {
        /** {@code quick_gelu}: x·σ(1.702·x). */
        QUICK_GELU,
        /** {@code gelu}: the exact GELU, x·Φ(x). */
        GELU_ERF,
        /** {@code gelu_new}, {@code gelu_pytorch_tanh}: the tanh approximation. */
        GELU_TANH
    }

    /** The activation of a CLIP spec's {@code hidden_act}; fails naming the folder for one no backend computes. */
    public static ClipActivation clipActivation(TextEncoderSpec spec) throws BackendException {
        return switch (spec.activation()) {
            case "quick_gelu" -> ClipActivation.QUICK_GELU;
            case "gelu" -> ClipActivation.GELU_ERF;
            case "gelu_new", "gelu_pytorch_tanh" -> ClipActivation.GELU_TANH;
            default -> throw new BackendException(spec.directory() + ": hidden_act '" + spec.activation()
                    + "' is not supported");
        };
    }

    /**
     * Fails when a CLIP spec's hidden layer (the hidden_states index SD3 reads, {@link TextEncoderSpec#hiddenLayer})
     * is outside 0 .. layers; a T5 spec passes.
     */
    public static void checkHiddenLayer(TextEncoderSpec spec) throws BackendException {
        if (spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION
                && (spec.hiddenLayer() < 0 || spec.hiddenLayer() > spec.layers())) {
            throw new BackendException(spec.directory() + ": hidden layer " + spec.hiddenLayer() + " of "
                    + spec.layers());
        }
    }

    /**
     * Checks the ids of a {@link TextEncoder#encode} call: every sequence of exactly maxTokens ids, every id in
     * 0 .. vocab − 1; the first one that is not fails naming the encoder's role.
     *
     * @return the number of sequences
     */
    public static int checkIds(TextEncoderSpec spec, int[][] ids) throws BackendException {
        int tokens = spec.maxTokens();
        for (int b = 0; b < ids.length; b++) {
            if (ids[b].length != tokens) {
                throw new BackendException(spec.role() + ": sequence " + b + " has " + ids[b].length
                        + " ids, the encoder takes " + tokens);
            }
            for (int id : ids[b]) {
                if (id < 0 || id >= spec.vocab()) {
                    throw new BackendException(spec.role() + ": id " + id + " is outside the vocabulary (0.."
                            + (spec.vocab() - 1) + ")");
                }
            }
        }
        return ids.length;
    }

    /**
     * {@link #checkIds} for an encoder that can be closed: first an IllegalStateException naming the encoder when
     * {@code closed}.
     *
     * @return the number of sequences
     */
    public static int checkOpen(boolean closed, TextEncoderSpec spec, int[][] ids) throws BackendException {
        if (closed) {
            throw new IllegalStateException("text encoder " + spec.summary() + " is closed");
        }
        return checkIds(spec, ids);
    }

    /**
     * The position CLIP pools of one row of ids, as transformers chooses it: the first maximum of the row when the
     * config's eos_token_id is 2 (the legacy value of the released configs) or the row's highest id is
     * {@link #CLIP_EOS}; else the first position holding eos_token_id, or 0 when none does.
     */
    public static int clipPoolPosition(TextEncoderSpec spec, int[] row) {
        int argmax = 0;
        for (int i = 1; i < row.length; i++) {
            if (row[i] > row[argmax]) {
                argmax = i;
            }
        }
        if (spec.eosTokenId() == 2 || row[argmax] == CLIP_EOS) {
            return argmax;
        }
        for (int i = 0; i < row.length; i++) {
            if (row[i] == spec.eosTokenId()) {
                return i;
            }
        }
        return 0;
    }

    /**
     * T5's bidirectional bucket of rel = key position − query position, in float32 as transformers computes it:
     * half of the buckets for each sign (rel > 0 adds half); a distance below half/2 is its own bucket; a larger one
     * goes to half/2 + ⌊log(dist/(half/2)) / log(maxDistance/(half/2)) · (half − half/2)⌋, at most half − 1.
     */
    public static int t5Bucket(int rel, int buckets, int maxDistance) {
        int half = buckets / 2;
        int base = rel > 0 ? half : 0;
        int dist = Math.abs(rel);
        int exact = half / 2;
        if (dist < exact) {
            return base + dist;
        }
        float logRatio = (float) Math.log((float) dist / exact);
        float logRange = (float) Math.log((double) maxDistance / exact);
        int far = exact + (int) (logRatio / logRange * (half - exact));
        return base + Math.min(far, half - 1);
    }

    /**
     * T5's position bias [heads, T, T] of a sequence of T tokens: bias[h][i][j] = table[bucket(j − i)][h] with the
     * stored relative_attention_bias table [buckets, heads] of block 0.
     */
    public static float[] t5PositionBias(float[] table, int heads, int tokens, int buckets, int maxDistance) {
        int[] bucketOf = new int[2 * tokens - 1]; // by rel + tokens − 1
        for (int rel = 1 - tokens; rel < tokens; rel++) {
            bucketOf[rel + tokens - 1] = t5Bucket(rel, buckets, maxDistance);
        }
        float[] bias = new float[heads * tokens * tokens];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < tokens; i++) {
                for (int j = 0; j < tokens; j++) {
                    bias[(h * tokens + i) * tokens + j] = table[bucketOf[j - i + tokens - 1] * heads + h];
                }
            }
        }
        return bias;
    }
}
