package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DitConstants;
import io.ditserve.backend.ModelSpec;
import java.util.function.UnaryOperator;

/**
 * The launch sequences that more than one pass queues the same way ({@link DitForward}, {@link CudaMmditForward},
 * {@link TextEncoderForward}), each written once: a Linear with the kernel that adds its bias (and applies its
 * activation), the patch embedding, timestep sinusoid and final unpatchify of the two transformers, adaLN's modulated
 * LayerNorm and gated residual, and attention's head split, chunked scores-softmax-values and head merge. Like the
 * passes it only queues work on a {@link DitOps}; it owns the {@link KernelArgs} it launches with.
 */
final class PassSteps {
    /**
     * A pass's modulation rows [N, width] at {@code rows}: every adaLN of the pass at once, in D-wide chunks
     * ({@link WeightLayout}, {@link MmditWeights}).
     */
    record Modulation(DevicePtr rows, int width, int d) {}

    private final KernelArgs args = new KernelArgs();

    /**
     * y = x·Wᵀ over {@code rows} rows, W [out, in], as a GEMM without bias; then {@code epilogue} (a kernel of
     * parameters {@code v, bias, total, cols}: ADD_BIAS, BIAS_SILU, BIAS_GELU, ...) adds the bias to y in place and
     * applies its activation.
     */
    void linear(DitOps ops, int rows, int out, int in, DevicePtr weight, DevicePtr x, DevicePtr y, Kernel epilogue,
            DevicePtr bias) throws BackendException {
        ops.gemm(GemmCall.linear(rows, out, in), weight, x, y);
        ops.launch(LaunchConfig.elementwise((long) rows * out), args.reset(epilogue)
                .ptr(y).ptr(bias).i32(rows * out).i32(out));
    }

    /**
     * A transformer's patch embedding of n samples x [N, C_in, H, W]: patchified into {@code patches}
     * [N·T, C_in·p·p], the stride-p convolution as a product with its weight [D, C_in·p·p] into {@code out} [N·T, D],
     * then its bias and the position table {@code pos} [T, D] added.
     */
    void patchEmbed(DitOps ops, ModelSpec spec, int n, DevicePtr x, DevicePtr patches, DevicePtr weight,
            DevicePtr bias, DevicePtr pos, DevicePtr out) throws BackendException {
        int tokens = spec.tokens();
        int d = spec.hiddenSize();
        int rows = n * tokens;
        int p = spec.patchSize();
        int patchLen = spec.inChannels() * p * p;
        ops.launch(LaunchConfig.elementwise((long) rows * patchLen), args.reset(Kernel.PATCHIFY)
                .ptr(x).ptr(patches).i32(rows * patchLen).i32(spec.inChannels()).i32(spec.inputSize()).i32(p));
        ops.gemm(GemmCall.linear(rows, d, patchLen), weight, patches, out);
        ops.launch(LaunchConfig.elementwise((long) rows * d), args.reset(Kernel.ADD_BIAS_POS)
                .ptr(out).ptr(bias).ptr(pos).i32(rows * d).i32(d).i32(tokens));
    }

    /**
     * The timestep sinusoid [N, 256] of n times {@code t} [N] from the 128 frequencies at {@code freqs}
     * ({@link DitConstants#timestepFrequencies}), the input of a transformer's timestep MLP.
     */
    void timestepSinusoid(DitOps ops, int n, DevicePtr t, DevicePtr freqs, DevicePtr out) throws BackendException {
        ops.launch(LaunchConfig.elementwise((long) n * DitConstants.FREQ_HALF), args.reset(Kernel.TIMESTEP_EMBEDDING)
                .ptr(t).ptr(freqs).ptr(out).i32(n * DitConstants.FREQ_HALF));
    }

    /**
     * A transformer's output layer on n samples' normalised tokens {@code h} [N·T, D]: its Linear [p·p·C_out, D]
     * into {@code patches} [N·T, p·p·C_out], then unpatchified with the Linear's bias into {@code out}
     * [N, C_out, H, W].
     */
    void unpatchify(DitOps ops, ModelSpec spec, int n, DevicePtr h, DevicePtr weight, DevicePtr bias,
            DevicePtr patches, DevicePtr out) throws BackendException {
        int p = spec.patchSize();
        int size = spec.inputSize();
        ops.gemm(GemmCall.linear(n * spec.tokens(), p * p * spec.outChannels(), spec.hiddenSize()), weight, h,
                patches);
        int outTotal = n * spec.outChannels() * size * size;
        ops.launch(LaunchConfig.elementwise(outTotal), args.reset(Kernel.UNPATCHIFY)
                .ptr(patches).ptr(bias).ptr(out).i32(outTotal).i32(spec.outChannels()).i32(size).i32(p));
    }

