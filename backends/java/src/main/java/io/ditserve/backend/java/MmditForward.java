package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.java.VectorLayers.Packed;

/**
 * SD3's MMDiT (diffusers' {@code SD3Transformer2DModel}: SD3-medium, and SD3.5-medium with RMS qk-norm and MMDiT-X
 * dual attention), the forward pass of tools/sd3/mmdit.py on the Vector API; docs/TEXT_MODELS.md "MMDiT" states
 * what it relies on. Image patches and the prompt's tokens are two streams of D-wide rows, each with its own
 * adaLN-Zero modulation from SiLU(temb), that meet in one joint attention per block.
 *
 * <p>Weights are packed once at load as they are read ({@link VectorLayers.Packed}); a layer's q, k and v are one
 * fused product. Activations live in buffers sized for {@code java.max_batch} samples of the spec's context
 * length; a larger batch or a longer context replaces them once, so a sampling loop allocates nothing per step.
 * Every row and every (sample, head, block of queries) of attention is computed in one order whatever the batch,
 * so a sample gets the same bytes alone and batched. Shapes: D = hidden size, hd = head_dim, T = image tokens,
 * C = context tokens, p = patch size, C_in = latent channels.
 */
final class MmditForward implements AutoCloseable {
    /** Query rows per attention work item: its scores are QUERY_ROWS × (T + C) floats of a worker's scratch. */
    private static final int QUERY_ROWS = 8 * MatMul.MR;
    /** qk_norm "rms_norm": RMSNorm over head_dim with eps 1e-6. */
    private static final double RMS_EPS = 1e-6;

    /**
     * One attention's projections of one stream: q | k | v fused (3D, D), the output projection (D, D) or null
     * where the reference drops the output (the context of a context_pre_only block), and the RMS qk-norm weights
     * (hd each) or null without qk-norm.
     */
    private record Projections(Packed qkv, Packed out, float[] normQ, float[] normK) {
        long bytes() {
            return Packed.bytes(qkv, out) + 4L * (normQ == null ? 0 : normQ.length + normK.length);
        }

        static Projections read(CheckpointReader r, String a, String q, String k, String v, String out, String nq,
                String nk, int d, boolean rms) throws BackendException {
            return new Projections(Packed.concat(r, d, d, a + q, a + k, a + v),
                    out == null ? null : Packed.read(r, a + out, d, d),
                    rms ? r.floats(a + nq + ".weight") : null, rms ? r.floats(a + nk + ".weight") : null);
        }
    }

    /** FeedForward: net.0.proj (4D, D) then GELU (tanh), net.2 (D, 4D). */
    private record FeedForward(Packed proj, Packed out) {
        long bytes() {
            return Packed.bytes(proj, out);
        }

        static FeedForward read(CheckpointReader r, String ff, int d) throws BackendException {
            return new FeedForward(Packed.read(r, ff + "net.0.proj", 4 * d, d), Packed.read(r, ff + "net.2", d, 4 * d));
        }
    }

    /** One {@code transformer_blocks.i} (JointTransformerBlock). */
    private record Block(
            Packed norm1, // norm1.linear (6D, D); (9D, D) with dual attention (SD35AdaLayerNormZeroX)
            Packed norm1Context, // norm1_context.linear (6D, D); (2D, D) when context_pre_only (scale | shift)
            Projections attn, // attn.to_q | to_k | to_v, attn.to_out.0, attn.norm_q, attn.norm_k
            Projections attnContext, // attn.add_q_proj | add_k_proj | add_v_proj, attn.to_add_out (null when
                                     // context_pre_only), attn.norm_added_q, attn.norm_added_k
            Projections attn2, // attn2.to_q | to_k | to_v, attn2.to_out.0, attn2.norm_q/k: dual attention, or null
            FeedForward ff, // ff.net.0.proj, ff.net.2
            FeedForward ffContext, // ff_context.*, null when context_pre_only
            boolean contextPreOnly) {} // the last block: its context output is dropped

