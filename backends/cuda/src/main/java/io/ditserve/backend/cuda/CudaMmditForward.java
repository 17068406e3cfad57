package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DitConstants;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.cuda.MmditBuffers.Buffer;

/**
 * SD3's MMDiT forward pass (docs/TEXT_MODELS.md, "MMDiT"; reference tools/sd3/mmdit.py) as a sequence of kernel
 * launches and matrix products, read top to bottom like the java backend's {@code MmditForward}: SD3-medium's
 * structure, and SD3.5's RMS qk-norm and MMDiT-X dual attention. It only queues work on a {@link DitOps}: the caller
 * uploads x, t, the context and the pooled vectors to their buffers before and reads {@link Buffer#OUT} after.
 *
 * <p>Every Linear is a cuBLAS GEMM without bias; the bias is added by the kernel that consumes the product. Every
 * adaLN of the pass is one product ({@link MmditWeights}), and so are a stream's q, k and v. Joint attention runs
 * over sequences of L = T + C rows per (sample, head), the image tokens then the prompt's, built by scattering
 * both streams' q, k, v into one buffer; each stream's output rows are gathered back after. Each sample has its
 * own context rows and modulation row, so the samples of a batch may carry different prompts and times. The
 * sequences it queues as the DiT pass does (patch embedding, Linear + bias kernel, modulated LayerNorm, gated
 * residual, attention chunks, unpatchify) are {@link PassSteps}'.
 */
final class CudaMmditForward {
    private final ModelSpec spec;
    private final MmditWeights weights;
    private final DevicePtr weightsBase;
    private final KernelArgs args = new KernelArgs();
    private final PassSteps steps = new PassSteps();
    private final int d;
    private final int tokens;
    private final int heads;
    private final int headDim;
    private final int modWidth;
    /** RMS qk-norm eps (diffusers' RMSNorm in SD3.5's attention). */
    static final float RMS_EPS = 1e-6f;

    CudaMmditForward(ModelSpec spec, MmditWeights weights, DevicePtr weightsBase) {
        this.spec = spec;
        this.weights = weights;
        this.weightsBase = weightsBase;
        this.d = spec.hiddenSize();
        this.tokens = spec.tokens();
        this.heads = spec.numHeads();
        this.headDim = spec.headDim();
        this.modWidth = weights.modulationWidth();
    }

    /** One stream's part of an attention: its q | k | v rows and their bias, and where its output goes. */
    private record Stream(DevicePtr qkv, DevicePtr bias, int tokens, DevicePtr out) {}

