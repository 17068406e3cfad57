package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DitConstants;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.onnx.OnnxGraph.Attr;
import java.util.List;

/**
 * SD3's MMDiT (diffusers' SD3Transformer2DModel: SD3-medium, and SD3.5 with RMS qk-norm and MMDiT-X dual attention)
 * as an ONNX graph, built from the spec and the checkpoint's tensors: the function of the java backend's
 * MmditForward and of tools/sd3/mmdit.py, layer for layer (docs/TEXT_MODELS.md "MMDiT").
 *
 * <p>Inputs {@code x} [N, C_in, H, W], {@code t} [N] (σ·1000, as the timestep sinusoid receives it), {@code context}
 * [N, C, joint_attention_dim] and {@code pooled} [N, pooled_projection_dim]; output {@code out} [N, C_out, H, W].
 * N and the context length C are symbolic, so one graph takes any batch and any prompt length; H = W and the
 * position-table crop are fixed by the spec.
 */
final class MmditGraph {
    static final String X = "x";
    static final String T = "t";
    static final String CONTEXT = "context";
    static final String POOLED = "pooled";
    static final String OUT = "out";
    private static final double LN_EPS = 1e-6;
    private static final double RMS_EPS = 1e-6;

    private final ModelSpec spec;
    private final GraphOps ops;
    private final OnnxGraph g;
    private final int d;
    private final int heads;
    private final int headDim;
    private final int tokens;
    private final String ones; // LayerNormalization's scale for the affine-free norms
    private final String siluTemb; // SiLU(temb) [N, D]: what every adaLN reads

    private MmditGraph(ModelSpec spec, GraphOps ops, String siluTemb, String ones) {
        this.spec = spec;
        this.ops = ops;
        this.g = ops.g;
        this.d = spec.hiddenSize();
        this.heads = spec.numHeads();
        this.headDim = spec.headDim();
        this.tokens = spec.tokens();
        this.siluTemb = siluTemb;
        this.ones = ones;
    }

    /** The graph of {@code spec}, its weights external in {@code w}'s folder. */
    static byte[] build(ModelSpec spec, OnnxGraph g, GraphWeights w) throws BackendException {
        ModelSpec.TextConditioning text = spec.text();
        GraphOps ops = new GraphOps(g, w);
        int size = spec.inputSize();
        int d = spec.hiddenSize();
        String x = g.input(X, OnnxGraph.FLOAT, "N", spec.inChannels(), size, size);
        String t = g.input(T, OnnxGraph.FLOAT, "N");
        String context = g.input(CONTEXT, OnnxGraph.FLOAT, "N", "C", text.jointAttentionDim());
        String pooled = g.input(POOLED, OnnxGraph.FLOAT, "N", text.pooledProjectionDim());

        // time_text_embed: temb = timestep_embedder(sinusoid(t)) + text_embedder(pooled)
        String args = ops.mul("time_proj.args", ops.unsqueeze("time_proj.t", t, 1),
                g.constant("time_proj.freqs", DitConstants.timestepFrequencies(), 1, DitConstants.FREQ_DIM / 2));
        String sinusoid = ops.concat("time_proj", 1, ops.op("Cos", "time_proj.cos", args),
                ops.op("Sin", "time_proj.sin", args));
        String te = "time_text_embed.timestep_embedder.";
        String timestep = ops.linear(ops.silu(te + "silu", ops.linear(sinusoid, te + "linear_1")), te + "linear_2");
        String pe = "time_text_embed.text_embedder.";
        String pooledEmb = ops.linear(ops.silu(pe + "silu", ops.linear(pooled, pe + "linear_1")), pe + "linear_2");
        String temb = ops.add("time_text_embed", timestep, pooledEmb);
        String ones = g.constant("ones", filled(d, 1f), d);
        MmditGraph m = new MmditGraph(spec, ops, ops.silu("temb.silu", temb), ones);

        String img = m.patchEmbed(x);
        String ctx = ops.linear(context, "context_embedder");
        for (int i = 0; i < spec.depth(); i++) {
            String[] streams = m.block(i, img, ctx, i == spec.depth() - 1, text.dualAttentionLayers().contains(i));
            img = streams[0];
            ctx = streams[1];
        }
        // norm_out: LN(x)·(1 + scale) + shift with scale FIRST (AdaLayerNormContinuous); proj_out; unpatchify
        String[] mod = m.modulation("norm_out", 2);
        String h = m.modulate("norm_out", img, mod[0], mod[1]);
        String out = m.unpatchify(ops.linear(h, "proj_out"));
        g.output(out, OUT, OnnxGraph.FLOAT, "N", spec.outChannels(), size, size);
        return g.toBytes("ditserve onnx backend: MMDiT " + spec.name());
    }