    private final ModelSpec spec;
    private final int d;
    private final int tokens; // T
    private final int heads;
    private final int headDim;
    private final int modWidth; // widest norm1: 9D with any dual-attention block, else 6D
    private final float attentionScale; // 1/√hd, as the reference's head_dim ** -0.5
    private final Parallel parallel;
    private final VectorLayers layers;

    private final Packed patchEmbed; // pos_embed.proj: conv weight (D, C_in, p, p) read as (D, C_in·p·p)
    private final float[] posEmbed; // pos_embed.pos_embed (1, max², D) cropped at the centre to (T, D)
    private final Packed timestepLinear1; // time_text_embed.timestep_embedder.linear_1 (D, 256)
    private final Packed timestepLinear2; // time_text_embed.timestep_embedder.linear_2 (D, D)
    private final Packed textLinear1; // time_text_embed.text_embedder.linear_1 (D, pooled_projection_dim)
    private final Packed textLinear2; // time_text_embed.text_embedder.linear_2 (D, D)
    private final Packed contextEmbedder; // context_embedder (D, joint_attention_dim)
    private final Block[] blocks; // transformer_blocks.0 .. num_layers − 1
    private final Packed normOut; // norm_out.linear (2D, D): scale | shift (AdaLayerNormContinuous)
    private final Packed projOut; // proj_out (p·p·C_out, D)

    private Activations act;
    private Scratch[] scratch; // one per worker thread
    private final AttentionJob attention = new AttentionJob();

    /** Reads and packs the weights of {@code r} (validated against {@code spec}); the reader stays the caller's. */
    MmditForward(ModelSpec spec, CheckpointReader r, int threads, int maxBatch) throws BackendException {
        ModelSpec.TextConditioning text = spec.text();
        this.spec = spec;
        this.d = spec.hiddenSize();
        this.tokens = spec.tokens();
        this.heads = spec.numHeads();
        this.headDim = spec.headDim();
        this.modWidth = (text.dualAttentionLayers().isEmpty() ? 6 : 9) * d;
        this.attentionScale = (float) Math.pow(headDim, -0.5);
        int p = spec.patchSize();
        patchEmbed = Packed.read(r, "pos_embed.proj", d, spec.inChannels() * p * p);
        posEmbed = MmditCheckpoint.centreCrop(r.scratch("pos_embed.pos_embed"), text.posEmbedMaxSize(),
                spec.gridSize(), d);
        timestepLinear1 = Packed.read(r, "time_text_embed.timestep_embedder.linear_1", d, DitMath.FREQ_DIM);
        timestepLinear2 = Packed.read(r, "time_text_embed.timestep_embedder.linear_2", d, d);
        textLinear1 = Packed.read(r, "time_text_embed.text_embedder.linear_1", d, text.pooledProjectionDim());
        textLinear2 = Packed.read(r, "time_text_embed.text_embedder.linear_2", d, d);
        contextEmbedder = Packed.read(r, "context_embedder", d, text.jointAttentionDim());
        blocks = new Block[spec.depth()];
        boolean rms = text.rmsQkNorm();
        for (int i = 0; i < blocks.length; i++) {
            String b = "transformer_blocks." + i + ".";
            boolean last = i == blocks.length - 1;
            boolean dual = text.dualAttentionLayers().contains(i);
            blocks[i] = new Block(
                    Packed.read(r, b + "norm1.linear", (dual ? 9 : 6) * d, d),
                    Packed.read(r, b + "norm1_context.linear", (last ? 2 : 6) * d, d),
                    Projections.read(r, b + "attn.", "to_q", "to_k", "to_v", "to_out.0", "norm_q", "norm_k", d, rms),
                    Projections.read(r, b + "attn.", "add_q_proj", "add_k_proj", "add_v_proj",
                            last ? null : "to_add_out", "norm_added_q", "norm_added_k", d, rms),
                    dual ? Projections.read(r, b + "attn2.", "to_q", "to_k", "to_v", "to_out.0", "norm_q", "norm_k",
                            d, rms) : null,
                    FeedForward.read(r, b + "ff.", d),
                    last ? null : FeedForward.read(r, b + "ff_context.", d),
                    last);
        }
        normOut = Packed.read(r, "norm_out.linear", 2 * d, d);
        projOut = Packed.read(r, "proj_out", p * p * spec.outChannels(), d);
        act = new Activations(maxBatch, text.contextTokens());
        parallel = new Parallel(threads, "ditserve-java-" + spec.name());
        layers = new VectorLayers(parallel);
        scratch = new Scratch[threads];
        for (int i = 0; i < threads; i++) {
            scratch[i] = new Scratch(tokens + text.contextTokens());
        }
    }

