package io.ditserve.backend.java;

import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.VectorOperators;

/**
 * exp and sums whose results do not depend on how the JVM runs them.
 *
 * <p>The Vector API's {@code lanewise(EXP)} and {@code reduceLanes(ADD)} give different bits in the interpreter
 * and C1 (a Java fallback: {@code StrictMath}, lanes summed in order) than in C2 (a vector math library, a tree
 * reduction). So the first request after start, which runs partly interpreted, returned other bytes than the same
 * request a moment later. Everything here is built from operations that IEEE 754 defines exactly (add, multiply,
 * fused multiply-add, min/max, integer shifts), which every execution mode computes to the same bits: the same
 * request gives the same bytes on its first run, on its hundredth, and in any batch.
 *
 * <p>exp: x = n·ln2 + r with n = round(x / ln2) (by the 1.5·2²³ rounding trick, so n is also read from the
 * sum's bits), ln2 split in a high part exact in float and a low part (Cody and Waite), |r| ≤ ln2 / 2, e^r by its
 * degree-7 Taylor polynomial (truncation below 5e-9 relative), times 2^n built in the exponent field. Arguments
 * are clamped to [−87.3, 88], the range where 2^n is a normal float; e^−87.3 ≈ 1.2e−38 stands for anything smaller.
 */
final class ExactMath {
    private static final float LOG2E = 1.44269504088896341f;
    private static final float LN2_HI = 0.693145751953125f;
    private static final float LN2_LO = 1.42860676533018708e-6f;
    private static final float MAGIC = 12582912f; // 1.5·2^23: adding it rounds to an integer held in the low bits
    private static final int MAGIC_BITS = Float.floatToRawIntBits(MAGIC);
    private static final float LO = -87.3f;
    private static final float HI = 88f;
    private static final float C2 = 1f / 2;
    private static final float C3 = 1f / 6;
    private static final float C4 = 1f / 24;
    private static final float C5 = 1f / 120;
    private static final float C6 = 1f / 720;
    private static final float C7 = 1f / 5040;

    private ExactMath() {}

    static float exp(float x) {
        float xc = Math.min(Math.max(x, LO), HI);
        float t = xc * LOG2E + MAGIC;
        float n = t - MAGIC;
        float r = Math.fma(n, -LN2_HI, xc);
        r = Math.fma(n, -LN2_LO, r);
        float p = Math.fma(r, C7, C6);
        p = Math.fma(p, r, C5);
        p = Math.fma(p, r, C4);
        p = Math.fma(p, r, C3);
        p = Math.fma(p, r, C2);
        p = Math.fma(p, r, 1f);
        p = Math.fma(p, r, 1f);
        float scale = Float.intBitsToFloat((Float.floatToRawIntBits(t) - MAGIC_BITS + 127) << 23);
        return p * scale;
    }

    static FloatVector exp(FloatVector x) {
        var sp = x.species();
        FloatVector xc = x.max(LO).min(HI);
        FloatVector t = xc.mul(LOG2E).add(MAGIC);
        FloatVector n = t.sub(MAGIC);
        FloatVector r = n.fma(FloatVector.broadcast(sp, -LN2_HI), xc);
        r = n.fma(FloatVector.broadcast(sp, -LN2_LO), r);
        FloatVector p = r.fma(C7, C6);
        p = p.fma(r, FloatVector.broadcast(sp, C5));
        p = p.fma(r, FloatVector.broadcast(sp, C4));
        p = p.fma(r, FloatVector.broadcast(sp, C3));
        p = p.fma(r, FloatVector.broadcast(sp, C2));
        FloatVector one = FloatVector.broadcast(sp, 1f);
        p = p.fma(r, one);
        p = p.fma(r, one);
        IntVector bits = ((IntVector) t.reinterpretAsInts()).sub(MAGIC_BITS - 127).lanewise(VectorOperators.LSHL, 23);
        return p.mul((FloatVector) bits.reinterpretAsFloats());
    }

    /** The lanes of {@code v} summed in lane order (one fixed order, unlike {@code reduceLanes(ADD)}). */
    static float sum(FloatVector v) {
        float s = 0f;
        for (int i = 0; i < v.length(); i++) {
            s += v.lane(i);
        }
        return s;
    }

    /** x·sigmoid(x) with {@link #exp(float)}. */
    static float silu(float v) {
        return v / (1f + exp(-v));
    }
}
