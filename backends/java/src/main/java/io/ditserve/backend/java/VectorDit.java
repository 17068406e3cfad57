package io.ditserve.backend.java;

import static io.ditserve.backend.java.MatMul.L;
import static io.ditserve.backend.java.MatMul.S;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.java.VectorLayers.Packed;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorOperators;

/**
 * The fast path: the same forward pass as {@link ScalarDit}, with every matrix product on {@link MatMul} (weights
 * packed once at load, each as it is read from the checkpoint, so only the packed copy is ever held), split over the threads of a {@link Parallel} pool that this engine owns. Activations
 * live in buffers sized at load for a batch of {@code java.max_batch} samples; a larger batch replaces them once
 * with bigger ones that later calls reuse, so a sampling loop allocates nothing per step.
 */
final class VectorDit implements DitEngine {
    private record PackedBlock(Packed adaLN, Packed qkv, Packed proj, Packed fc1, Packed fc2, DitMath.QkNorm qkNorm) {}

    private final ModelSpec spec;
    private final int d;
    private final int tokens;
    private final int heads;
    private final int headDim;
    private final float attentionScale; // 1/√head_dim, rounded like the reference's head_dim ** -0.5
    private final Parallel parallel;

    private final float[] posEmbed; // pos_embed (1, T, D)
    private final Packed xEmbedder; // x_embedder.proj (D, C_in·p·p)
    private final Packed tMlp0; // t_embedder.mlp.0 (D, 256)
    private final Packed tMlp2; // t_embedder.mlp.2 (D, D)
    private final float[] yEmbedding; // y_embedder.embedding_table.weight (num_classes + 1, D)
    // blocks.i: adaLN_modulation.1 (6D, D), attn.qkv (3D, D), attn.proj (D, D), mlp.fc1 (mlp_hidden, D),
    // mlp.fc2 (D, mlp_hidden); with qk_norm attn.q_norm, attn.k_norm (head_dim each)
    private final PackedBlock[] blocks;
    private final Packed finalAdaLN; // final_layer.adaLN_modulation.1 (2D, D)
    private final Packed finalLinear; // final_layer.linear (p·p·C_out, D)

    private Activations act;
    private final Scratch[] scratch; // one per worker thread
    private final VectorLayers layers;
    private final AttentionJob attentionJob = new AttentionJob();

    /** Reads and packs the weights of {@code r} (validated against {@code spec}); the reader stays the caller's. */
    VectorDit(ModelSpec spec, CheckpointReader r, int threads, int maxBatch) throws BackendException {
        this.spec = spec;
        this.d = spec.hiddenSize();
        this.tokens = spec.tokens();
        this.heads = spec.numHeads();
        this.headDim = spec.headDim();
        this.attentionScale = (float) Math.pow(headDim, -0.5);
        int p2 = spec.patchSize() * spec.patchSize();
        posEmbed = r.floats("pos_embed");
        xEmbedder = Packed.read(r, "x_embedder.proj", d, spec.inChannels() * p2);
        tMlp0 = Packed.read(r, "t_embedder.mlp.0", d, DitMath.FREQ_DIM);
        tMlp2 = Packed.read(r, "t_embedder.mlp.2", d, d);
        yEmbedding = r.floats("y_embedder.embedding_table.weight");
        blocks = new PackedBlock[spec.depth()];
        for (int i = 0; i < blocks.length; i++) {
            String b = "blocks." + i + ".";
            blocks[i] = new PackedBlock(Packed.read(r, b + "adaLN_modulation.1", 6 * d, d),
                    Packed.read(r, b + "attn.qkv", 3 * d, d), Packed.read(r, b + "attn.proj", d, d),
                    Packed.read(r, b + "mlp.fc1", spec.mlpHidden(), d),
                    Packed.read(r, b + "mlp.fc2", d, spec.mlpHidden()),
                    spec.qkNorm() ? DitMath.QkNorm.read(r, b) : null);
        }
        finalAdaLN = Packed.read(r, "final_layer.adaLN_modulation.1", 2 * d, d);
        finalLinear = Packed.read(r, "final_layer.linear", p2 * spec.outChannels(), d);
        act = new Activations(maxBatch);
        scratch = new Scratch[threads];
        for (int i = 0; i < threads; i++) {
            scratch[i] = new Scratch();
        }
        parallel = new Parallel(threads, "ditserve-java-" + spec.name());
        layers = new VectorLayers(parallel);
    }

    @Override
    public void forward(float[] x, float[] t, int[] y, int n, float[] out, Cancellation cancel, StepCache cache)
            throws BackendException.Cancelled {
        if (act.capacity < n) {
            act = new Activations(n);
        }
        if (!parallel.run(() -> compute(x, t, y, n, out, cancel, cache))) {
            throw new BackendException.Cancelled();
        }
    }