    private static float[] filled(int n, float v) {
        float[] a = new float[n];
        java.util.Arrays.fill(a, v);
        return a;
    }

    /** pos_embed: the patch conv (kernel = stride = p), tokens in raster order, plus the centred position crop. */
    private String patchEmbed(String x) throws BackendException {
        int p = spec.patchSize();
        String conv = g.node("Conv", "pos_embed.proj", List.of(x, ops.w.f32("pos_embed.proj.weight"),
                ops.w.f32("pos_embed.proj.bias")), Attr.ints("kernel_shape", p, p), Attr.ints("strides", p, p));
        String rows = ops.transpose("pos_embed.tokens", ops.reshape("pos_embed.flat", conv, 0, d, tokens), 0, 2, 1);
        // the stored (1, max², D) table's centred g×g window (MmditCheckpoint.centreCrop)
        int max = spec.text().posEmbedMaxSize();
        int grid = spec.gridSize();
        long top = MmditCheckpoint.cropStart(max, grid);
        String table = ops.reshape("pos_embed.table", ops.w.f32("pos_embed.pos_embed"), max, max, d);
        String crop = ops.op("Slice", "pos_embed.crop", table, g.longs(top, top), g.longs(top + grid, top + grid),
                g.longs(0, 1));
        return ops.add("pos_embed", rows, ops.reshape("pos_embed.window", crop, 1, (long) grid * grid, d));
    }

    /**
     * The modulation vectors of an adaLN: Linear(SiLU(temb)) [N, k·D] split into k chunks, each [N, 1, D] to
     * broadcast over the tokens.
     */
    private String[] modulation(String prefix, int chunks) throws BackendException {
        String m = ops.unsqueeze(prefix + ".mod", ops.linear(siluTemb, prefix + ".linear"), 1);
        return ops.split(prefix + ".chunks", m, 2, chunks, d);
    }

    /** LN(x)·(1 + scale) + shift, LN without affine parameters (eps 1e-6). */
    private String modulate(String label, String x, String scale, String shift) {
        return modulateNormed(label, ops.layerNorm(label + ".ln", x, ones, null, LN_EPS), scale, shift);
    }

    private String modulateNormed(String label, String normed, String scale, String shift) {
        String scaled = ops.add(label + ".scaled", normed, ops.mul(label + ".scale", normed, scale));
        return ops.add(label, scaled, shift);
    }

    /** x + gate·y. */
    private String gated(String label, String x, String gate, String y) {
        return ops.add(label, x, ops.mul(label + ".gate", gate, y));
    }

    /**
     * One JointTransformerBlock; returns {image stream, context stream} (the context null after a context_pre_only
     * block). Modulation chunks: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp (then shift_msa2,
     * scale_msa2, gate_msa2 with dual attention); a context_pre_only context: scale, shift.
     */
    private String[] block(int i, String x, String c, boolean last, boolean dual) throws BackendException {
        String b = "transformer_blocks." + i + ".";
        String[] m = modulation(b + "norm1", dual ? 9 : 6);
        String[] cm = modulation(b + "norm1_context", last ? 2 : 6);
        String xNorm = ops.layerNorm(b + "norm1.ln", x, ones, null, LN_EPS);
        String h = modulateNormed(b + "norm1", xNorm, m[1], m[0]);
        String hc = last ? modulate(b + "norm1_context", c, cm[0], cm[1])
                : modulate(b + "norm1_context", c, cm[1], cm[0]);
        String[] att = jointAttention(b + "attn", h, hc, !last);
        x = gated(b + "attn.residual", x, m[2], att[0]);
        if (dual) { // attn2 reads the block input's LN, modulated by shift_msa2 and scale_msa2
            String h2 = modulateNormed(b + "norm1.msa2", xNorm, m[7], m[6]);
            x = gated(b + "attn2.residual", x, m[8], selfAttention(b + "attn2", h2));
        }
        x = gated(b + "ff.residual", x, m[5], feedForward(b + "ff", modulate(b + "norm2", x, m[4], m[3])));
        if (last) {
            return new String[] {x, null};
        }
        c = gated(b + "attn.context_residual", c, cm[2], att[1]);
        c = gated(b + "ff_context.residual", c, cm[5],
                feedForward(b + "ff_context", modulate(b + "norm2_context", c, cm[4], cm[3])));
        return new String[] {x, c};
    }

