package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ModelSpec;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where each checkpoint tensor lives in the one device allocation that holds the weights, in float32 elements.
 *
 * <p>The adaLN modulation weights of all blocks and of the final layer are packed back to back,
 * {@code blocks.0 … blocks.(depth−1), final_layer}, and so are their biases: read together they are one Linear
 * [(6·depth + 2)·D, D] that computes every modulation of the pass in a single matrix product (they all read the
 * same SiLU(c)), giving the row layout documented at {@link #blockModOffset}. Every other tensor follows in the
 * order of {@link DitCheckpoint#expectedShapes}, each starting on a 256-byte boundary. One more slot, {@link #FREQS}, holds the
 * 128 timestep frequencies that the host computes.
 *
 * <p>Shapes are those of the released checkpoint (docs/DIT_MODEL.md, "Checkpoint layout"), D = hidden size.
 */
final class WeightLayout {
    /** The non-checkpoint slot of the timestep frequencies (see {@link DitConstants#timestepFrequencies}). */
    static final String FREQS = "<timestep frequencies>";
    /** Alignment of each slot outside the packed modulation groups, in floats (256 bytes). */
    static final int ALIGN = 64;

    /** One tensor's place: offset and length in floats. */
    record Slot(String name, long offset, long length) {}

    private final ModelSpec spec;
    private final Map<String, long[]> shapes;
    private final Map<String, Slot> slots;
    private final long totalFloats;

    WeightLayout(ModelSpec spec) {
        this.spec = spec;
        this.shapes = DitCheckpoint.expectedShapes(spec);
        Map<String, Slot> s = new LinkedHashMap<>();
        long at = 0;
        // the packed modulation weights, then their biases: contiguous within each group
        for (String suffix : List.of(".weight", ".bias")) {
            for (String prefix : modulationPrefixes(spec)) {
                String name = prefix + suffix;
                long len = numel(shapes.get(name));
                s.put(name, new Slot(name, at, len));
                at += len;
            }
            at = align(at);
        }
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            if (!s.containsKey(e.getKey())) {
                long len = numel(e.getValue());
                s.put(e.getKey(), new Slot(e.getKey(), at, len));
                at = align(at + len);
            }
        }
        s.put(FREQS, new Slot(FREQS, at, DitConstants.FREQ_HALF));
        at = align(at + DitConstants.FREQ_HALF);
        this.slots = Collections.unmodifiableMap(s);
        this.totalFloats = at;
    }

    private static List<String> modulationPrefixes(ModelSpec s) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < s.depth(); i++) {
            out.add("blocks." + i + ".adaLN_modulation.1");
        }
        out.add("final_layer.adaLN_modulation.1");
        return out;
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    private static long align(long floats) {
        return (floats + ALIGN - 1) / ALIGN * ALIGN;
    }

    /** The expected checkpoint shapes (names in checkpoint order). */
    Map<String, long[]> shapes() {
        return shapes;
    }

    /** All slots, packed modulation groups first, {@link #FREQS} last. */
    Map<String, Slot> slots() {
        return slots;
    }

    /** Offset of a tensor in floats. */
    long offset(String name) {
        Slot s = slots.get(name);
        if (s == null) {
            throw new IllegalArgumentException("no weight slot '" + name + "'");
        }
        return s.offset();
    }

    long totalFloats() {
        return totalFloats;
    }

    /** Width of the packed modulation rows: (6·depth + 2)·D. */
    int modulationWidth() {
        return (6 * spec.depth() + 2) * spec.hiddenSize();
    }

    /** Offset of the packed modulation weight [(6·depth + 2)·D, D]: the first modulation slot. */
    long modulationWeightOffset() {
        return offset(modulationPrefixes(spec).getFirst() + ".weight");
    }

    /** Offset of the packed modulation bias [(6·depth + 2)·D]. */
    long modulationBiasOffset() {
        return offset(modulationPrefixes(spec).getFirst() + ".bias");
    }

    /**
     * Column of block i's first modulation chunk in a modulation row; its six D-wide chunks are shift1, scale1,
     * gate1, shift2, scale2, gate2 at i·6D + 0, D, …, 5D.
     */
    int blockModOffset(int block) {
        return block * 6 * spec.hiddenSize();
    }

    /** Column of the final layer's shift chunk; its scale chunk follows at + D. */
    int finalModOffset() {
        return spec.depth() * 6 * spec.hiddenSize();
    }
}