    /**
     * Bytes the weights take in memory as loaded: 16-bit panels where the checkpoint's F16/BF16 were kept
     * ({@link Panels}), float32 elsewhere (biases, norms, the cropped position table).
     */
    long weightBytes() {
        long b = 4L * posEmbed.length + Packed.bytes(patchEmbed, timestepLinear1, timestepLinear2, textLinear1,
                textLinear2, contextEmbedder, normOut, projOut);
        for (Block blk : blocks) {
            b += Packed.bytes(blk.norm1(), blk.norm1Context()) + blk.attn().bytes() + blk.attnContext().bytes()
                    + (blk.attn2() == null ? 0 : blk.attn2().bytes()) + blk.ff().bytes()
                    + (blk.ffContext() == null ? 0 : blk.ffContext().bytes());
        }
        return b;
    }

    /**
     * out = MMDiT(x, t, encoder_hidden_states, pooled_projections) for n samples (checked by the caller).
     *
     * @param x [n, C_in, H, W]
     * @param t n times σ·1000, as the timestep sinusoid receives them
     * @param text the context [n, C, joint_attention_dim] and the pooled vectors [n, pooled_projection_dim]
     * @param out [n, C_out, H, W]
     */
    void forward(float[] x, float[] t, Conditioning.TextEmbeddings text, int n, float[] out, Cancellation cancel)
            throws BackendException.Cancelled {
        int ctx = text.tokens();
        if (act.capacity < n || act.contextCapacity < ctx) {
            act = new Activations(Math.max(n, act.capacity), Math.max(ctx, act.contextCapacity));
        }
        if (scratch[0].capacity < tokens + ctx) {
            for (int i = 0; i < scratch.length; i++) {
                scratch[i] = new Scratch(tokens + act.contextCapacity);
            }
        }
        if (!parallel.run(() -> compute(x, t, text, n, out, cancel))) {
            throw new BackendException.Cancelled();
        }
    }

    /** The forward pass (SD3Transformer2DModel.forward) on a pool thread; false when cancelled. */
    private boolean compute(float[] xIn, float[] t, Conditioning.TextEmbeddings text, int n, float[] out,
            Cancellation cancel) {
        Activations a = act;
        int ctx = text.tokens();
        int rows = n * tokens;
        // pos_embed: the patch conv as a product, plus the cropped position table
        layers.patchEmbed(spec, xIn, n, a.patches, patchEmbed, posEmbed, a.x);
        // time_text_embed: temb = timestep_embedder(sinusoid(t)) + text_embedder(pooled); every adaLN reads SiLU(temb)
        for (int b = 0; b < n; b++) {
            DitMath.timestepEmbedding(t[b], a.freq, b * DitMath.FREQ_DIM);
        }
        layers.linear(a.freq, n, timestepLinear1, a.hidden);
        silu(a.hidden, n * d);
        layers.linear(a.hidden, n, timestepLinear2, a.temb);
        layers.linear(text.pooled(), n, textLinear1, a.hidden);
        silu(a.hidden, n * d);
        layers.linear(a.hidden, n, textLinear2, a.pooledEmb);
        for (int i = 0; i < n * d; i++) {
            a.siluTemb[i] = ExactMath.silu(a.temb[i] + a.pooledEmb[i]);
        }
        // context_embedder
        layers.linear(text.context(), n * ctx, contextEmbedder, a.context);
        for (Block blk : blocks) {
            if (cancel.isCancelled()) {
                return false;
            }
            block(blk, n, ctx);
        }
        if (cancel.isCancelled()) {
            return false;
        }
        // norm_out: LN(x)·(1 + scale) + shift, scale first; proj_out; unpatchify
        layers.linear(a.siluTemb, n, normOut, a.mod);
        layers.modulatedLayerNorm(a.x, rows, d, tokens, a.mod, 2 * d, d, 0, a.h);
        layers.linear(a.h, rows, projOut, a.out);
        DitMath.unpatchify(spec, a.out, n, out);
        return true;
    }

