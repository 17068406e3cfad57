package io.ditserve.backend.java;

import java.lang.foreign.MemorySegment;

/**
 * An embedding table (rows × width) of which a forward pass reads a few rows (a prompt's tokens): float32, or the
 * F16/BF16 values of the checkpoint, decoded exactly per row looked up ({@link Half}), off the heap like
 * {@link Panels}. T5-XXL's shared table is 32128 × 4096: 263 MB in BF16, 526 MB as float32.
 */
final class Table {
    final int rows;
    final int width;
    private final float[] f32;
    private final MemorySegment bits;
    private final Half half;

    private Table(int rows, int width, float[] f32, MemorySegment bits, Half half) {
        this.rows = rows;
        this.width = width;
        this.f32 = f32;
        this.bits = bits;
        this.half = half;
    }

    static Table of(float[] values, int rows, int width) {
        return new Table(rows, width, values, null, null);
    }

    /** A copy of the stored little-endian 16-bit values {@code src} (rows × width, row-major). */
    static Table of16(Half half, MemorySegment src, int rows, int width) {
        MemorySegment seg = NativeMemory.zeroed(2L * rows * width);
        seg.copyFrom(src.asSlice(0, 2L * rows * width));
        return new Table(rows, width, null, seg, half);
    }

    /** dst[off .. off + width) = row {@code r}. */
    void row(int r, float[] dst, int off) {
        if (f32 != null) {
            System.arraycopy(f32, r * width, dst, off, width);
        } else {
            half.decode(bits, 2L * r * width, dst, off, width);
        }
    }

    /** Bytes the values take. */
    long bytes() {
        return f32 != null ? 4L * f32.length : bits.byteSize();
    }
}
