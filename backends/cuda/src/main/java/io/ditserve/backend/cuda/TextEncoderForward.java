package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.cuda.TextBuffers.Buffer;

/**
 * SD3's text encoders as sequences of kernel launches and matrix products (docs/TEXT_MODELS.md, "Text encoders"),
 * read like the java backend's {@code ClipTextEncoder} and {@code T5TextEncoder}:
 *
 * <ul>
 *   <li>CLIPTextModelWithProjection (reference tools/sd3/clip_text.py): x = token + position embedding; per layer
 *       x += out_proj(attention(LN1(x))) with a causal mask and scale 1/√head_dim, then x += fc2(act(fc1(LN2(x))))
 *       with quick_gelu, the exact GELU or the tanh form; {@link Buffer#HIDDEN} = hidden_states[hiddenLayer];
 *       {@link Buffer#TEXT_EMBEDS} = text_projection(final_layer_norm(x at the pooled rows)).
 *   <li>T5EncoderModel, v1.1 (reference tools/sd3/t5_encoder.py): x = shared[ids]; per block
 *       x += o(attention(RMS(x))) with the relative position bias added to the scores, no scaling, no mask, then
 *       x += wo(gelu_new(wi_0(h)) ⊙ wi_1(h)), h = RMS(x); {@link Buffer#HIDDEN} = final_layer_norm(x). No Linear
 *       has a bias (the {@link TextWeights#ZEROS} slot stands in where a kernel adds one).
 * </ul>
 *
 * It only queues work on a {@link DitOps}: the caller uploads the ids (and CLIP's pooled rows) before and reads
 * {@link Buffer#HIDDEN} (and {@link Buffer#TEXT_EMBEDS}) after. Every sequence's rows are computed alone, so a prompt
 * gets the same result alone and in any batch. CLIP's fc1 with its activation and the attention's head split, chunks
 * and merge are queued as the DiT pass queues them ({@link PassSteps}).
 */
final class TextEncoderForward {
    private final TextEncoderSpec spec;
    private final TextWeights weights;
    private final DevicePtr weightsBase;
    private final KernelArgs args = new KernelArgs();
    private final PassSteps steps = new PassSteps();
    private final boolean clip;
    private final int d;
    private final int tokens;
    private final int heads;
    private final int headDim;
    private final int inner;
    private final int ff;
    private final float eps;
    private final Kernel activation; // CLIP's MLP activation with its fc1 bias

    TextEncoderForward(TextEncoderSpec spec, TextWeights weights, DevicePtr weightsBase) throws BackendException {
        this.spec = spec;
        this.weights = weights;
        this.weightsBase = weightsBase;
        this.clip = spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION;
        this.d = spec.hiddenSize();
        this.tokens = spec.maxTokens();
        this.heads = spec.heads();
        this.headDim = spec.headDim();
        this.inner = heads * headDim;
        this.ff = spec.intermediate();
        this.eps = (float) spec.eps();
        this.activation = clip ? switch (TextEncoderRules.clipActivation(spec)) {
            case QUICK_GELU -> Kernel.BIAS_QUICK_GELU;
            case GELU_ERF -> Kernel.BIAS_GELU_ERF;
            case GELU_TANH -> Kernel.BIAS_GELU;
        } : null;
    }