    /**
     * One JointTransformerBlock on n samples. The modulation rows: image shift_msa | scale_msa | gate_msa |
     * shift_mlp | scale_mlp | gate_mlp (| shift_msa2 | scale_msa2 | gate_msa2), context the same six, or
     * scale | shift when context_pre_only.
     */
    private void block(Block blk, int n, int ctx) {
        Activations a = act;
        int rows = n * tokens;
        int crows = n * ctx;
        int ms = blk.norm1().out();
        int cs = blk.norm1Context().out();
        layers.linear(a.siluTemb, n, blk.norm1(), a.mod);
        layers.linear(a.siluTemb, n, blk.norm1Context(), a.modContext);
        layers.modulatedLayerNorm(a.x, rows, d, tokens, a.mod, ms, 0, d, a.h);
        if (blk.attn2() != null) { // attn2's input comes from the block input: LN(x)·(1 + scale_msa2) + shift_msa2
            layers.modulatedLayerNorm(a.x, rows, d, tokens, a.mod, ms, 6 * d, 7 * d, a.h2);
        }
        if (blk.contextPreOnly()) {
            layers.modulatedLayerNorm(a.context, crows, d, ctx, a.modContext, cs, d, 0, a.hContext);
        } else {
            layers.modulatedLayerNorm(a.context, crows, d, ctx, a.modContext, cs, 0, d, a.hContext);
        }
        // joint attention over [image ; context]
        layers.linear(a.h, rows, blk.attn().qkv(), a.qkv);
        layers.linear(a.hContext, crows, blk.attnContext().qkv(), a.qkvContext);
        attention.run(n, a.qkv, blk.attn(), ctx, a.qkvContext, blk.attnContext(), !blk.contextPreOnly());
        layers.linearGatedAdd(a.att, rows, blk.attn().out(), a.x, a.mod, ms, 2 * d, tokens); // x += gate_msa·attn
        if (blk.attn2() != null) { // x += gate_msa2·attn2, image tokens only
            layers.linear(a.h2, rows, blk.attn2().qkv(), a.qkv);
            attention.run(n, a.qkv, blk.attn2(), 0, null, null, false);
            layers.linearGatedAdd(a.att, rows, blk.attn2().out(), a.x, a.mod, ms, 8 * d, tokens);
        }
        // x += gate_mlp·ff(LN(x)·(1 + scale_mlp) + shift_mlp)
        layers.modulatedLayerNorm(a.x, rows, d, tokens, a.mod, ms, 3 * d, 4 * d, a.h);
        layers.linearGelu(a.h, rows, blk.ff().proj(), a.mlp);
        layers.linearGatedAdd(a.mlp, rows, blk.ff().out(), a.x, a.mod, ms, 5 * d, tokens);
        if (blk.contextPreOnly()) {
            return;
        }
        // the context stream the same way, with its own modulation, to_add_out and ff_context
        layers.linearGatedAdd(a.attContext, crows, blk.attnContext().out(), a.context, a.modContext, cs, 2 * d, ctx);
        layers.modulatedLayerNorm(a.context, crows, d, ctx, a.modContext, cs, 3 * d, 4 * d, a.hContext);
        layers.linearGelu(a.hContext, crows, blk.ffContext().proj(), a.mlp);
        layers.linearGatedAdd(a.mlp, crows, blk.ffContext().out(), a.context, a.modContext, cs, 5 * d, ctx);
    }

    private static void silu(float[] v, int len) {
        for (int i = 0; i < len; i++) {
            v[i] = ExactMath.silu(v[i]);
        }
    }

    /**
     * RMSNorm of one head of one token in place (qk_norm "rms_norm"): v·(1/√(mean(v²) + 1e-6))·weight, the mean
     * square accumulated in double (the reference takes it in fp32).
     */
    static void rmsNorm(float[] v, int off, int len, float[] weight) {
        double squares = 0;
        for (int e = 0; e < len; e++) {
            squares += (double) v[off + e] * v[off + e];
        }
        float inv = (float) (1.0 / Math.sqrt(squares / len + RMS_EPS));
        for (int e = 0; e < len; e++) {
            v[off + e] = v[off + e] * inv * weight[e];
        }
    }

