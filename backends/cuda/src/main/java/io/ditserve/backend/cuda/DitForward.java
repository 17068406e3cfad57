package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;

/**
 * The DiT forward pass as a sequence of kernel launches and matrix products (docs/DIT_MODEL.md, "Forward pass";
 * tools/dit/model.py is the reference), read top to bottom like the reference's {@code DiT.forward}. It only queues
 * work on a {@link DitOps}: the caller uploads x, t and y to their buffers before (with a step cache, also the
 * residuals the reusing samples add, to {@link Buffer#RESIDUAL}) and reads {@link Buffer#OUT} (and the stored
 * residuals) after.
 *
 * <p>Weights are addressed through {@link WeightLayout}, activations through {@link ActivationLayout}; both hold
 * element offsets, turned into device addresses with {@link DevicePtr#plusFloats}. Every Linear is a cuBLAS GEMM
 * without bias, and its bias is added by the element-wise kernel that consumes its output (bias + activation,
 * bias + gated residual, ...). The sequences it queues as the other passes do (the patch embedding, a Linear with
 * its bias kernel, adaLN's modulated LayerNorm and gated residual, attention's head split, chunks and merge) are
 * {@link PassSteps}'.
 */
final class DitForward {
    private final ModelSpec spec;
    private final WeightLayout weights;
    private final DevicePtr weightsBase;
    private final KernelArgs args = new KernelArgs();
    private final PassSteps steps = new PassSteps();

    /** {@code weightsBase}: device address of the weight allocation laid out by {@code weights}. */
    DitForward(ModelSpec spec, WeightLayout weights, DevicePtr weightsBase) {
        this.spec = spec;
        this.weights = weights;
        this.weightsBase = weightsBase;
    }

    /**
     * Queues one plain pass over the first {@code n} samples of the input buffers. Polls {@code cancel} before each
     * block and before the final layer ({@code depth + 1} polls), as the other backends do.
     */
    void run(DitOps ops, ActivationLayout act, DevicePtr actBase, int n, Cancellation cancel)
            throws BackendException {
        run(ops, act, actBase, n, n, 0, cancel);
    }

