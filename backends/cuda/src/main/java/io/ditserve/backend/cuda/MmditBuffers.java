package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DitConstants;
import io.ditserve.backend.ModelSpec;

/**
 * The activation buffers of an MMDiT pass for up to {@code capacity} samples with up to {@code contextCapacity}
 * context tokens each, in one device allocation ({@link SlotLayout}). Attention runs over sequences of
 * L = T + C rows per (sample, head), the image tokens then the context tokens; its scores are computed for chunks
 * of samples so that {@link Buffer#SCORES} stays near {@link ActivationLayout#SCORES_BUDGET}.
 */
final class MmditBuffers implements SlotLayout.Buffers<MmditBuffers.Buffer> {
    /** Shapes with N = capacity, T = image tokens, C = context tokens, D = hidden size, L = T + C. */
    enum Buffer {
        X_IN, // [N, C_in, H, W] the input
        T, // [N] the network times (σ·1000)
        POOLED_IN, // [N, pooled_projection_dim]
        CONTEXT_IN, // [N·C, joint_attention_dim]
        FREQ, // [N, 256] timestep sinusoid
        T_HIDDEN, // [N, D] SiLU(timestep_embedder.linear_1(FREQ))
        T_OUT, // [N, D] timestep_embedder.linear_2, before its bias
        P_HIDDEN, // [N, D] SiLU(text_embedder.linear_1(pooled))
        P_OUT, // [N, D] text_embedder.linear_2, before its bias
        SILU_C, // [N, D] SiLU(temb), the input of every adaLN
        MOD, // [N, modulationWidth] every modulation of the pass (MmditWeights)
        PATCHES, // [N·T, C_in·p·p]
        X, // [N·T, D] the image stream
        H, // [N·T, D] its modulated LayerNorm
        H2, // [N·T, D] attn2's input (dual-attention models only)
        CTX, // [N·C, D] the context stream
        HC, // [N·C, D] its modulated LayerNorm
        QKV, // [N·T, 3D] image q | k | v
        QKV_C, // [N·C, 3D] context q | k | v
        HEADS, // q | k | v, each [N, heads, L, head_dim]
        SCORES, // [chunk·heads, L, L]
        ATTN_HEADS, // [N, heads, L, head_dim] attention output per head
        ATT, // [N·T, D] image attention output, heads merged
        ATT_C, // [N·C, D] context attention output
        TMP, // [N·T, D] a Linear's output before its bias (to_out, ff.net.2)
        TMP_C, // [N·C, D] the same for the context
        MLP, // [N·max(T, C), 4D] the feed-forward hidden layer of either stream
        FINAL, // [N·T, p·p·C_out] proj_out
        OUT // [N, C_out, H, W] the output
    }

    private final int capacity;
    private final int contextCapacity;
    private final SlotLayout layout = new SlotLayout();

    /**
     * The layout for up to {@code capacity} samples of up to {@code contextCapacity} (≥ 1) context tokens;
     * {@code modWidth}: {@link MmditWeights#modulationWidth}; {@code scoresBudget}: the target size of
     * {@link Buffer#SCORES} in floats (one sample's scores may exceed it).
     */
    MmditBuffers(ModelSpec s, int modWidth, int capacity, int contextCapacity, long scoresBudget)
            throws BackendException {
        if (capacity < 1 || contextCapacity < 1) {
            throw new IllegalArgumentException("capacity " + capacity + ", context " + contextCapacity);
        }
        this.capacity = capacity;
        this.contextCapacity = contextCapacity;
        long n = capacity;
        long t = s.tokens();
        long c = contextCapacity;
        long d = s.hiddenSize();
        long seq = t + c;
        long size2 = (long) s.inputSize() * s.inputSize();
        long p2 = (long) s.patchSize() * s.patchSize();
        long scoresPerSample = s.numHeads() * seq * seq;
        long chunk = Math.max(1, Math.min(n, scoresBudget / scoresPerSample));
        boolean dual = !s.text().dualAttentionLayers().isEmpty();
        for (Buffer b : Buffer.values()) {
            long len = switch (b) {
                case X_IN -> n * s.inChannels() * size2;
                case T -> n;
                case POOLED_IN -> n * s.text().pooledProjectionDim();
                case CONTEXT_IN -> n * c * s.text().jointAttentionDim();
                case FREQ -> n * DitConstants.FREQ_DIM;
                case T_HIDDEN, T_OUT, P_HIDDEN, P_OUT, SILU_C -> n * d;
                case MOD -> n * modWidth;
                case PATCHES -> n * t * s.inChannels() * p2;
                case X, H, ATT, TMP -> n * t * d;
                case H2 -> dual ? n * t * d : 0;
                case CTX, HC, ATT_C, TMP_C -> n * c * d;
                case QKV -> n * t * 3 * d;
                case QKV_C -> n * c * 3 * d;
                case HEADS -> 3 * n * seq * d;
                case SCORES -> chunk * scoresPerSample;
                case ATTN_HEADS -> n * seq * d;
                case MLP -> n * Math.max(t, c) * 4 * d;
                case FINAL -> n * t * p2 * s.outChannels();
                case OUT -> n * s.outChannels() * size2;
            };
            if (len > LaunchConfig.MAX_ELEMENTS) {
                throw new BackendException("a batch of " + capacity + " with " + contextCapacity + " context tokens"
                        + " is too large for one forward pass of " + s.name() + " on the cuda backend: buffer " + b
                        + " would hold " + len + " elements (at most " + LaunchConfig.MAX_ELEMENTS + "); use smaller"
                        + " batches");
            }
            layout.add(b.name(), len);
        }
    }

    int capacity() {
        return capacity;
    }

    int contextCapacity() {
        return contextCapacity;
    }

    @Override
    public SlotLayout layout() {
        return layout;
    }
}