    /** FeedForward: net.0.proj, GELU (tanh), net.2. */
    private String feedForward(String prefix, String x) throws BackendException {
        String hidden = ops.geluTanh(prefix + ".gelu", ops.linear(x, prefix + ".net.0.proj"));
        return ops.linear(hidden, prefix + ".net.2");
    }

    /** q, k, v of one stream as [N, heads, tokens, hd], q and k RMS-normalised per head with qk_norm. */
    private String[] qkv(String a, String x, String q, String k, String v, String nq, String nk)
            throws BackendException {
        String qh = ops.splitHeads(a + "." + q + ".heads", ops.linear(x, a + "." + q), heads, headDim);
        String kh = ops.splitHeads(a + "." + k + ".heads", ops.linear(x, a + "." + k), heads, headDim);
        String vh = ops.splitHeads(a + "." + v + ".heads", ops.linear(x, a + "." + v), heads, headDim);
        if (spec.text().rmsQkNorm()) {
            qh = ops.rmsNorm(a + "." + nq, qh, ops.w.f32(a + "." + nq + ".weight"), RMS_EPS);
            kh = ops.rmsNorm(a + "." + nk, kh, ops.w.f32(a + "." + nk + ".weight"), RMS_EPS);
        }
        return new String[] {qh, kh, vh};
    }

    /**
     * Joint attention over [image ; context] (no mask, scale 1/√hd); returns {image output after to_out.0, context
     * output after to_add_out}, the context output null where the block drops it (context_pre_only).
     */
    private String[] jointAttention(String a, String x, String c, boolean contextOut) throws BackendException {
        String[] img = qkv(a, x, "to_q", "to_k", "to_v", "norm_q", "norm_k");
        String[] ctx = qkv(a, c, "add_q_proj", "add_k_proj", "add_v_proj", "norm_added_q", "norm_added_k");
        String q = ops.concat(a + ".q", 2, img[0], ctx[0]);
        String k = ops.concat(a + ".k", 2, img[1], ctx[1]);
        String v = ops.concat(a + ".v", 2, img[2], ctx[2]);
        String o = ops.mergeHeads(a + ".merged",
                ops.attention(a + ".sdpa", q, k, v, (float) Math.pow(headDim, -0.5), null), d);
        String imgOut = ops.linear(ops.slice(a + ".image", o, 1, 0, tokens), a + ".to_out.0");
        String ctxOut = contextOut ? ops.linear(ops.sliceToEnd(a + ".context", o, 1, tokens), a + ".to_add_out")
                : null;
        return new String[] {imgOut, ctxOut};
    }

    /** attn2: image-only self-attention of MMDiT-X. */
    private String selfAttention(String a, String x) throws BackendException {
        String[] p = qkv(a, x, "to_q", "to_k", "to_v", "norm_q", "norm_k");
        String o = ops.mergeHeads(a + ".merged",
                ops.attention(a + ".sdpa", p[0], p[1], p[2], (float) Math.pow(headDim, -0.5), null), d);
        return ops.linear(o, a + ".to_out.0");
    }

    /** (N, g·g, p·p·C) → (N, C, g·p, g·p): reshape to (N, g, g, p, p, C), permute to (N, C, g, p, g, p). */
    private String unpatchify(String x) {
        int p = spec.patchSize();
        int grid = spec.gridSize();
        int c = spec.outChannels();
        String r = ops.reshape("unpatchify.grid", x, 0, grid, grid, p, p, c);
        String t = ops.transpose("unpatchify.permute", r, 0, 5, 1, 3, 2, 4);
        return ops.reshape("unpatchify", t, 0, c, (long) grid * p, (long) grid * p);
    }
}