    /**
     * Queues the pass over the first {@code n} samples of the buffers with {@code ctx} context tokens each. Polls
     * {@code cancel} before each block and before norm_out ({@code depth + 1} polls), as the other backends do.
     */
    void run(DitOps ops, MmditBuffers buf, DevicePtr base, int n, int ctx, Cancellation cancel)
            throws BackendException {
        if (n < 1 || n > buf.capacity() || ctx < 0 || ctx > buf.contextCapacity()) {
            throw new IllegalArgumentException("batch " + n + " with " + ctx + " context tokens outside "
                    + buf.capacity() + " × " + buf.contextCapacity());
        }
        BufferAddresses<Buffer> b = new BufferAddresses<>(buf::offset, base);
        ModelSpec.TextConditioning text = spec.text();
        PassSteps.Modulation mod = new PassSteps.Modulation(b.at(Buffer.MOD), modWidth, d);
        long scoresLength = buf.length(Buffer.SCORES); // what bounds the attention chunks

        // 1. pos_embed: the patch convolution as a product, + its bias and the cropped position table
        steps.patchEmbed(ops, spec, n, b.at(Buffer.X_IN), b.at(Buffer.PATCHES), w("pos_embed.proj.weight"),
                w("pos_embed.proj.bias"), w(MmditWeights.POS), b.at(Buffer.X));

        // 2. SiLU(temb), temb = timestep_embedder(sinusoid(t)) + text_embedder(pooled): the input of every adaLN
        String te = "time_text_embed.timestep_embedder.";
        String pe = "time_text_embed.text_embedder.";
        steps.timestepSinusoid(ops, n, b.at(Buffer.T), w(MmditWeights.FREQS), b.at(Buffer.FREQ));
        steps.linear(ops, n, d, DitConstants.FREQ_DIM, w(te + "linear_1.weight"), b.at(Buffer.FREQ),
                b.at(Buffer.T_HIDDEN), Kernel.BIAS_SILU, w(te + "linear_1.bias"));
        ops.gemm(GemmCall.linear(n, d, d), w(te + "linear_2.weight"), b.at(Buffer.T_HIDDEN), b.at(Buffer.T_OUT));
        steps.linear(ops, n, d, text.pooledProjectionDim(), w(pe + "linear_1.weight"), b.at(Buffer.POOLED_IN),
                b.at(Buffer.P_HIDDEN), Kernel.BIAS_SILU, w(pe + "linear_1.bias"));
        ops.gemm(GemmCall.linear(n, d, d), w(pe + "linear_2.weight"), b.at(Buffer.P_HIDDEN), b.at(Buffer.P_OUT));
        ops.launch(LaunchConfig.elementwise((long) n * d), args.reset(Kernel.TEMB_SILU)
                .ptr(b.at(Buffer.T_OUT)).ptr(w(te + "linear_2.bias")).ptr(b.at(Buffer.P_OUT))
                .ptr(w(pe + "linear_2.bias")).ptr(b.at(Buffer.SILU_C)).i32(n * d).i32(d));
        // every adaLN of the pass at once: MOD [N, modulationWidth]
        steps.linear(ops, n, modWidth, d, weightsBase.plusFloats(weights.modulationWeightOffset()),
                b.at(Buffer.SILU_C), b.at(Buffer.MOD), Kernel.ADD_BIAS,
                weightsBase.plusFloats(weights.modulationBiasOffset()));

        // 3. context_embedder
        if (ctx > 0) {
            steps.linear(ops, n * ctx, d, text.jointAttentionDim(), w("context_embedder.weight"),
                    b.at(Buffer.CONTEXT_IN), b.at(Buffer.CTX), Kernel.ADD_BIAS, w("context_embedder.bias"));
        }

        // 4. the blocks
        for (int i = 0; i < spec.depth(); i++) {
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
            block(ops, b, mod, i, n, ctx, scoresLength);
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }

        // 5. norm_out: LN(x)·(1 + scale) + shift, scale first; proj_out; 6. unpatchify (+ proj_out's bias)
        int fin = weights.finalModOffset();
        steps.lnModulate(ops, mod, b.at(Buffer.X), b.at(Buffer.H), n, tokens, fin + d, fin);
        steps.unpatchify(ops, spec, n, b.at(Buffer.H), w("proj_out.weight"), w("proj_out.bias"), b.at(Buffer.FINAL),
                b.at(Buffer.OUT));
    }

