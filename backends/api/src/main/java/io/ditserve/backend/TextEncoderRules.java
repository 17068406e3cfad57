package io.ditserve.backend;

/**
 * The two rules of the text encoders that are data rather than layers (docs/TEXT_MODELS.md, "Text encoders"),
 * stated once for the backends that compute them on the host: where CLIP pools, and T5's relative-position buckets.
 */
public final class TextEncoderRules {
    /** CLIP's end-of-text id in the released vocabularies; a row whose highest id is this pools at its argmax. */
    public static final int CLIP_EOS = 49407;

    private TextEncoderRules() {}

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