    /**
     * softmax(q·kᵀ/√hd)·v per sample and head over the keys of [image ; context] (no mask), in two loops: per
     * (sample, head), qk-norm of its q and k rows in place and its keys and values packed; then per (sample, head,
     * block of query rows), the scores on the worker's scratch, softmax per row, and the product with the values.
     * Query rows of the context are skipped where the reference drops the context output.
     */
    private final class AttentionJob {
        private final Parallel.Body prepare = this::prepare;
        private final Parallel.Body attend = this::attend;
        private float[] qkv; // image q | k | v rows [n·T, 3D]
        private Projections image;
        private int ctx; // context tokens per sample, 0 for attn2
        private float[] qkvContext; // context q | k | v rows [n·C, 3D]
        private Projections context;
        private int keys; // T + C
        private int imageBlocks;
        private int blocks; // query blocks per (sample, head)

        void run(int n, float[] qkv, Projections image, int ctx, float[] qkvContext, Projections context,
                boolean contextQueries) {
            this.qkv = qkv;
            this.image = image;
            this.ctx = ctx;
            this.qkvContext = qkvContext;
            this.context = context;
            this.keys = tokens + ctx;
            this.imageBlocks = (tokens + QUERY_ROWS - 1) / QUERY_ROWS;
            this.blocks = imageBlocks + (contextQueries ? (ctx + QUERY_ROWS - 1) / QUERY_ROWS : 0);
            parallel.forEach(n * heads, prepare);
            parallel.forEach(n * heads * blocks, attend);
        }

        /** Item (sample, head): normalise this head's q and k, gather its keys and values, pack them. */
        private void prepare(int item, int worker) {
            Scratch s = scratch[worker];
            int b = item / heads;
            int col = item % heads * headDim;
            gather(qkv, b * tokens, tokens, col, image, s, 0);
            if (ctx > 0) {
                gather(qkvContext, b * ctx, ctx, col, context, s, tokens);
            }
            MatMul.pack(s.k, 0, 1, headDim, headDim, keys, act.keys[item]); // B[e][j] = k_j[e]
            MatMul.pack(s.v, 0, headDim, 1, keys, headDim, act.values[item]); // B[j][e] = v_j[e]
        }

        /** Rows row0 .. row0 + count − 1 of one stream: qk-norm in place, k and v to rows j0.. of the scratch. */
        private void gather(float[] src, int row0, int count, int col, Projections w, Scratch s, int j0) {
            for (int r = 0; r < count; r++) {
                int q = (row0 + r) * 3 * d + col;
                if (w.normQ() != null) {
                    rmsNorm(src, q, headDim, w.normQ());
                    rmsNorm(src, q + d, headDim, w.normK());
                }
                System.arraycopy(src, q + d, s.k, (j0 + r) * headDim, headDim);
                System.arraycopy(src, q + 2 * d, s.v, (j0 + r) * headDim, headDim);
            }
        }

        /** Item (sample, head, query block): its rows of softmax(q·kᵀ·scale)·v into att or attContext. */
        private void attend(int item, int worker) {
            Scratch s = scratch[worker];
            int sampleHead = item / blocks;
            int blk = item % blocks;
            int b = sampleHead / heads;
            int col = sampleHead % heads * headDim;
            boolean img = blk < imageBlocks;
            int first = (img ? blk : blk - imageBlocks) * QUERY_ROWS;
            int rows = Math.min(QUERY_ROWS, (img ? tokens : ctx) - first);
            int row0 = (img ? b * tokens : b * ctx) + first;
            float[] q = img ? qkv : qkvContext;
            float[] dst = img ? act.att : act.attContext;
            s.mm.a(q, row0 * 3 * d + col, 3 * d).b(act.keys[sampleHead], headDim, keys, null).c(s.scores, 0, keys)
                    .scale(attentionScale).compute(0, rows, 0, MatMul.panels(keys), s.tile);
            for (int i = 0; i < rows; i++) {
                VectorDit.softmax(s.scores, i * keys, keys);
            }
            s.mm.a(s.scores, 0, keys).b(act.values[sampleHead], keys, headDim, null).c(dst, row0 * d + col, d)
                    .store().compute(0, rows, 0, MatMul.panels(headDim), s.tile);
        }
    }