    /**
     * transformer_blocks.i on n samples with ctx context tokens each (a JointTransformerBlock): the order of the
     * java backend's block, which is diffusers'.
     */
    private void block(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, int i, int n, int ctx,
            long scoresLength) throws BackendException {
        String blk = "transformer_blocks." + i + ".";
        boolean last = i == spec.depth() - 1; // context_pre_only: the context output is dropped
        boolean dual = spec.text().dualAttentionLayers().contains(i);
        int rows = n * tokens;
        int crows = n * ctx;
        int im = weights.imageModOffset(i);
        int cm = weights.contextModOffset(i);
        lnModulate(ops, b, mod, Buffer.X, Buffer.H, n, tokens, im, im + d);
        if (dual) { // attn2 reads the block's input: LN(x)·(1 + scale_msa2) + shift_msa2
            lnModulate(ops, b, mod, Buffer.X, Buffer.H2, n, tokens, im + 6 * d, im + 7 * d);
        }
        if (ctx > 0) { // the last block's context norm is AdaLayerNormContinuous: scale | shift
            lnModulate(ops, b, mod, Buffer.CTX, Buffer.HC, n, ctx, last ? cm + d : cm, last ? cm : cm + d);
        }
        // joint attention over [image ; context]; x += gate_msa·to_out.0(image rows)
        String a = blk + "attn.";
        ops.gemm(GemmCall.linear(rows, 3 * d, d), w(a + "to_q.weight"), b.at(Buffer.H), b.at(Buffer.QKV));
        Stream context = null;
        if (ctx > 0) {
            ops.gemm(GemmCall.linear(crows, 3 * d, d), w(a + "add_q_proj.weight"), b.at(Buffer.HC),
                    b.at(Buffer.QKV_C));
            context = new Stream(b.at(Buffer.QKV_C), w(a + "add_q_proj.bias"), ctx, last ? null : b.at(Buffer.ATT_C));
        }
        attention(ops, b, n, scoresLength, new Stream(b.at(Buffer.QKV), w(a + "to_q.bias"), tokens, b.at(Buffer.ATT)),
                context, a, "norm_q", "norm_k", "norm_added_q", "norm_added_k");
        ops.gemm(GemmCall.linear(rows, d, d), w(a + "to_out.0.weight"), b.at(Buffer.ATT), b.at(Buffer.TMP));
        gatedResidual(ops, b, mod, Buffer.X, Buffer.TMP, w(a + "to_out.0.bias"), n, tokens, im + 2 * d);
        if (dual) { // x += gate_msa2·attn2(h2), image tokens only
            String a2 = blk + "attn2.";
            ops.gemm(GemmCall.linear(rows, 3 * d, d), w(a2 + "to_q.weight"), b.at(Buffer.H2), b.at(Buffer.QKV));
            attention(ops, b, n, scoresLength, new Stream(b.at(Buffer.QKV), w(a2 + "to_q.bias"), tokens,
                    b.at(Buffer.ATT)), null, a2, "norm_q", "norm_k", null, null);
            ops.gemm(GemmCall.linear(rows, d, d), w(a2 + "to_out.0.weight"), b.at(Buffer.ATT), b.at(Buffer.TMP));
            gatedResidual(ops, b, mod, Buffer.X, Buffer.TMP, w(a2 + "to_out.0.bias"), n, tokens, im + 8 * d);
        }
        // x += gate_mlp·ff(LN(x)·(1 + scale_mlp) + shift_mlp)
        lnModulate(ops, b, mod, Buffer.X, Buffer.H, n, tokens, im + 3 * d, im + 4 * d);
        feedForward(ops, b, blk + "ff.", Buffer.H, Buffer.TMP, rows);
        gatedResidual(ops, b, mod, Buffer.X, Buffer.TMP, w(blk + "ff.net.2.bias"), n, tokens, im + 5 * d);
        if (last || ctx == 0) {
            return;
        }
        // the context stream the same way, with its own modulation, to_add_out and ff_context
        ops.gemm(GemmCall.linear(crows, d, d), w(a + "to_add_out.weight"), b.at(Buffer.ATT_C), b.at(Buffer.TMP_C));
        gatedResidual(ops, b, mod, Buffer.CTX, Buffer.TMP_C, w(a + "to_add_out.bias"), n, ctx, cm + 2 * d);
        lnModulate(ops, b, mod, Buffer.CTX, Buffer.HC, n, ctx, cm + 3 * d, cm + 4 * d);
        feedForward(ops, b, blk + "ff_context.", Buffer.HC, Buffer.TMP_C, crows);
        gatedResidual(ops, b, mod, Buffer.CTX, Buffer.TMP_C, w(blk + "ff_context.net.2.bias"), n, ctx, cm + 5 * d);
    }

    /** dst = LN(src)·(1 + mod[scaleOff..]) + mod[shiftOff..], per sample of {@code perSample} rows. */
    private void lnModulate(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, Buffer src, Buffer dst,
            int n, int perSample, int shiftOff, int scaleOff) throws BackendException {
        steps.lnModulate(ops, mod, b.at(src), b.at(dst), n, perSample, shiftOff, scaleOff);
    }

    /** x += mod[gateOff..]·(v + bias), per sample of {@code perSample} rows. */
    private void gatedResidual(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, Buffer x, Buffer v,
            DevicePtr bias, int n, int perSample, int gateOff) throws BackendException {
        steps.gatedResidual(ops, mod, b.at(x), b.at(v), bias, n, perSample, gateOff);
    }

    /** out = net.2(GELU_tanh(net.0.proj(in))) without net.2's bias (the gated residual adds it). */
    private void feedForward(DitOps ops, BufferAddresses<Buffer> b, String ff, Buffer in, Buffer out, int rows)
            throws BackendException {
        steps.linear(ops, rows, 4 * d, d, w(ff + "net.0.proj.weight"), b.at(in), b.at(Buffer.MLP), Kernel.BIAS_GELU,
                w(ff + "net.0.proj.bias"));
        ops.gemm(GemmCall.linear(rows, d, 4 * d), w(ff + "net.2.weight"), b.at(Buffer.MLP), b.at(out));
    }

