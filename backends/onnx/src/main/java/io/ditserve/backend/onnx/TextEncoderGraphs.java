package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderSpec;
import java.util.List;

/**
 * The text encoders of SD3's pipeline as ONNX graphs, built from the spec and the folder's tensors: the functions of
 * the java backend's ClipTextEncoder and T5TextEncoder (docs/TEXT_MODELS.md, "Text encoders"; references
 * tools/sd3/clip_text.py and tools/sd3/t5_encoder.py). Input {@code ids} [N, T] int64 with T the spec's token count
 * (N symbolic); output {@code hidden} [N, T, width]; CLIP also takes {@code pool_rows} [N] int64 and gives
 * {@code pooled} [N, projection_dim].
 *
 * <p>What is a rule rather than a weight is decided in Java and enters as data: CLIP's pooling position (which
 * depends on eos_token_id and the ids, see {@link OnnxTextEncoder#eosPosition}) as the flat row index b·T + position
 * of each sample; T5's relative-position buckets as a constant [T, T] index into the stored bias table.
 */
final class TextEncoderGraphs {
    static final String IDS = "ids";
    static final String POOL_ROWS = "pool_rows";
    static final String HIDDEN = "hidden";
    static final String POOLED = "pooled";

    private TextEncoderGraphs() {}

    /**
     * CLIPTextModelWithProjection: token + position embeddings; per layer x += out_proj(attn(LN1(x))) with a causal
     * mask and scale 1/√head_dim, then x += fc2(act(fc1(LN2(x)))); {@code hidden} is hidden_states[hiddenLayer] (the
     * embeddings for 0, else layer k's output, before final_layer_norm); {@code pooled} is final_layer_norm of the
     * last layer at the pooled rows, projected by text_projection (no bias).
     */
    static byte[] clip(TextEncoderSpec s, OnnxGraph g, GraphWeights w) throws BackendException {
        GraphOps ops = new GraphOps(g, w);
        int t = s.maxTokens();
        int d = s.hiddenSize();
        String ids = g.input(IDS, OnnxGraph.INT64, "N", t);
        String rows = g.input(POOL_ROWS, OnnxGraph.INT64, "N");
        String e = "text_model.embeddings.";
        String tokens = ops.op("Gather", e + "token_embedding", w.f32(e + "token_embedding.weight"), ids);
        String positions = ops.slice(e + "position_embedding", w.f32(TextEncoderCheckpoint.CLIP_POSITIONS), 0, 0, t);
        String x = ops.add(e + "sum", tokens, positions);
        float[] causal = new float[t * t];
        for (int i = 0; i < t; i++) {
            for (int j = i + 1; j < t; j++) {
                causal[i * t + j] = Float.NEGATIVE_INFINITY;
            }
        }
        String mask = g.constant("causal_mask", causal, t, t);
        String hidden = s.hiddenLayer() == 0 ? x : null;
        float scale = (float) Math.pow(s.headDim(), -0.5);
        for (int i = 0; i < s.layers(); i++) {
            String p = "text_model.encoder.layers." + i + ".";
            String h = ops.layerNorm(p + "layer_norm1", x, w.f32(p + "layer_norm1.weight"),
                    w.f32(p + "layer_norm1.bias"), s.eps());
            String a = p + "self_attn";
            String q = ops.splitHeads(a + ".q", ops.linear(h, a + ".q_proj"), s.heads(), s.headDim());
            String k = ops.splitHeads(a + ".k", ops.linear(h, a + ".k_proj"), s.heads(), s.headDim());
            String v = ops.splitHeads(a + ".v", ops.linear(h, a + ".v_proj"), s.heads(), s.headDim());
            String o = ops.mergeHeads(a + ".merged", ops.attention(a + ".sdpa", q, k, v, scale, mask), d);
            x = ops.add(p + "attn_residual", x, ops.linear(o, a + ".out_proj"));
            h = ops.layerNorm(p + "layer_norm2", x, w.f32(p + "layer_norm2.weight"), w.f32(p + "layer_norm2.bias"),
                    s.eps());
            String f = ops.linear(h, p + "mlp.fc1");
            f = switch (s.activation()) {
                case "quick_gelu" -> ops.quickGelu(p + "mlp.act", f);
                case "gelu" -> ops.geluErf(p + "mlp.act", f);
                case "gelu_new", "gelu_pytorch_tanh" -> ops.geluTanh(p + "mlp.act", f);
                default -> throw new BackendException(s.directory() + ": hidden_act '" + s.activation()
                        + "' is not supported");
            };
            x = ops.add(p + "mlp_residual", x, ops.linear(f, p + "mlp.fc2"));
            if (i + 1 == s.hiddenLayer()) {
                hidden = x;
            }
        }
        if (hidden == null) {
            throw new BackendException(s.directory() + ": hidden layer " + s.hiddenLayer() + " of " + s.layers());
        }
        g.output(hidden, HIDDEN, OnnxGraph.FLOAT, "N", t, d);
        // final_layer_norm is per token: only the pooled rows need it
        String flat = ops.reshape("pool.flat", x, -1, d);
        String pooledRows = ops.op("Gather", "pool.rows", List.of(flat, rows), OnnxGraph.Attr.of("axis", 0L));
        String normed = ops.layerNorm("text_model.final_layer_norm", pooledRows,
                w.f32("text_model.final_layer_norm.weight"), w.f32("text_model.final_layer_norm.bias"), s.eps());
        g.output(ops.linear(normed, "text_projection", false), POOLED, OnnxGraph.FLOAT, "N", s.projectionDim());
        return g.toBytes("ditserve onnx backend: " + s.summary());
    }