    /**
     * Queues the pass over the first {@code n} sequences of the buffers. Polls {@code cancel} before each layer and
     * after the last one.
     */
    void run(DitOps ops, TextBuffers buf, DevicePtr base, int n, Cancellation cancel) throws BackendException {
        if (n < 1 || n > buf.capacity()) {
            throw new IllegalArgumentException("batch " + n + " outside 1.." + buf.capacity());
        }
        BufferAddresses<Buffer> b = new BufferAddresses<>(buf::offset, base);
        int rows = n * tokens;
        // sequences per attention chunk: as many as the scores buffer holds
        int chunk = (int) Math.max(1, Math.min(n, buf.length(Buffer.SCORES) / ((long) heads * tokens * tokens)));
        String embedding = clip ? "text_model.embeddings.token_embedding.weight" : TextWeights.T5_EMBEDDING;
        DevicePtr positions = clip ? w(TextEncoderCheckpoint.CLIP_POSITIONS) : w(embedding); // T5: not read
        ops.launch(LaunchConfig.elementwise((long) rows * d), args.reset(Kernel.EMBED_TOKENS)
                .ptr(b.at(Buffer.IDS)).ptr(w(embedding)).ptr(positions).ptr(b.at(Buffer.X))
                .i32(rows * d).i32(d).i32(tokens).i32(clip ? 1 : 0));
        if (clip && spec.hiddenLayer() == 0) {
            copyHidden(ops, b, rows);
        }
        for (int i = 0; i < spec.layers(); i++) {
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
            if (clip) {
                clipLayer(ops, b, i, n, chunk);
                if (i + 1 == spec.hiddenLayer()) {
                    copyHidden(ops, b, rows);
                }
            } else {
                t5Block(ops, b, i, n, chunk);
            }
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        if (clip) { // final_layer_norm is per token: only the pooled rows need it
            ops.launch(LaunchConfig.elementwise((long) n * d), args.reset(Kernel.GATHER_ROWS)
                    .ptr(b.at(Buffer.X)).ptr(b.at(Buffer.POOL_ROWS)).ptr(b.at(Buffer.POOLED)).i32(n * d).i32(d));
            layerNorm(ops, b, Buffer.POOLED, Buffer.POOLED, n, "text_model.final_layer_norm");
            ops.gemm(GemmCall.linear(n, spec.projectionDim(), d), w("text_projection.weight"), b.at(Buffer.POOLED),
                    b.at(Buffer.TEXT_EMBEDS));
        } else {
            ops.launch(LaunchConfig.rows(rows, d), args.reset(Kernel.RMS_NORM).ptr(b.at(Buffer.X))
                    .ptr(b.at(Buffer.HIDDEN)).ptr(w("encoder.final_layer_norm.weight")).i32(d).f32(eps));
        }
    }

    private void copyHidden(DitOps ops, BufferAddresses<Buffer> b, int rows) throws BackendException {
        ops.launch(LaunchConfig.elementwise((long) rows * d), args.reset(Kernel.COPY_VALUES)
                .ptr(b.at(Buffer.X)).ptr(b.at(Buffer.HIDDEN)).i32(rows * d));
    }

    /** text_model.encoder.layers.i on n sequences. */
    private void clipLayer(DitOps ops, BufferAddresses<Buffer> b, int i, int n, int chunk) throws BackendException {
        String p = "text_model.encoder.layers." + i + ".";
        String a = p + "self_attn.";
        int rows = n * tokens;
        layerNorm(ops, b, Buffer.X, Buffer.H, rows, p + "layer_norm1");
        ops.gemm(GemmCall.linear(rows, 3 * inner, d), w(a + "q_proj.weight"), b.at(Buffer.H), b.at(Buffer.QKV));
        attention(ops, b, n, chunk, w(a + "q_proj.bias"));
        ops.gemm(GemmCall.linear(rows, d, inner), w(a + "out_proj.weight"), b.at(Buffer.ATT), b.at(Buffer.TMP));
        residual(ops, b, rows, w(a + "out_proj.bias"));
        layerNorm(ops, b, Buffer.X, Buffer.H, rows, p + "layer_norm2");
        steps.linear(ops, rows, ff, d, w(p + "mlp.fc1.weight"), b.at(Buffer.H), b.at(Buffer.MLP), activation,
                w(p + "mlp.fc1.bias"));
        ops.gemm(GemmCall.linear(rows, d, ff), w(p + "mlp.fc2.weight"), b.at(Buffer.MLP), b.at(Buffer.TMP));
        residual(ops, b, rows, w(p + "mlp.fc2.bias"));
    }

    /** encoder.block.i on n sequences. */
    private void t5Block(DitOps ops, BufferAddresses<Buffer> b, int i, int n, int chunk) throws BackendException {
        String a = "encoder.block." + i + ".layer.0.";
        String f = "encoder.block." + i + ".layer.1.";
        int rows = n * tokens;
        DevicePtr zeros = w(TextWeights.ZEROS);
        ops.launch(LaunchConfig.rows(rows, d), args.reset(Kernel.RMS_NORM).ptr(b.at(Buffer.X)).ptr(b.at(Buffer.H))
                .ptr(w(a + "layer_norm.weight")).i32(d).f32(eps));
        ops.gemm(GemmCall.linear(rows, 3 * inner, d), w(a + "SelfAttention.q.weight"), b.at(Buffer.H),
                b.at(Buffer.QKV));
        attention(ops, b, n, chunk, zeros);
        ops.gemm(GemmCall.linear(rows, d, inner), w(a + "SelfAttention.o.weight"), b.at(Buffer.ATT),
                b.at(Buffer.TMP));
        residual(ops, b, rows, zeros);
        ops.launch(LaunchConfig.rows(rows, d), args.reset(Kernel.RMS_NORM).ptr(b.at(Buffer.X)).ptr(b.at(Buffer.H))
                .ptr(w(f + "layer_norm.weight")).i32(d).f32(eps));
        ops.gemm(GemmCall.linear(rows, 2 * ff, d), w(f + "DenseReluDense.wi_0.weight"), b.at(Buffer.H),
                b.at(Buffer.GATES));
        ops.launch(LaunchConfig.elementwise((long) rows * ff), args.reset(Kernel.GATED_GELU)
                .ptr(b.at(Buffer.GATES)).ptr(b.at(Buffer.MLP)).i32(rows * ff).i32(ff));
        ops.gemm(GemmCall.linear(rows, d, ff), w(f + "DenseReluDense.wo.weight"), b.at(Buffer.MLP), b.at(Buffer.TMP));
        residual(ops, b, rows, zeros);
    }

    /** dst = LayerNorm(src)·weight + bias over {@code rows} rows. */
    private void layerNorm(DitOps ops, BufferAddresses<Buffer> b, Buffer src, Buffer dst, int rows, String prefix)
            throws BackendException {
        ops.launch(LaunchConfig.rows(rows, d), args.reset(Kernel.LAYER_NORM).ptr(b.at(src)).ptr(b.at(dst))
                .ptr(w(prefix + ".weight")).ptr(w(prefix + ".bias")).i32(d).f32(eps));
    }

    /** X += TMP + bias. */
    private void residual(DitOps ops, BufferAddresses<Buffer> b, int rows, DevicePtr bias) throws BackendException {
        ops.launch(LaunchConfig.elementwise((long) rows * d), args.reset(Kernel.ADD_RESIDUAL)
                .ptr(b.at(Buffer.X)).ptr(b.at(Buffer.TMP)).ptr(bias).i32(rows * d).i32(d));
    }

    /**
     * ATT = attention over each sequence from QKV (+ {@code qkvBias}): split into q, k, v [N, heads, T, hd]; per
     * chunk of {@code chunk} sequences S = Q·Kᵀ, then CLIP's causal softmax of S/√hd or T5's softmax of S + position
     * bias; O = S·V; the heads merged back to [N·T, inner].
     */
    private void attention(DitOps ops, BufferAddresses<Buffer> b, int n, int chunk, DevicePtr qkvBias)
            throws BackendException {
        int total = n * tokens * inner;
        steps.splitHeads(ops, b.at(Buffer.QKV), qkvBias, b.at(Buffer.HEADS), n, tokens, heads, headDim);
        DevicePtr q = b.at(Buffer.HEADS);
        DevicePtr k = q.plusFloats(total);
        DevicePtr v = k.plusFloats(total);
        float scale = (float) Math.pow(headDim, -0.5);
        DevicePtr scores = b.at(Buffer.SCORES);
        DevicePtr bias = clip ? null : w(TextWeights.POSITION_BIAS);
        steps.attend(ops, q, k, v, scores, b.at(Buffer.ATTN_HEADS), n, chunk, heads, tokens, headDim, a -> clip
                ? a.reset(Kernel.SOFTMAX_CAUSAL).ptr(scores).i32(tokens).f32(scale)
                : a.reset(Kernel.SOFTMAX_BIAS).ptr(scores).ptr(bias).i32(tokens).i32(heads));
        steps.mergeHeads(ops, b.at(Buffer.ATTN_HEADS), b.at(Buffer.ATT), n, tokens, heads, headDim);
    }

    /** Device address of a weight slot. */
    private DevicePtr w(String name) {
        return weightsBase.plusFloats(weights.offset(name));
    }
}
