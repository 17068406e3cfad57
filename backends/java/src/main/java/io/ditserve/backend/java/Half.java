package io.ditserve.backend.java;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The two 16-bit float formats a safetensors checkpoint stores (dtype {@code F16}, {@code BF16}), decoded to
 * float32 exactly: every F16 and every BF16 value is a float32 value, so a weight kept in 16 bits and decoded right
 * before a product gives the same float32 operands, hence the same bits, as one decoded at load (the decoding of
 * backends/api/.../Safetensors.java {@code decodeFloats}, which this must match bit for bit).
 */
enum Half {
    /** IEEE binary16: {@link Float#float16ToFloat} (F16C's vcvtph2ps where C2 intrinsifies it). */
    F16,
    /** bfloat16: the high half of a float32, so decoding is a 16-bit shift. */
    BF16;

    static final ValueLayout.OfShort LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final VectorSpecies<Integer> I = IntVector.SPECIES_PREFERRED;
    /** As many shorts as {@link MatMul#S} has floats: one short vector widens to one float vector. */
    private static final VectorSpecies<Short> SH = ShortVector.SPECIES_PREFERRED.withShape(
            VectorShape.forBitSize(I.length() * Short.SIZE));

    /** The format of a safetensors dtype, or null for any other dtype (F32, F64, integers). */
    static Half of(String dtype) {
        return switch (dtype) {
            case "F16" -> F16;
            case "BF16" -> BF16;
            default -> null;
        };
    }

    float toFloat(short bits) {
        return this == F16 ? Float.float16ToFloat(bits) : Float.intBitsToFloat((bits & 0xffff) << 16);
    }

    /**
     * dst[to .. to + count) = the values of {@code count} little-endian 16-bit floats at byte {@code from} of
     * {@code src}.
     */
    void decode(MemorySegment src, long from, float[] dst, int to, int count) {
        int i = 0;
        if (this == BF16) {
            int bound = count - count % I.length();
            for (; i < bound; i += I.length()) {
                ShortVector s = ShortVector.fromMemorySegment(SH, src, from + 2L * i, ByteOrder.LITTLE_ENDIAN);
                ((IntVector) s.convertShape(VectorOperators.ZERO_EXTEND_S2I, I, 0)).lanewise(VectorOperators.LSHL, 16)
                        .reinterpretAsFloats().intoArray(dst, to + i);
            }
        }
        for (; i < count; i++) {
            dst[to + i] = toFloat(src.get(LE, from + 2L * i));
        }
    }
}
