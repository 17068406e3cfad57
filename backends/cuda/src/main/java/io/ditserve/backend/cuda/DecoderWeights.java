package io.ditserve.backend.cuda;

import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Where each tensor of a decoder checkpoint lives in the one device allocation that holds its weights, in float32
 * elements, under the canonical (diffusers) names of {@link DecoderCheckpoint#expectedShapes}.
 *
 * <p>The mid-block attention's {@code to_q}, {@code to_k}, {@code to_v} weights are packed back to back, and so are
 * their biases: read together they are one Linear [3C, C], so one matrix product computes q, k and v
 * ({@link #QKV_WEIGHT}, {@link #QKV_BIAS}). Every other tensor follows in network order, each starting on a
 * 256-byte boundary. A convolution weight [out, in, k, k] is used as it is stored: the row-major matrix
 * [out, in·k·k] that multiplies the im2col columns.
 */
final class DecoderWeights {
    private static final String ATTENTION = "decoder.mid_block.attentions.0.";
    /** The packed q, k, v weight [3C, C] of the mid-block attention: its first slot. */
    static final String QKV_WEIGHT = ATTENTION + "to_q.weight";
    /** The packed q, k, v bias [3C]. */
    static final String QKV_BIAS = ATTENTION + "to_q.bias";

    /** One tensor's place: offset and length in floats. */
    record Slot(String name, long offset, long length) {}

    private final Map<String, long[]> shapes;
    private final Map<String, Slot> slots;
    private final long totalFloats;

    DecoderWeights(DecoderSpec spec) {
        shapes = DecoderCheckpoint.expectedShapes(spec);
        Map<String, Slot> s = new LinkedHashMap<>();
        long at = 0;
        if (spec.kind() == DecoderSpec.Kind.FULL && spec.midBlockAttention()) {
            for (String suffix : List.of(".weight", ".bias")) {
                for (String p : List.of("to_q", "to_k", "to_v")) {
                    String name = ATTENTION + p + suffix;
                    long len = numel(shapes.get(name));
                    s.put(name, new Slot(name, at, len));
                    at += len;
                }
                at = align(at);
            }
        }
        for (Map.Entry<String, long[]> e : shapes.entrySet()) {
            if (!s.containsKey(e.getKey())) {
                long len = numel(e.getValue());
                s.put(e.getKey(), new Slot(e.getKey(), at, len));
                at = align(at + len);
            }
        }
        slots = Collections.unmodifiableMap(s);
        totalFloats = at;
    }

    private static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    private static long align(long floats) {
        return (floats + WeightLayout.ALIGN - 1) / WeightLayout.ALIGN * WeightLayout.ALIGN;
    }

    /** The checkpoint shapes, in network order. */
    Map<String, long[]> shapes() {
        return shapes;
    }

    /** All slots, the packed attention groups first. */
    Map<String, Slot> slots() {
        return slots;
    }

    /** Offset of a tensor in floats. */
    long offset(String name) {
        Slot s = slots.get(name);
        if (s == null) {
            throw new IllegalArgumentException("no decoder weight slot '" + name + "'");
        }
        return s.offset();
    }

    long totalFloats() {
        return totalFloats;
    }
}
