package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import java.util.EnumMap;
import java.util.Map;

/**
 * The activation buffers of a forward pass for batches of up to {@code capacity} samples, all in one device
 * allocation: offset and length of each, in 4-byte elements (float32, or int32 for
 * {@link Buffer#Y}), each starting on a 256-byte boundary. Sized once at load and reused by every pass; a larger
 * batch makes a new layout.
 *
 * <p>The attention scores of all (sample, head) pairs of a big batch can be large (N·heads·T² floats), so attention
 * runs over chunks of {@link #attentionChunk} samples and {@link Buffer#SCORES} holds one chunk.
 */
final class ActivationLayout implements PassMemory.Layout {
    /** Shapes with N = batch, T = tokens, D = hidden size, p = patch size, H×W = input size. */
    enum Buffer {
        X_IN, // [N, C_in, H, W] the input
        T, // [N] int32 timesteps
        Y, // [N] int32 labels
        FREQ, // [N, 256] sinusoidal timestep features
        T_HIDDEN, // [N, D] SiLU(t_embedder.mlp.0(FREQ))
        T_OUT, // [N, D] t_embedder.mlp.2(T_HIDDEN) before its bias
        SILU_C, // [N, D] SiLU(c), the input of every adaLN
        MOD, // [N, (6·depth + 2)·D] every modulation of the pass (WeightLayout)
        PATCHES, // [N·T, C_in·p·p]
        X, // [N·T, D] the residual stream
        H, // [N·T, D] modulated LayerNorm output
        QKV, // [N·T, 3D]
        HEADS, // q | k | v, each [N, heads, T, head_dim]
        SCORES, // [chunk·heads, T, T] attention probabilities of one chunk of samples
        ATTN_HEADS, // [N, heads, T, head_dim] attention output per head
        ATT, // [N·T, D] attention output, heads merged
        TMP, // [N·T, D] output of attn.proj and of mlp.fc2
        MLP, // [N·T, mlp_hidden]
        FINAL, // [N·T, p·p·C_out] output of final_layer.linear
        OUT, // [N, C_out, H, W] the output
        RESIDUAL // [N·T, D] step caching: the residuals of the cached span (StepCache), in the pass's sample order
    }

    /** Target size of the scores buffer, in floats (256 MiB); one sample's scores may exceed it. */
    static final long SCORES_BUDGET = 1L << 26;

    private final int capacity;
    private final int attentionChunk;
    private final Map<Buffer, long[]> slots; // offset, length
    private final long totalElements;

    private ActivationLayout(int capacity, int attentionChunk, Map<Buffer, long[]> slots, long totalElements) {
        this.capacity = capacity;
        this.attentionChunk = attentionChunk;
        this.slots = slots;
        this.totalElements = totalElements;
    }

    /** The layout for batches of up to {@code capacity}; fails if one buffer would be too large for the kernels. */
    static ActivationLayout of(ModelSpec s, int capacity) throws BackendException {
        return of(s, capacity, SCORES_BUDGET);
    }

    /** As {@link #of(ModelSpec, int)} with another target size of the scores buffer (tests use small ones). */
    static ActivationLayout of(ModelSpec s, int capacity, long scoresBudget) throws BackendException {
        if (capacity < 1) {
            throw new IllegalArgumentException("capacity " + capacity);
        }
        long n = capacity;
        long t = s.tokens();
        long d = s.hiddenSize();
        long size2 = (long) s.inputSize() * s.inputSize();
        long p2 = (long) s.patchSize() * s.patchSize();
        long scoresPerSample = s.numHeads() * t * t;
        int chunk = (int) Math.max(1, Math.min(n, scoresBudget / scoresPerSample));
        Map<Buffer, Long> len = new EnumMap<>(Buffer.class);
        len.put(Buffer.X_IN, n * s.inChannels() * size2);
        len.put(Buffer.T, n);
        len.put(Buffer.Y, n);
        len.put(Buffer.FREQ, n * DitConstants.FREQ_DIM);
        len.put(Buffer.T_HIDDEN, n * d);
        len.put(Buffer.T_OUT, n * d);
        len.put(Buffer.SILU_C, n * d);
        len.put(Buffer.MOD, n * (6L * s.depth() + 2) * d);
        len.put(Buffer.PATCHES, n * t * s.inChannels() * p2);
        len.put(Buffer.X, n * t * d);
        len.put(Buffer.H, n * t * d);
        len.put(Buffer.QKV, n * t * 3 * d);
        len.put(Buffer.HEADS, n * t * 3 * d);
        len.put(Buffer.SCORES, chunk * scoresPerSample);
        len.put(Buffer.ATTN_HEADS, n * t * d);
        len.put(Buffer.ATT, n * t * d);
        len.put(Buffer.TMP, n * t * d);
        len.put(Buffer.MLP, n * t * s.mlpHidden());
        len.put(Buffer.FINAL, n * t * p2 * s.outChannels());
        len.put(Buffer.OUT, n * s.outChannels() * size2);
        len.put(Buffer.RESIDUAL, n * t * d);
        Map<Buffer, long[]> slots = new EnumMap<>(Buffer.class);
        long at = 0;
        for (Buffer b : Buffer.values()) {
            long l = len.get(b);
            if (l > LaunchConfig.MAX_ELEMENTS) {
                throw new BackendException("a batch of " + capacity + " is too large for one forward pass of "
                        + s.name() + " on the cuda backend: buffer " + b + " would hold " + l + " elements (at most "
                        + LaunchConfig.MAX_ELEMENTS + "); use smaller batches");
            }
            slots.put(b, new long[] {at, l});
            at = (at + l + WeightLayout.ALIGN - 1) / WeightLayout.ALIGN * WeightLayout.ALIGN;
        }
        return new ActivationLayout(capacity, chunk, slots, at);
    }

    int capacity() {
        return capacity;
    }

    /** Samples per attention chunk (≤ capacity). */
    int attentionChunk() {
        return attentionChunk;
    }

    long offset(Buffer b) {
        return slots.get(b)[0];
    }

    long length(Buffer b) {
        return slots.get(b)[1];
    }

    long totalElements() {
        return totalElements;
    }

    @Override
    public long totalBytes() {
        return DevicePtr.floatBytes(totalElements);
    }
}
