package io.ditserve.backend.java;

import java.lang.foreign.MemorySegment;

/**
 * The B operand of {@link MatMul} (B = Wᵀ of a Linear layer), packed once at load in the panel layout of
 * {@link MatMul#pack}: either as float32, or as the 16-bit values an F16/BF16 checkpoint stores, in the same layout.
 *
 * <p>Why 16 bits: SD3-medium's pipeline with T5-XXL is about 7.8 G parameters; held as float32 it needs 31 GB, more
 * than a 24 GB machine has, while its BF16 release is 15.6 GB. The product still runs in float32: {@link MatMul}
 * decodes one panel (k × {@link MatMul#NR} values, {@link #unpack}) into a worker's scratch right before the
 * micro-kernels read it, and the decoding is exact ({@link Half}), so the results are bit-identical to decoding at
 * load. Its cost is one conversion per weight per row tile, against 2·rows FLOPs per weight.
 *
 * <p>The 16-bit panels live off the Java heap, in native memory ({@link NativeMemory}: freed when these panels are
 * unreachable, not capped by MaxDirectMemorySize): the heap then holds only activations and the small float32 parts (biases, norms), and the process's
 * resident size is the weights' bytes rather than whatever the collector has committed around them.
 */
final class Panels {
    final int k;
    final int n;
    private final float[] f32; // MatMul.packedSize(k, n) floats, or null
    private final MemorySegment bits; // MatMul.packedSize(k, n) shorts (little-endian), or null
    private final Half half;

    private Panels(int k, int n, float[] f32, MemorySegment bits, Half half) {
        this.k = k;
        this.n = n;
        this.f32 = f32;
        this.bits = bits;
        this.half = half;
    }

    /** Float32 panels already packed by {@link MatMul#pack} (k × n). */
    static Panels of(float[] packed, int k, int n) {
        return new Panels(k, n, packed, null, null);
    }

    /**
     * Empty 16-bit panels for a k × n matrix in {@code half}, to be filled by {@link #packColumns}; padding columns
     * of the last panel are zeros (the memory comes zeroed).
     */
    static Panels of16(Half half, int k, int n) {
        MemorySegment seg = NativeMemory.zeroed(2L * MatMul.packedSize(k, n));
        return new Panels(k, n, null, seg, half);
    }

    /**
     * Packs columns j0 .. j0 + cols of B from a PyTorch weight W (cols, k) of this panels' format, little-endian
     * 16-bit values row-major at byte {@code from} of {@code src}: B[r][j0 + j] = W[j][r]. Several weights of the
     * same input fill one B side by side (q | k | v), as {@link MatMul#pack} of their concatenation would.
     */
    void packColumns(MemorySegment src, long from, int j0, int cols) {
        for (int j = 0; j < cols; j++) {
            int col = j0 + j;
            long dst = 2L * ((long) (col / MatMul.NR) * k * MatMul.NR + col % MatMul.NR);
            long s = from + 2L * j * k;
            for (int r = 0; r < k; r++) {
                bits.set(Half.LE, dst + 2L * r * MatMul.NR, src.get(Half.LE, s + 2L * r));
            }
        }
    }

    boolean is16() {
        return bits != null;
    }

    /** The format of 16-bit panels, null for float32. */
    Half half() {
        return half;
    }

    /** The float32 panels, or null when they are 16-bit. */
    float[] floats() {
        return f32;
    }

    /** Bytes the packed values take (the padding of the last panel included). */
    long bytes() {
        return f32 != null ? 4L * f32.length : bits.byteSize();
    }

    /** dst[to .. to + k·NR) = panel p as float32, in the layout the micro-kernels read. */
    void unpack(int p, float[] dst, int to) {
        half.decode(bits, 2L * p * k * MatMul.NR, dst, to, k * MatMul.NR);
    }
}
