package io.ditserve.backend.cuda;

import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderSpec;
import java.util.List;
import java.util.Map;

/**
 * Where each tensor of a text encoder checkpoint ({@link TextEncoderCheckpoint#expectedShapes}, transformers' names)
 * lives in the one device allocation that holds its weights, in float32 elements.
 *
 * <p>Packed groups, each read as one Linear: a layer's q | k | v projections (weights [3·inner, D], then CLIP's
 * biases [3·inner]; the slot of {@code q_proj}/{@code q} is the group's) and T5's {@code wi_0 | wi_1} [2·d_ff, D].
 * Every other tensor of the checkpoint follows in checkpoint order. CLIP's position table keeps only its first
 * maxTokens rows; T5's token embedding is {@code shared.weight} or its tied copy, under {@link #T5_EMBEDDING}. Slots
 * that are not checkpoint tensors: T5's position bias {@link #POSITION_BIAS} [heads, T, T] (computed at load from
 * block 0's table, which is not uploaded) and {@link #ZEROS}, the zero bias of T5's bias-free Linears.
 */
final class TextWeights implements SlotLayout.Weights {
    /** T5's token embedding, whichever name the folder gives it. */
    static final String T5_EMBEDDING = "<token embedding>";
    /** T5's relative position bias [heads, T, T]. */
    static final String POSITION_BIAS = "<position bias>";
    /** Zeros, as long as the widest bias-free Linear output it stands in for. */
    static final String ZEROS = "<zeros>";
    /** T5's stored bias table [buckets, heads], read at load to make {@link #POSITION_BIAS}. */
    static final String T5_BIAS_TABLE = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight";

    private final SlotLayout layout = new SlotLayout();

    TextWeights(TextEncoderSpec spec) {
        Map<String, long[]> shapes = TextEncoderCheckpoint.expectedShapes(spec);
        long d = spec.hiddenSize();
        long t = spec.maxTokens();
        switch (spec.kind()) {
            case CLIP_WITH_PROJECTION -> {
                layout.add(TextEncoderCheckpoint.CLIP_POSITIONS, t * d);
                for (int i = 0; i < spec.layers(); i++) {
                    String a = "text_model.encoder.layers." + i + ".self_attn.";
                    for (String suffix : List.of(".weight", ".bias")) {
                        layout.packed(shapes, List.of(a + "q_proj", a + "k_proj", a + "v_proj"), suffix);
                    }
                }
            }
            case T5_ENCODER -> {
                layout.add(T5_EMBEDDING, spec.vocab() * d);
                layout.add(POSITION_BIAS, (long) spec.heads() * t * t);
                layout.add(ZEROS, Math.max(3L * spec.heads() * spec.headDim(), d));
                for (int i = 0; i < spec.layers(); i++) {
                    String a = "encoder.block." + i + ".layer.0.SelfAttention.";
                    String f = "encoder.block." + i + ".layer.1.DenseReluDense.";
                    layout.packed(shapes, List.of(a + "q", a + "k", a + "v"), ".weight");
                    layout.packed(shapes, List.of(f + "wi_0", f + "wi_1"), ".weight");
                }
            }
        }
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            if (!layout.has(e.getKey()) && !e.getKey().equals(T5_BIAS_TABLE)) {
                layout.add(e.getKey(), SlotLayout.numel(e.getValue()));
            }
        }
    }

    @Override
    public SlotLayout layout() {
        return layout;
    }
}
