package io.ditserve.backend;

import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The released DiT checkpoint layout (docs/DIT_MODEL.md, "Checkpoint layout") as the spec implies it: every tensor
 * name with its shape. Backends that read {@code weights.safetensors} validate against it, so a file that does not
 * match {@code config.json} fails at load naming the tensor.
 */
public final class DitCheckpoint {

    private DitCheckpoint() {}

    /** Every tensor of the checkpoint with its shape, in the order of docs/DIT_MODEL.md; D = hidden size. */
    public static Map<String, long[]> expectedShapes(ModelSpec s) {
        long d = s.hiddenSize();
        long p = s.patchSize();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("pos_embed", new long[] {1, s.tokens(), d});
        m.put("x_embedder.proj.weight", new long[] {d, s.inChannels(), p, p});
        m.put("x_embedder.proj.bias", new long[] {d});
        putLinear(m, "t_embedder.mlp.0", d, DitConstants.FREQ_DIM);
        putLinear(m, "t_embedder.mlp.2", d, d);
        m.put("y_embedder.embedding_table.weight", new long[] {s.numClasses() + 1, d});
        for (int i = 0; i < s.depth(); i++) {
            String b = "blocks." + i + ".";
            putLinear(m, b + "adaLN_modulation.1", 6 * d, d);
            putLinear(m, b + "attn.qkv", 3 * d, d);
            if (s.qkNorm()) { // LayerNorm over the head dimension of q and k (REPA with --qk-norm)
                long hd = s.headDim();
                m.put(b + "attn.q_norm.weight", new long[] {hd});
                m.put(b + "attn.q_norm.bias", new long[] {hd});
                m.put(b + "attn.k_norm.weight", new long[] {hd});
                m.put(b + "attn.k_norm.bias", new long[] {hd});
            }
            putLinear(m, b + "attn.proj", d, d);
            putLinear(m, b + "mlp.fc1", s.mlpHidden(), d);
            putLinear(m, b + "mlp.fc2", d, s.mlpHidden());
        }
        putLinear(m, "final_layer.adaLN_modulation.1", 2 * d, d);
        putLinear(m, "final_layer.linear", p * p * s.outChannels(), d);
        return m;
    }

    private static void putLinear(Map<String, long[]> m, String prefix, long out, long in) {
        m.put(prefix + ".weight", new long[] {out, in});
        m.put(prefix + ".bias", new long[] {out});
    }

    /** Learned parameters: every tensor but the fixed {@code pos_embed}. */
    public static long parameterCount(ModelSpec s) {
        long n = 0;
        for (Map.Entry<String, long[]> e : expectedShapes(s).entrySet()) {
            if (!e.getKey().equals("pos_embed")) {
                long k = 1;
                for (long dim : e.getValue()) {
                    k *= dim;
                }
                n += k;
            }
        }
        return n;
    }

    /** Every tensor the spec implies with its shape, and no other (like PyTorch's strict load_state_dict). */
    public static void validate(Safetensors st, ModelSpec spec) throws BackendException {
        Map<String, long[]> expected = expectedShapes(spec);
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            st.expect(e.getKey(), e.getValue());
        }
        for (String name : st.entries().keySet()) {
            if (!expected.containsKey(name)) {
                throw new BackendException(st.file() + ": unexpected tensor '" + name + "' for a model with depth "
                        + spec.depth() + (spec.qkNorm() ? "" : " and no qk_norm")
                        + " (config.json and the weights do not match)");
            }
        }
    }
}