    /** The forward pass on a pool thread; false when cancelled. Step numbers as in docs/DIT_MODEL.md, "Forward pass". */
    private boolean compute(float[] xIn, float[] t, int[] y, int n, float[] out, Cancellation cancel,
            StepCache cache) {
        Activations a = act;
        int rows = n * tokens;
        // 1. patchify + pos_embed
        layers.patchEmbed(spec, xIn, n, a.patches, xEmbedder, posEmbed, a.x);
        // 2-3. c = t_embedder(t) + y_embedder(y); every adaLN reads SiLU(c)
        for (int b = 0; b < n; b++) {
            DitMath.timestepEmbedding(t[b], a.freq, b * DitMath.FREQ_DIM);
        }
        linear(a.freq, n, tMlp0, a.temb);
        for (int i = 0; i < n * d; i++) {
            a.temb[i] = ExactMath.silu(a.temb[i]);
        }
        linear(a.temb, n, tMlp2, a.c);
        for (int b = 0; b < n; b++) {
            for (int k = 0; k < d; k++) {
                a.siluC[b * d + k] = ExactMath.silu(a.c[b * d + k] + yEmbedding[y[b] * d + k]);
            }
        }
        // 4. blocks; with a step cache, blocks 1.. run only for the samples that run the cached span
        boolean cached = cache != null && !cache.plain();
        int first = cached ? StepCache.FIRST_CACHED_BLOCK : blocks.length;
        for (int i = 0; i < first; i++) {
            if (cancel.isCancelled()) {
                return false;
            }
            block(blocks[i], n);
        }
        if (cached) {
            int width = tokens * d;
            int m = CachedSpan.order(cache, n, a.perm);
            CachedSpan.gather(a.x, a.perm, n, width, a.h);
            System.arraycopy(a.h, 0, a.x, 0, n * width);
            CachedSpan.gather(a.siluC, a.perm, n, d, a.temb);
            System.arraycopy(a.temb, 0, a.siluC, 0, n * d);
            CachedSpan.beforeSpan(cache, a.perm, m, a.x, width);
            for (int i = first; i < blocks.length && m > 0; i++) {
                if (cancel.isCancelled()) {
                    return false;
                }
                block(blocks[i], m);
            }
            CachedSpan.finish(cache, a.perm, n, m, a.x, width);
            CachedSpan.scatter(a.x, a.perm, n, width, a.h);
            System.arraycopy(a.h, 0, a.x, 0, n * width);
            CachedSpan.scatter(a.siluC, a.perm, n, d, a.temb);
            System.arraycopy(a.temb, 0, a.siluC, 0, n * d);
        }
        if (cancel.isCancelled()) {
            return false;
        }
        // 5. final layer: shift | scale; 6. unpatchify
        linear(a.siluC, n, finalAdaLN, a.mod);
        modulatedLayerNorm(rows, 2 * d, 0, d);
        linear(a.h, rows, finalLinear, a.out);
        DitMath.unpatchify(spec, a.out, n, out);
        return true;
    }

    /** One DiT block on the first n samples; mod = shift1 | scale1 | gate1 | shift2 | scale2 | gate2 per sample. */
    private void block(PackedBlock blk, int n) {
        Activations a = act;
        int rows = n * tokens;
        linear(a.siluC, n, blk.adaLN(), a.mod);
        modulatedLayerNorm(rows, 6 * d, 0, d);
        linear(a.h, rows, blk.qkv(), a.qkv);
        attentionJob.run(n, blk.qkNorm());
        linearGatedAdd(a.att, rows, blk.proj(), 6 * d, 2 * d);
        modulatedLayerNorm(rows, 6 * d, 3 * d, 4 * d);
        linearGelu(a.h, rows, blk.fc1(), a.mlp);
        linearGatedAdd(a.mlp, rows, blk.fc2(), 6 * d, 5 * d);
    }

    /** dst = src·Wᵀ + b. */
    private void linear(float[] src, int rows, Packed w, float[] dst) {
        layers.linear(src, rows, w, dst);
    }

    /** dst = GELU_tanh(src·Wᵀ + b). */
    private void linearGelu(float[] src, int rows, Packed w, float[] dst) {
        layers.linearGelu(src, rows, w, dst);
    }

    /** x += gate · (src·Wᵀ + b), the gate being the chunk at {@code gateOff} of each sample's modulation row. */
    private void linearGatedAdd(float[] src, int rows, Packed w, int modStride, int gateOff) {
        layers.linearGatedAdd(src, rows, w, act.x, act.mod, modStride, gateOff, tokens);
    }

    /** h = LN(x)·(1 + scale) + shift with the sample's chunks of the modulation rows. */
    private void modulatedLayerNorm(int rows, int modStride, int shiftOff, int scaleOff) {
        layers.modulatedLayerNorm(act.x, rows, d, tokens, act.mod, modStride, shiftOff, scaleOff, act.h);
    }

    /**
     * softmax(q·kᵀ/√hd)·v, one (sample, head) per item, as two small products on per-worker scratch; with qk-norm,
     * q and k of the head are normalised first.
     */
    private final class AttentionJob implements Parallel.Body {
        private DitMath.QkNorm qkNorm;

