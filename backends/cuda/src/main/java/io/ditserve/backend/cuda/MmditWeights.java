package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Where each tensor of an MMDiT checkpoint ({@link MmditCheckpoint#expectedShapes}, diffusers' names) lives in the
 * one device allocation that holds the weights, in float32 elements.
 *
 * <p>Packed groups, each read as one Linear:
 * <ul>
 *   <li>every adaLN Linear, which all read SiLU(temb): per block {@code norm1.linear} (6D or 9D outputs) then
 *       {@code norm1_context.linear} (6D, or 2D in the last block), and {@code norm_out.linear} (2D) last; the
 *       weights back to back, then the biases: one product gives a modulation row of {@link #modulationWidth}
 *       columns per sample, with each layer's chunks at {@link #imageModOffset}, {@link #contextModOffset} and
 *       {@link #finalModOffset};
 *   <li>per attention and stream, {@code to_q | to_k | to_v} (image) and {@code add_q_proj | add_k_proj |
 *       add_v_proj} (context), weights [3D, D] then biases [3D]: the slot of the first name is the group's
 *       ({@link #QKV}, {@link #ADD_QKV}).
 * </ul>
 * Every other tensor follows in checkpoint order, except {@code pos_embed.pos_embed}: only its centred crop is
 * uploaded, as the non-checkpoint slot {@link #POS} [T, D] (docs/TEXT_MODELS.md, "MMDiT", step 1); {@link #FREQS}
 * holds the 128 timestep frequencies.
 */
final class MmditWeights implements SlotLayout.Weights {
    /** The timestep frequencies ({@link DitConstants#timestepFrequencies}). */
    static final String FREQS = "<timestep frequencies>";
    /** The position table's centred g×g crop, [T, D]. */
    static final String POS = "<cropped position table>";
    /** The stored position table, read at load to make {@link #POS}, not uploaded. */
    static final String POS_TABLE = "pos_embed.pos_embed";
    /** The image q | k | v group of an attention: name of its first slot, after the attention's prefix. */
    static final String QKV = "to_q";
    /** The context q | k | v group of a joint attention. */
    static final String ADD_QKV = "add_q_proj";

    private final SlotLayout layout = new SlotLayout();
    private final int[] imageMod;
    private final int[] contextMod;
    private final int finalMod;
    private final int modWidth;

    MmditWeights(ModelSpec spec) {
        Map<String, long[]> shapes = MmditCheckpoint.expectedShapes(spec);
        int depth = spec.depth();
        imageMod = new int[depth];
        contextMod = new int[depth];
        List<String> mods = new ArrayList<>();
        int col = 0;
        for (int i = 0; i < depth; i++) {
            String b = "transformer_blocks." + i + ".";
            imageMod[i] = col;
            col += Math.toIntExact(shapes.get(b + "norm1.linear.weight")[0]);
            contextMod[i] = col;
            col += Math.toIntExact(shapes.get(b + "norm1_context.linear.weight")[0]);
            mods.add(b + "norm1.linear");
            mods.add(b + "norm1_context.linear");
        }
        finalMod = col;
        col += Math.toIntExact(shapes.get("norm_out.linear.weight")[0]);
        mods.add("norm_out.linear");
        modWidth = col;
        layout.packed(shapes, mods, ".weight");
        layout.packed(shapes, mods, ".bias");
        for (int i = 0; i < depth; i++) {
            String b = "transformer_blocks." + i + ".";
            for (String a : List.of(b + "attn.", b + "attn2.")) {
                if (!shapes.containsKey(a + "to_q.weight")) {
                    continue; // no attn2 in this block
                }
                for (String suffix : List.of(".weight", ".bias")) {
                    layout.packed(shapes, List.of(a + "to_q", a + "to_k", a + "to_v"), suffix);
                    if (shapes.containsKey(a + "add_q_proj.weight")) {
                        layout.packed(shapes, List.of(a + "add_q_proj", a + "add_k_proj", a + "add_v_proj"), suffix);
                    }
                }
            }
        }
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            if (!layout.has(e.getKey()) && !e.getKey().equals(POS_TABLE)) {
                layout.add(e.getKey(), SlotLayout.numel(e.getValue()));
            }
        }
        layout.add(POS, (long) spec.tokens() * spec.hiddenSize());
        layout.add(FREQS, DitConstants.FREQ_HALF);
    }

    @Override
    public SlotLayout layout() {
        return layout;
    }

    /** Columns of a modulation row: Σ over blocks of (6 or 9)·D + (6 or 2)·D, plus 2·D for norm_out. */
    int modulationWidth() {
        return modWidth;
    }

    /** Offset of the packed modulation weight [modulationWidth, D]. */
    long modulationWeightOffset() {
        return offset("transformer_blocks.0.norm1.linear.weight");
    }

    /** Offset of the packed modulation bias [modulationWidth]. */
    long modulationBiasOffset() {
        return offset("transformer_blocks.0.norm1.linear.bias");
    }

    /**
     * Column of block i's image chunks in a modulation row: shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
     * gate_mlp (then shift_msa2, scale_msa2, gate_msa2 in a dual-attention block) at + 0, D, 2D, ….
     */
    int imageModOffset(int block) {
        return imageMod[block];
    }

    /** Column of block i's context chunks: the same six, or scale | shift in the last (context_pre_only) block. */
    int contextModOffset(int block) {
        return contextMod[block];
    }

    /** Column of norm_out's chunks: scale, then shift at + D. */
    int finalModOffset() {
        return finalMod;
    }
}
