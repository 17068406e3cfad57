package io.ditserve.backend.cuda;

import java.util.Collection;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Named regions of one device allocation, in 4-byte elements, for the layouts of the MMDiT and the text encoders
 * ({@link MmditWeights}, {@link MmditBuffers}, {@link TextWeights}, {@link TextBuffers}): slots are added in order,
 * a {@link #packed} group back to back (several tensors read as one matrix, e.g. q | k | v as one Linear), every
 * single slot and every group starting on a 256-byte boundary ({@link WeightLayout#ALIGN} floats).
 */
final class SlotLayout {
    /** One region: offset and length in elements. */
    record Slot(String name, long offset, long length) {}

    /**
     * A checkpoint's weights in one allocation laid out by a slot layout ({@link MmditWeights}, {@link TextWeights}).
     */
    interface Weights {
        /** Every slot, in allocation order. */
        SlotLayout layout();

        /** Offset of a tensor's slot, in floats. */
        default long offset(String name) {
            return layout().offset(name);
        }

        /** Floats of the whole allocation. */
        default long totalFloats() {
            return layout().totalElements();
        }
    }

    /**
     * A pass's activation buffers in one allocation laid out by a slot layout, one slot per buffer {@code B}, named
     * after it ({@link MmditBuffers}, {@link TextBuffers}).
     */
    interface Buffers<B extends Enum<B>> extends PassMemory.Layout {
        /** The slots, one per buffer. */
        SlotLayout layout();

        /** Offset of a buffer, in elements. */
        default long offset(B buffer) {
            return layout().offset(buffer.name());
        }

        /** Length of a buffer, in elements. */
        default long length(B buffer) {
            return layout().length(buffer.name());
        }

        @Override
        default long totalBytes() {
            return DevicePtr.floatBytes(layout().totalElements());
        }
    }

    private final Map<String, Slot> slots = new LinkedHashMap<>();
    private long at;

    /** Adds one slot of {@code length} elements on an aligned offset; returns the offset. */
    long add(String name, long length) {
        long offset = put(name, length);
        align();
        return offset;
    }

    /** Adds the slots back to back (lengths in the same order), then aligns; returns the first one's offset. */
    long packed(List<String> names, List<Long> lengths) {
        if (names.size() != lengths.size() || names.isEmpty()) {
            throw new IllegalArgumentException(names + " with lengths " + lengths);
        }
        long first = at;
        for (int i = 0; i < names.size(); i++) {
            put(names.get(i), lengths.get(i));
        }
        align();
        return first;
    }

    /**
     * The tensors {@code prefix + suffix} of {@code prefixes} (shapes from a checkpoint header) as one packed group,
     * in that order.
     */
    long packed(Map<String, long[]> shapes, List<String> prefixes, String suffix) {
        List<String> names = new java.util.ArrayList<>();
        List<Long> lengths = new java.util.ArrayList<>();
        for (String prefix : prefixes) {
            names.add(prefix + suffix);
            lengths.add(numel(shapes.get(prefix + suffix)));
        }
        return packed(names, lengths);
    }

    /** Elements of a tensor of {@code shape}. */
    static long numel(long[] shape) {
        long n = 1;
        for (long d : shape) {
            n *= d;
        }
        return n;
    }

    private long put(String name, long length) {
        if (length < 0) {
            throw new IllegalArgumentException("slot '" + name + "' of " + length + " elements");
        }
        if (slots.putIfAbsent(name, new Slot(name, at, length)) != null) {
            throw new IllegalArgumentException("slot '" + name + "' twice");
        }
        long offset = at;
        at += length;
        return offset;
    }

    private void align() {
        at = (at + WeightLayout.ALIGN - 1) / WeightLayout.ALIGN * WeightLayout.ALIGN;
    }

    boolean has(String name) {
        return slots.containsKey(name);
    }

    Slot slot(String name) {
        Slot s = slots.get(name);
        if (s == null) {
            throw new IllegalArgumentException("no slot '" + name + "'");
        }
        return s;
    }

    long offset(String name) {
        return slot(name).offset();
    }

    long length(String name) {
        return slot(name).length();
    }

    /** The slots in the order they were added. */
    Collection<Slot> slots() {
        return Collections.unmodifiableCollection(slots.values());
    }

    /** Elements of the whole allocation (the end of the last slot, aligned). */
    long totalElements() {
        return at;
    }
}