    /** One worker's scratch for attention over up to {@code capacity} keys. */
    private final class Scratch {
        final int capacity;
        final float[] tile = new float[MatMul.TILE];
        final float[] k; // [keys, hd] one head's keys, gathered from both streams
        final float[] v; // [keys, hd]
        final float[] scores; // [QUERY_ROWS, keys]
        final MatMul mm = new MatMul();

        Scratch(int capacity) {
            this.capacity = capacity;
            k = new float[capacity * headDim];
            v = new float[capacity * headDim];
            scores = new float[QUERY_ROWS * capacity];
        }
    }

    /** The activations of up to {@code capacity} samples with up to {@code contextCapacity} context tokens. */
    private final class Activations {
        final int capacity;
        final int contextCapacity;
        final float[] patches; // [n·T, C_in·p·p]
        final float[] x; // [n·T, D] the image stream (hidden_states)
        final float[] h; // [n·T, D] modulated LayerNorm of x
        final float[] h2; // [n·T, D] attn2's input (empty without dual attention)
        final float[] qkv; // [n·T, 3D] image q | k | v (joint attention, then attn2)
        final float[] att; // [n·T, D] attention output before to_out.0
        final float[] context; // [n·C, D] the context stream (encoder_hidden_states after context_embedder)
        final float[] hContext; // [n·C, D] modulated LayerNorm of the context
        final float[] qkvContext; // [n·C, 3D] context q | k | v
        final float[] attContext; // [n·C, D] attention output before to_add_out
        final float[] mlp; // [n·max(T, C), 4D] the feed-forward hidden layer of either stream
        final float[] out; // [n·T, p·p·C_out]
        final float[] freq; // [n, 256] timestep sinusoid
        final float[] hidden; // [n, D] embedders' hidden layer
        final float[] temb; // [n, D] timestep embedding
        final float[] pooledEmb; // [n, D] text_embedder(pooled)
        final float[] siluTemb; // [n, D] SiLU(temb + pooled embedding)
        final float[] mod; // [n, 9D or 6D] image modulation (norm1); norm_out's scale | shift at the end
        final float[] modContext; // [n, 6D] context modulation (norm1_context)
        final float[][] keys; // per (sample, head): keys packed for MatMul, hd × (T + C)
        final float[][] values; // per (sample, head): values packed, (T + C) × hd

        Activations(int capacity, int contextCapacity) {
            this.capacity = capacity;
            this.contextCapacity = contextCapacity;
            int rows = capacity * tokens;
            int crows = capacity * contextCapacity;
            int p = spec.patchSize();
            patches = new float[rows * spec.inChannels() * p * p];
            x = new float[rows * d];
            h = new float[rows * d];
            h2 = new float[modWidth == 9 * d ? rows * d : 0];
            qkv = new float[rows * 3 * d];
            att = new float[rows * d];
            context = new float[crows * d];
            hContext = new float[crows * d];
            qkvContext = new float[crows * 3 * d];
            attContext = new float[crows * d];
            mlp = new float[Math.max(rows, crows) * 4 * d];
            out = new float[rows * p * p * spec.outChannels()];
            freq = new float[capacity * DitMath.FREQ_DIM];
            hidden = new float[capacity * d];
            temb = new float[capacity * d];
            pooledEmb = new float[capacity * d];
            siluTemb = new float[capacity * d];
            mod = new float[capacity * modWidth];
            modContext = new float[capacity * 6 * d];
            int keyCount = tokens + contextCapacity;
            keys = new float[capacity * heads][MatMul.packedSize(headDim, keyCount)];
            values = new float[capacity * heads][MatMul.packedSize(keyCount, headDim)];
        }
    }

    @Override
    public void close() {
        parallel.close();
    }
}