    /**
     * dst = LN(src)·(1 + mod[scaleOff..]) + mod[shiftOff..] over n samples of {@code perSample} rows each, every
     * sample with its own modulation row.
     */
    void lnModulate(DitOps ops, Modulation mod, DevicePtr src, DevicePtr dst, int n, int perSample, int shiftOff,
            int scaleOff) throws BackendException {
        ops.launch(LaunchConfig.rows(n * perSample, mod.d()), args.reset(Kernel.LN_MODULATE)
                .ptr(src).ptr(dst).ptr(mod.rows())
                .i32(mod.d()).i32(perSample).i32(mod.width()).i32(shiftOff).i32(scaleOff));
    }

    /** x += mod[gateOff..]·(v + bias) over n samples of {@code perSample} rows each. */
    void gatedResidual(DitOps ops, Modulation mod, DevicePtr x, DevicePtr v, DevicePtr bias, int n, int perSample,
            int gateOff) throws BackendException {
        int total = n * perSample * mod.d();
        ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.GATED_RESIDUAL)
                .ptr(x).ptr(v).ptr(bias).ptr(mod.rows())
                .i32(total).i32(mod.d()).i32(perSample).i32(mod.width()).i32(gateOff));
    }

    /**
     * The q | k | v rows [N·T, 3·heads·hd] of n sequences of T tokens, + {@code bias}, split into q, k and v, each
     * [N, heads, T, hd], back to back at {@code out}.
     */
    void splitHeads(DitOps ops, DevicePtr qkv, DevicePtr bias, DevicePtr out, int n, int tokens, int heads, int hd)
            throws BackendException {
        int total = n * tokens * heads * hd;
        ops.launch(LaunchConfig.elementwise(3L * total), args.reset(Kernel.QKV_SPLIT)
                .ptr(qkv).ptr(bias).ptr(out).i32(3 * total).i32(tokens).i32(heads).i32(hd));
    }

    /** The attention output per head [N, heads, T, hd] with its heads merged back into rows [N·T, heads·hd]. */
    void mergeHeads(DitOps ops, DevicePtr heads0, DevicePtr out, int n, int tokens, int heads, int hd)
            throws BackendException {
        int total = n * tokens * heads * hd;
        ops.launch(LaunchConfig.elementwise(total), args.reset(Kernel.HEAD_MERGE)
                .ptr(heads0).ptr(out).i32(total).i32(tokens).i32(heads).i32(hd));
    }

    /**
     * out = softmax(q·kᵀ)·v for every (sequence, head) pair of n sequences of {@code seq} rows (q, k, v and out
     * [n, heads, seq, hd]), {@code chunk} sequences at a time: S = Q·Kᵀ into {@code scores}
     * [chunk·heads, seq, seq], then the row softmax of S that {@code softmax} sets up on the arguments it is given
     * (the kernel with its scale, causal mask or position bias), launched over the chunk's pairs·seq rows; then
     * O = S·V.
     */
    void attend(DitOps ops, DevicePtr q, DevicePtr k, DevicePtr v, DevicePtr scores, DevicePtr out, int n, int chunk,
            int heads, int seq, int hd, UnaryOperator<KernelArgs> softmax) throws BackendException {
        long perSequence = (long) heads * seq * hd; // floats of one sequence in q, k, v and out
        for (int s0 = 0; s0 < n; s0 += chunk) {
            int pairs = Math.min(chunk, n - s0) * heads;
            long off = s0 * perSequence;
            ops.gemm(GemmCall.attentionScores(seq, hd, pairs), k.plusFloats(off), q.plusFloats(off), scores);
            ops.launch(LaunchConfig.rows(pairs * seq, seq), softmax.apply(args));
            ops.gemm(GemmCall.attentionValues(seq, hd, pairs), v.plusFloats(off), scores, out.plusFloats(off));
        }
    }
}