    /**
     * softmax(q·kᵀ/√hd)·v per sample and head over the sequence [image ; context] (no mask): both streams' q, k, v
     * (+ their biases) scattered into {@link Buffer#HEADS} as sequences of L = T + C rows; with RMS qk-norm each head
     * of q and k normalised with its stream's weights ({@code prefix + normQ} etc.; the context's are the
     * {@code *B} names); then per chunk of samples (as many as {@code scoresLength} floats of scores hold)
     * S = Q·Kᵀ, softmax over each row of S, O = S·V; the image rows gathered into {@code image.out}, and the context
     * rows into {@code context.out} unless it is null (the last block drops them). {@code context} null: image-only
     * self-attention (attn2).
     */
    private void attention(DitOps ops, BufferAddresses<Buffer> b, int n, long scoresLength, Stream image,
            Stream context, String prefix, String normQ, String normK, String normQB, String normKB)
            throws BackendException {
        int ctx = context == null ? 0 : context.tokens();
        int seq = tokens + ctx;
        long partLen = (long) n * heads * seq * headDim;
        DevicePtr q = b.at(Buffer.HEADS);
        DevicePtr k = q.plusFloats(partLen);
        DevicePtr v = k.plusFloats(partLen);
        split(ops, image, n, seq, 0, q, partLen);
        if (context != null) {
            split(ops, context, n, seq, tokens, q, partLen);
        }
        if (spec.text().rmsQkNorm()) {
            int headRows = n * heads * seq;
            DevicePtr qa = w(prefix + normQ + ".weight");
            DevicePtr ka = w(prefix + normK + ".weight");
            DevicePtr qb = context == null ? qa : w(prefix + normQB + ".weight");
            DevicePtr kb = context == null ? ka : w(prefix + normKB + ".weight");
            ops.launch(LaunchConfig.rows(headRows, headDim), args.reset(Kernel.HEAD_RMS_NORM)
                    .ptr(q).ptr(qa).ptr(qb).i32(headDim).i32(seq).i32(tokens).f32(RMS_EPS));
            ops.launch(LaunchConfig.rows(headRows, headDim), args.reset(Kernel.HEAD_RMS_NORM)
                    .ptr(k).ptr(ka).ptr(kb).i32(headDim).i32(seq).i32(tokens).f32(RMS_EPS));
        }
        float scale = (float) Math.pow(headDim, -0.5); // head_dim ** -0.5, rounded to float like a Python scalar
        int chunk = (int) Math.max(1, Math.min(n, scoresLength / ((long) heads * seq * seq)));
        DevicePtr scores = b.at(Buffer.SCORES);
        steps.attend(ops, q, k, v, scores, b.at(Buffer.ATTN_HEADS), n, chunk, heads, seq, headDim,
                a -> a.reset(Kernel.SOFTMAX_ROWS).ptr(scores).i32(seq).f32(scale));
        merge(ops, b, image.out(), n, tokens, seq, 0);
        if (context != null && context.out() != null) {
            merge(ops, b, context.out(), n, ctx, seq, tokens);
        }
    }

    /** One stream's q | k | v rows (+ bias) into rows seqOff.. of the sequences of q, k and v. */
    private void split(DitOps ops, Stream s, int n, int seq, int seqOff, DevicePtr heads0, long partLen)
            throws BackendException {
        int total = n * s.tokens() * 3 * d;
        ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.QKV_SPLIT_SEQ)
                .ptr(s.qkv()).ptr(s.bias()).ptr(heads0).i32(total).i32(s.tokens()).i32(heads).i32(headDim)
                .i32(seq).i32(seqOff).i32(Math.toIntExact(partLen)));
    }

    /** Rows seqOff .. seqOff + streamTokens − 1 of the attention output, heads merged, into {@code out}. */
    private void merge(DitOps ops, BufferAddresses<Buffer> b, DevicePtr out, int n, int streamTokens, int seq,
            int seqOff) throws BackendException {
        int total = n * streamTokens * d;
        ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.HEAD_MERGE_SEQ)
                .ptr(b.at(Buffer.ATTN_HEADS)).ptr(out).i32(total).i32(streamTokens).i32(heads).i32(headDim)
                .i32(seq).i32(seqOff));
    }

    /** Device address of a weight slot. */
    private DevicePtr w(String name) {
        return weightsBase.plusFloats(weights.offset(name));
    }
}
