package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;

/**
 * The DiT parameters as float32 heap arrays in the checkpoint's own layout, one array per tensor, read from a
 * safetensors file with the released DiT key names (docs/DIT_MODEL.md, "Checkpoint layout").
 *
 * <p>Every tensor the spec implies is checked by name and shape before anything is copied, and a tensor the model
 * would not use fails too (like PyTorch's strict {@code load_state_dict}): a checkpoint of another size must not
 * load half-used ({@link CheckpointReader}). This layout is the scalar path's; {@link VectorDit} packs each
 * tensor as it is read and never builds this object. Shapes in comments: D = hidden size, T = tokens, p = patch
 * size.
 */
final class DitWeights {

    /** A PyTorch {@code nn.Linear}: {@code y = x·Wᵀ + b}, {@code weight} row-major (out, in). */
    record Linear(float[] weight, float[] bias, int out, int in) {}

    /** One {@code blocks.i} of the checkpoint. */
    record Block(
            Linear adaLN, // adaLN_modulation.1 (6D, D)
            Linear qkv, // attn.qkv (3D, D)
            Linear proj, // attn.proj (D, D)
            Linear fc1, // mlp.fc1 (mlp_hidden, D)
            Linear fc2, // mlp.fc2 (D, mlp_hidden)
            DitMath.QkNorm qkNorm) {} // attn.q_norm, attn.k_norm (head_dim each), or null without qk_norm

    final float[] posEmbed; // pos_embed (1, T, D)
    final Linear xEmbedder; // x_embedder.proj: weight (D, C_in, p, p) read as (D, C_in·p·p)
    final Linear tMlp0; // t_embedder.mlp.0 (D, 256)
    final Linear tMlp2; // t_embedder.mlp.2 (D, D)
    final float[] yEmbedding; // y_embedder.embedding_table.weight (num_classes + 1, D), last row = null class
    final Block[] blocks; // blocks.0 .. blocks.(depth - 1)
    final Linear finalAdaLN; // final_layer.adaLN_modulation.1 (2D, D)
    final Linear finalLinear; // final_layer.linear (p·p·C_out, D)

    DitWeights(ModelSpec s, CheckpointReader st) throws BackendException {
        int d = s.hiddenSize();
        posEmbed = st.floats("pos_embed");
        xEmbedder = linear(st, "x_embedder.proj", d, s.inChannels() * s.patchSize() * s.patchSize());
        tMlp0 = linear(st, "t_embedder.mlp.0", d, DitMath.FREQ_DIM);
        tMlp2 = linear(st, "t_embedder.mlp.2", d, d);
        yEmbedding = st.floats("y_embedder.embedding_table.weight");
        blocks = new Block[s.depth()];
        for (int i = 0; i < blocks.length; i++) {
            String b = "blocks." + i + ".";
            blocks[i] = new Block(
                    linear(st, b + "adaLN_modulation.1", 6 * d, d),
                    linear(st, b + "attn.qkv", 3 * d, d),
                    linear(st, b + "attn.proj", d, d),
                    linear(st, b + "mlp.fc1", s.mlpHidden(), d),
                    linear(st, b + "mlp.fc2", d, s.mlpHidden()),
                    s.qkNorm() ? DitMath.QkNorm.read(st, b) : null);
        }
        finalAdaLN = linear(st, "final_layer.adaLN_modulation.1", 2 * d, d);
        finalLinear = linear(st, "final_layer.linear", s.patchSize() * s.patchSize() * s.outChannels(), d);
    }

    private static Linear linear(CheckpointReader st, String prefix, int out, int in) throws BackendException {
        return new Linear(st.floats(prefix + ".weight"), st.floats(prefix + ".bias"), out, in);
    }
}