    /**
     * Queues one pass with step caching (docs/STEP_CACHE.md), the samples ordered by what they do with the cached
     * span, blocks {@link StepCache#FIRST_CACHED_BLOCK}..depth−1: samples {@code 0..storing−1} run it and store
     * their residual in {@link Buffer#RESIDUAL}, samples {@code storing..running−1} run it, samples
     * {@code running..n−1} skip it and add the residual they find in {@link Buffer#RESIDUAL} (uploaded by the
     * caller). The span's blocks run on the first {@code running} samples only; {@code running = n, storing = 0} is
     * the plain pass, launch for launch. Polls {@code cancel} before block 0, before each block of the span when any
     * sample runs it, and before the final layer.
     */
    void run(DitOps ops, ActivationLayout act, DevicePtr actBase, int n, int running, int storing,
            Cancellation cancel) throws BackendException {
        if (n < 1 || n > act.capacity()) {
            throw new IllegalArgumentException("batch " + n + " outside 1.." + act.capacity());
        }
        if (storing < 0 || storing > running || running > n) {
            throw new IllegalArgumentException("step cache: " + storing + " storing and " + running
                    + " running samples of " + n);
        }
        if (running < n && spec.depth() <= StepCache.FIRST_CACHED_BLOCK) {
            throw new IllegalArgumentException("model " + spec.name() + " has no blocks to cache");
        }
        BufferAddresses<Buffer> b = new BufferAddresses<>(act::offset, actBase);
        final int tokens = spec.tokens();
        final int d = spec.hiddenSize();
        final int modWidth = weights.modulationWidth();
        PassSteps.Modulation mod = new PassSteps.Modulation(b.at(Buffer.MOD), modWidth, d);

        // 1. patchify; the stride-p convolution is a matrix product with the weight [D, C_in·p·p]; + pos_embed
        steps.patchEmbed(ops, spec, n, b.at(Buffer.X_IN), b.at(Buffer.PATCHES), w("x_embedder.proj.weight"),
                w("x_embedder.proj.bias"), w("pos_embed"), b.at(Buffer.X));

        // 2-3. c = t_embedder(t) + y_embedder(y); only SiLU(c) is used, by every adaLN
        steps.timestepSinusoid(ops, n, b.at(Buffer.T), w(WeightLayout.FREQS), b.at(Buffer.FREQ));
        steps.linear(ops, n, d, DitConstants.FREQ_DIM, w("t_embedder.mlp.0.weight"), b.at(Buffer.FREQ),
                b.at(Buffer.T_HIDDEN), Kernel.BIAS_SILU, w("t_embedder.mlp.0.bias"));
        ops.gemm(GemmCall.linear(n, d, d), w("t_embedder.mlp.2.weight"), b.at(Buffer.T_HIDDEN),
                b.at(Buffer.T_OUT));
        ops.launch(LaunchConfig.elementwise((long) n * d), args.reset(Kernel.CONDITION)
                .ptr(b.at(Buffer.T_OUT)).ptr(w("t_embedder.mlp.2.bias")).ptr(w("y_embedder.embedding_table.weight"))
                .ptr(b.at(Buffer.Y)).ptr(b.at(Buffer.SILU_C)).i32(n * d).i32(d));

        // every adaLN_modulation of the pass at once: mod [N, (6·depth + 2)·D] (WeightLayout packs the weights)
        steps.linear(ops, n, modWidth, d, weightsBase.plusFloats(weights.modulationWeightOffset()),
                b.at(Buffer.SILU_C), b.at(Buffer.MOD), Kernel.ADD_BIAS,
                weightsBase.plusFloats(weights.modulationBiasOffset()));

        // 4. blocks; block 0 for every sample, the cached span (blocks 1..) for the samples that run it
        final int width = tokens * d; // floats of one sample in X and RESIDUAL
        for (int i = 0; i < spec.depth(); i++) {
            int samples = i < StepCache.FIRST_CACHED_BLOCK ? n : running;
            if (samples == 0) {
                break; // every sample reuses a residual: the span is skipped
            }
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
            if (i == StepCache.FIRST_CACHED_BLOCK && storing > 0) {
                // the storing samples' residual starts as their input to the span
                ops.launch(LaunchConfig.elementwise((long) storing * width), args.reset(Kernel.COPY_VALUES)
                        .ptr(b.at(Buffer.X)).ptr(b.at(Buffer.RESIDUAL)).i32(storing * width));
            }
            block(ops, b, mod, act, i, samples);
        }
        if (storing > 0) {
            // residual = x after the span − x before it
            ops.launch(LaunchConfig.elementwise((long) storing * width), args.reset(Kernel.SPAN_RESIDUAL)
                    .ptr(b.at(Buffer.X)).ptr(b.at(Buffer.RESIDUAL)).i32(storing * width));
        }
        if (running < n) {
            // the samples that skipped the span: x = x before the span + their residual
            long off = (long) running * width;
            int total = (n - running) * width;
            ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.ADD_BIAS)
                    .ptr(b.at(Buffer.X).plusFloats(off)).ptr(b.at(Buffer.RESIDUAL).plusFloats(off))
                    .i32(total).i32(total));
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }

        // 5. final layer: LN(x)·(1 + scale) + shift, then final_layer.linear; 6. unpatchify (+ the linear's bias)
        int fin = weights.finalModOffset();
        lnModulate(ops, b, mod, n, fin, fin + d);
        steps.unpatchify(ops, spec, n, b.at(Buffer.H), w("final_layer.linear.weight"), w("final_layer.linear.bias"),
                b.at(Buffer.FINAL), b.at(Buffer.OUT));
    }

    /** Block i on the first n samples (their rows of X, H, ..., and of MOD). */
    private void block(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, ActivationLayout act, int i,
            int n) throws BackendException {
        final int d = spec.hiddenSize();
        final int rows = n * spec.tokens();
        String blk = "blocks." + i + ".";
        int m = weights.blockModOffset(i); // shift1, scale1, gate1, shift2, scale2, gate2 at m + k·D
        // h = LN(x)·(1 + scale1) + shift1; x += gate1 · attn.proj(attention(attn.qkv(h)))
        lnModulate(ops, b, mod, n, m, m + d);
        ops.gemm(GemmCall.linear(rows, 3 * d, d), w(blk + "attn.qkv.weight"), b.at(Buffer.H), b.at(Buffer.QKV));
        attention(ops, b, act, n, w(blk + "attn.qkv.bias"), spec.qkNorm() ? blk : null);
        ops.gemm(GemmCall.linear(rows, d, d), w(blk + "attn.proj.weight"), b.at(Buffer.ATT), b.at(Buffer.TMP));
        gatedResidual(ops, b, mod, n, w(blk + "attn.proj.bias"), m + 2 * d);
        // h = LN(x)·(1 + scale2) + shift2; x += gate2 · mlp.fc2(GELU_tanh(mlp.fc1(h)))
        lnModulate(ops, b, mod, n, m + 3 * d, m + 4 * d);
        int hidden = spec.mlpHidden();
        steps.linear(ops, rows, hidden, d, w(blk + "mlp.fc1.weight"), b.at(Buffer.H), b.at(Buffer.MLP),
                Kernel.BIAS_GELU, w(blk + "mlp.fc1.bias"));
        ops.gemm(GemmCall.linear(rows, d, hidden), w(blk + "mlp.fc2.weight"), b.at(Buffer.MLP), b.at(Buffer.TMP));
        gatedResidual(ops, b, mod, n, w(blk + "mlp.fc2.bias"), m + 5 * d);
    }

    /** H = LN(X)·(1 + mod[scaleOff..]) + mod[shiftOff..], per sample. */
    private void lnModulate(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, int n, int shiftOff,
            int scaleOff) throws BackendException {
        steps.lnModulate(ops, mod, b.at(Buffer.X), b.at(Buffer.H), n, spec.tokens(), shiftOff, scaleOff);
    }

    /** X += mod[gateOff..] · (TMP + bias), per sample. */
    private void gatedResidual(DitOps ops, BufferAddresses<Buffer> b, PassSteps.Modulation mod, int n, DevicePtr bias,
            int gateOff) throws BackendException {
        steps.gatedResidual(ops, mod, b.at(Buffer.X), b.at(Buffer.TMP), bias, n, spec.tokens(), gateOff);
    }

    /**
     * ATT = softmax(q·kᵀ/√hd)·v per sample and head, from QKV (without its bias, added here): split into q, k, v
     * [N, heads, T, hd], q and k normalised per head with qk-norm, then per chunk of samples S = Q·Kᵀ, softmax over each row of S, O = S·V, and the heads
     * merged back to [N·T, D].
     */
    private void attention(DitOps ops, BufferAddresses<Buffer> b, ActivationLayout act, int n, DevicePtr qkvBias,
            String qkNormBlock) throws BackendException {
        int tokens = spec.tokens();
        int heads = spec.numHeads();
        int hd = spec.headDim();
        int d = spec.hiddenSize();
        int total = n * tokens * d;
        steps.splitHeads(ops, b.at(Buffer.QKV), qkvBias, b.at(Buffer.HEADS), n, tokens, heads, hd);
        DevicePtr q = b.at(Buffer.HEADS);
        DevicePtr k = q.plusFloats(total);
        DevicePtr v = k.plusFloats(total);
        if (qkNormBlock != null) { // qk-norm: LayerNorm over head_dim of every (sample, head, token) row of q and k
            int headRows = n * heads * tokens;
            ops.launch(LaunchConfig.rows(headRows, hd), args.reset(Kernel.HEAD_NORM).ptr(q)
                    .ptr(w(qkNormBlock + "attn.q_norm.weight")).ptr(w(qkNormBlock + "attn.q_norm.bias")).i32(hd));
            ops.launch(LaunchConfig.rows(headRows, hd), args.reset(Kernel.HEAD_NORM).ptr(k)
                    .ptr(w(qkNormBlock + "attn.k_norm.weight")).ptr(w(qkNormBlock + "attn.k_norm.bias")).i32(hd));
        }
        float scale = (float) Math.pow(hd, -0.5); // head_dim ** -0.5, rounded to float like a Python scalar
        DevicePtr scores = b.at(Buffer.SCORES);
        steps.attend(ops, q, k, v, scores, b.at(Buffer.ATTN_HEADS), n, act.attentionChunk(), heads, tokens, hd,
                a -> a.reset(Kernel.SOFTMAX_ROWS).ptr(scores).i32(tokens).f32(scale));
        steps.mergeHeads(ops, b.at(Buffer.ATTN_HEADS), b.at(Buffer.ATT), n, tokens, heads, hd);
    }

    /** Device address of a weight slot. */
    private DevicePtr w(String name) {
        return weightsBase.plusFloats(weights.offset(name));
    }
}
