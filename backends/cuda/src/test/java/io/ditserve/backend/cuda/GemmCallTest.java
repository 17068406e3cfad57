package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.offset;

import java.util.Random;
import org.junit.jupiter.api.Test;

/**
 * The cuBLAS arguments of each product, and what they compute when read with cuBLAS's column-major definition
 * ({@link EmulatedDevice#gemm}) compared with the row-major product written out.
 */
class GemmCallTest {
    private static final Random RANDOM = new Random(3);

    private static float[] random(int n) {
        float[] v = new float[n];
        for (int i = 0; i < n; i++) {
            v[i] = RANDOM.nextFloat() * 2 - 1;
        }
        return v;
    }

    @Test
    void linearArguments() {
        // Y[rows=10, out=6] = X[10, 4]·Wᵀ: cublasSgemm(OP_T, OP_N, m=out, n=rows, k=in, W, lda=in, X, ldb=in, Y, ldc=out)
        GemmCall g = GemmCall.linear(10, 6, 4);
        assertThat(g.opA()).isEqualTo(GemmCall.OP_T);
        assertThat(g.opB()).isEqualTo(GemmCall.OP_N);
        assertThat(new int[] {g.m(), g.n(), g.k(), g.lda(), g.ldb(), g.ldc()}).containsExactly(6, 10, 4, 4, 4, 6);
        assertThat(g.batched()).isFalse();
    }

    @Test
    void linearComputesXTimesWTransposed() {
        int rows = 5, out = 7, in = 3;
        float[] x = random(rows * in);
        float[] w = random(out * in);
        EmulatedDevice dev = new EmulatedDevice(1024);
        long xa = dev.alloc(x.length), wa = dev.alloc(w.length), ya = dev.alloc(rows * out);
        dev.write(xa, x);
        dev.write(wa, w);
        dev.gemm(GemmCall.linear(rows, out, in), wa, xa, ya);
        float[] y = dev.read(ya, rows * out);
        for (int r = 0; r < rows; r++) {
            for (int o = 0; o < out; o++) {
                float expected = 0;
                for (int k = 0; k < in; k++) {
                    expected += x[r * in + k] * w[o * in + k];
                }
                assertThat(y[r * out + o]).isCloseTo(expected, offset(1e-5f));
            }
        }
    }

    @Test
    void attentionProductsComputeSoftmaxInputsAndOutputsPerPair() {
        int tokens = 5, hd = 3, pairs = 4;
        float[] q = random(pairs * tokens * hd);
        float[] k = random(pairs * tokens * hd);
        float[] v = random(pairs * tokens * hd);
        float[] p = random(pairs * tokens * tokens);
        EmulatedDevice dev = new EmulatedDevice(4096);
        long qa = dev.alloc(q.length), ka = dev.alloc(k.length), va = dev.alloc(v.length), pa = dev.alloc(p.length);
        long sa = dev.alloc(p.length), oa = dev.alloc(v.length);
        dev.write(qa, q);
        dev.write(ka, k);
        dev.write(va, v);
        dev.write(pa, p);
        dev.gemm(GemmCall.attentionScores(tokens, hd, pairs), ka, qa, sa);
        dev.gemm(GemmCall.attentionValues(tokens, hd, pairs), va, pa, oa);
        float[] s = dev.read(sa, p.length);
        float[] o = dev.read(oa, v.length);
        for (int z = 0; z < pairs; z++) {
            int qk = z * tokens * hd, ss = z * tokens * tokens;
            for (int i = 0; i < tokens; i++) {
                for (int j = 0; j < tokens; j++) {
                    float dot = 0;
                    for (int e = 0; e < hd; e++) {
                        dot += q[qk + i * hd + e] * k[qk + j * hd + e];
                    }
                    assertThat(s[ss + i * tokens + j]).as("S[%d][%d][%d]", z, i, j)
                            .isCloseTo(dot, offset(1e-5f));
                }
                for (int e = 0; e < hd; e++) {
                    float sum = 0;
                    for (int j = 0; j < tokens; j++) {
                        sum += p[ss + i * tokens + j] * v[qk + j * hd + e];
                    }
                    assertThat(o[qk + i * hd + e]).as("O[%d][%d][%d]", z, i, e)
                            .isCloseTo(sum, offset(1e-5f));
                }
            }
        }
    }

    @Test
    void inconsistentLeadingDimensionsAreRejected() {
        assertThatThrownBy(() -> new GemmCall(true, false, 4, 4, 8, 4, 8, 4, 0, 0, 0, 1))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> new GemmCall(false, false, 4, 4, 8, 4, 8, 3, 0, 0, 0, 1))
                .isInstanceOf(IllegalArgumentException.class);
        assertThatThrownBy(() -> GemmCall.linear(0, 4, 4)).isInstanceOf(IllegalArgumentException.class);
    }
}