    /**
     * T5EncoderModel (v1.1): x = embedding[ids]; a position bias [heads, T, T] gathered from block 0's
     * relative_attention_bias by the buckets of key − query, added in every block; per block x += o(attention(RMS(x)))
     * with no scaling and no mask, then x += wo(gelu_new(wi_0(h)) ⊙ wi_1(h)), h = RMS(x); the output is
     * final_layer_norm(x). No linear layer has a bias.
     */
    static byte[] t5(TextEncoderSpec s, OnnxGraph g, GraphWeights w, String embedding) throws BackendException {
        GraphOps ops = new GraphOps(g, w);
        int t = s.maxTokens();
        int d = s.hiddenSize();
        int inner = s.heads() * s.headDim();
        String ids = g.input(IDS, OnnxGraph.INT64, "N", t);
        String x = ops.op("Gather", "embed_tokens", w.f32(embedding), ids);
        long[] buckets = new long[t * t];
        for (int i = 0; i < t; i++) {
            for (int j = 0; j < t; j++) {
                buckets[i * t + j] = bucket(j - i, s.relativeBuckets(), s.relativeMaxDistance());
            }
        }
        String table = w.f32("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight");
        String gathered = ops.op("Gather", "position_bias.gather", table, g.constant("position_buckets", buckets, t, t));
        String bias = ops.transpose("position_bias", gathered, 2, 0, 1); // [T, T, heads] → [heads, T, T]
        for (int i = 0; i < s.layers(); i++) {
            String a = "encoder.block." + i + ".layer.0.";
            String h = ops.rmsNorm(a + "layer_norm", x, w.f32(a + "layer_norm.weight"), s.eps());
            String sa = a + "SelfAttention";
            String q = ops.splitHeads(sa + ".q.heads", ops.linear(h, sa + ".q", false), s.heads(), s.headDim());
            String k = ops.splitHeads(sa + ".k.heads", ops.linear(h, sa + ".k", false), s.heads(), s.headDim());
            String v = ops.splitHeads(sa + ".v.heads", ops.linear(h, sa + ".v", false), s.heads(), s.headDim());
            String o = ops.mergeHeads(sa + ".merged", ops.attention(sa + ".sdpa", q, k, v, 1f, bias), inner);
            x = ops.add(a + "residual", x, ops.linear(o, sa + ".o", false));
            String f = "encoder.block." + i + ".layer.1.";
            h = ops.rmsNorm(f + "layer_norm", x, w.f32(f + "layer_norm.weight"), s.eps());
            String ff = f + "DenseReluDense";
            String gate = ops.geluTanh(ff + ".gelu", ops.linear(h, ff + ".wi_0", false));
            String gated = ops.mul(ff + ".gated", gate, ops.linear(h, ff + ".wi_1", false));
            x = ops.add(f + "residual", x, ops.linear(gated, ff + ".wo", false));
        }
        String out = ops.rmsNorm("encoder.final_layer_norm", x, w.f32("encoder.final_layer_norm.weight"), s.eps());
        g.output(out, HIDDEN, OnnxGraph.FLOAT, "N", t, d);
        return g.toBytes("ditserve onnx backend: " + s.summary());
    }

    /** T5's bidirectional bucket of rel = key − query ({@link io.ditserve.backend.TextEncoderRules#t5Bucket}). */
    static int bucket(int rel, int buckets, int maxDistance) {
        return io.ditserve.backend.TextEncoderRules.t5Bucket(rel, buckets, maxDistance);
    }
}
