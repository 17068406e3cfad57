package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.TextEncoderSpec;

/**
 * The activation buffers of a text encoder pass over up to {@code capacity} sequences of T = maxTokens ids, in one
 * device allocation ({@link SlotLayout}); attention scores are computed for chunks of sequences so that
 * {@link Buffer#SCORES} stays near its budget.
 */
final class TextBuffers implements SlotLayout.Buffers<TextBuffers.Buffer> {
    /** Shapes with N = capacity, D = hidden size, inner = heads·head_dim, F = intermediate size (d_ff). */
    enum Buffer {
        IDS, // [N·T] int32 token ids
        POOL_ROWS, // [N] int32: the row b·T + pooled position of each sequence (CLIP)
        X, // [N·T, D] the residual stream
        H, // [N·T, D] its norm
        QKV, // [N·T, 3·inner]
        HEADS, // q | k | v, each [N, heads, T, head_dim]
        SCORES, // [chunk·heads, T, T]
        ATTN_HEADS, // [N, heads, T, head_dim]
        ATT, // [N·T, inner] attention output, heads merged
        TMP, // [N·T, D] out_proj / o, fc2 / wo before their bias
        GATES, // [N·T, 2F] T5's wi_0 | wi_1
        MLP, // [N·T, F] the MLP's hidden layer
        HIDDEN, // [N·T, D] the hidden state returned
        POOLED, // [N, D] CLIP: the pooled rows, then their final_layer_norm
        TEXT_EMBEDS // [N, projection] CLIP: text_projection(pooled)
    }

    private final int capacity;
    private final SlotLayout layout = new SlotLayout();

    TextBuffers(TextEncoderSpec s, int capacity, long scoresBudget) throws BackendException {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity " + capacity);
        }
        this.capacity = capacity;
        long n = capacity;
        long t = s.maxTokens();
        long d = s.hiddenSize();
        long inner = (long) s.heads() * s.headDim();
        long f = s.intermediate();
        boolean clip = s.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION;
        long scoresPerSequence = s.heads() * t * t;
        long chunk = Math.max(1, Math.min(n, scoresBudget / scoresPerSequence));
        for (Buffer b : Buffer.values()) {
            long len = switch (b) {
                case IDS -> n * t;
                case POOL_ROWS -> n;
                case X, H, TMP, HIDDEN -> n * t * d;
                case QKV, HEADS -> 3 * n * t * inner;
                case SCORES -> chunk * scoresPerSequence;
                case ATTN_HEADS, ATT -> n * t * inner;
                case GATES -> clip ? 0 : 2 * n * t * f;
                case MLP -> n * t * f;
                case POOLED -> clip ? n * d : 0;
                case TEXT_EMBEDS -> clip ? n * s.projectionDim() : 0;
            };
            if (len > LaunchConfig.MAX_ELEMENTS) {
                throw new BackendException("a batch of " + capacity + " sequences is too large for one pass of "
                        + s.summary() + " on the cuda backend: buffer " + b + " would hold " + len + " elements (at"
                        + " most " + LaunchConfig.MAX_ELEMENTS + "); encode fewer prompts at once");
            }
            layout.add(b.name(), len);
        }
    }

    int capacity() {
        return capacity;
    }

    @Override
    public SlotLayout layout() {
        return layout;
    }
}