        void run(int n, DitMath.QkNorm norm) {
            qkNorm = norm;
            parallel.forEach(n * heads, this);
        }

        @Override
        public void run(int item, int worker) {
            Scratch s = scratch[worker];
            float[] qkv = act.qkv;
            int row0 = item / heads * tokens;
            int q = row0 * 3 * d + item % heads * headDim; // q of the sample's first token, this head
            if (qkNorm != null) { // this item owns its (sample, head) slices of q and k: normalised in place
                DitMath.qkNorm(qkv, row0, tokens, d, heads, item % heads, qkNorm);
            }
            MatMul.pack(qkv, q + d, 1, 3 * d, headDim, tokens, s.keys); // B[e][j] = k_j[e]
            MatMul.pack(qkv, q + 2 * d, 3 * d, 1, tokens, headDim, s.values); // B[j][e] = v_j[e]
            s.mm.a(qkv, q, 3 * d).b(s.keys, headDim, tokens, null).c(s.scores, 0, tokens).scale(attentionScale)
                    .compute(0, tokens, 0, MatMul.panels(tokens), s.tile);
            for (int i = 0; i < tokens; i++) {
                softmax(s.scores, i * tokens, tokens);
            }
            s.mm.a(s.scores, 0, tokens).b(s.values, tokens, headDim, null)
                    .c(act.att, row0 * d + item % heads * headDim, d).store()
                    .compute(0, tokens, 0, MatMul.panels(headDim), s.tile);
        }
    }

    /** One worker's scratch: the kernel tile, and one head's packed keys and values and its score matrix. */
    private final class Scratch {
        final float[] tile = new float[MatMul.TILE];
        final float[] keys = new float[MatMul.packedSize(headDim, tokens)];
        final float[] values = new float[MatMul.packedSize(tokens, headDim)];
        final float[] scores = new float[tokens * tokens];
        final MatMul mm = new MatMul();
    }

    /** The activations of a batch of up to {@code capacity} samples. */
    private final class Activations {
        final int capacity;
        final float[] patches; // [n·T, C_in·p·p]
        final float[] x; // [n·T, D] the residual stream
        final float[] h; // [n·T, D] modulated LayerNorm output
        final float[] qkv; // [n·T, 3D]
        final float[] att; // [n·T, D] attention output before proj
        final float[] mlp; // [n·T, mlp_hidden]
        final float[] out; // [n·T, p·p·C_out]
        final float[] freq; // [n, 256]
        final float[] temb; // [n, D]
        final float[] c; // [n, D]
        final float[] siluC; // [n, D]
        final float[] mod; // [n, 6D]
        final int[] perm; // step caching: batch order with the samples that run the cached span first

        Activations(int capacity) {
            this.capacity = capacity;
            int rows = capacity * tokens;
            int p = spec.patchSize();
            patches = new float[rows * spec.inChannels() * p * p];
            x = new float[rows * d];
            h = new float[rows * d];
            qkv = new float[rows * 3 * d];
            att = new float[rows * d];
            mlp = new float[rows * spec.mlpHidden()];
            out = new float[rows * p * p * spec.outChannels()];
            freq = new float[capacity * DitMath.FREQ_DIM];
            temb = new float[capacity * d];
            c = new float[capacity * d];
            siluC = new float[capacity * d];
            mod = new float[capacity * 6 * d];
            perm = new int[capacity];
        }
    }

    /** In-place softmax of a[off..off+len). */
    static void softmax(float[] a, int off, int len) {
        int bound = S.loopBound(len);
        int i = 0;
        float max = Float.NEGATIVE_INFINITY;
        if (bound > 0) {
            FloatVector m = FloatVector.fromArray(S, a, off);
            for (i = L; i < bound; i += L) {
                m = m.max(FloatVector.fromArray(S, a, off + i));
            }
            max = m.reduceLanes(VectorOperators.MAX);
        }
        for (; i < len; i++) {
            max = Math.max(max, a[off + i]);
        }
        FloatVector maxV = FloatVector.broadcast(S, max);
        FloatVector acc = FloatVector.zero(S);
        for (i = 0; i < bound; i += L) {
            FloatVector e = ExactMath.exp(FloatVector.fromArray(S, a, off + i).sub(maxV));
            e.intoArray(a, off + i);
            acc = acc.add(e);
        }
        float sum = ExactMath.sum(acc);
        for (; i < len; i++) {
            a[off + i] = ExactMath.exp(a[off + i] - max);
            sum += a[off + i];
        }
        float inv = 1f / sum;
        for (i = 0; i < bound; i += L) {
            FloatVector.fromArray(S, a, off + i).mul(inv).intoArray(a, off + i);
        }
        for (; i < len; i++) {
            a[off + i] *= inv;
        }
    }

    @Override
    public void close() {
        parallel.close();
    }
}
