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
        DevicePtr xa = dev.alloc(x.length), wa = dev.alloc(w.length), ya = dev.alloc(rows * out);
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
        DevicePtr qa = dev.alloc(q.length), ka = dev.alloc(k.length), va = dev.alloc(v.length), pa = dev.alloc(p.length);
        DevicePtr sa = dev.alloc(p.length), oa = dev.alloc(v.length);
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
    void convolutionComputesWeightTimesColumnsPerSampleAndTile() {
        // 2 samples, Y_z[out=3, cols=4] = W[3, k=5]·X_z[5, 4]; and one tile of 2 columns written into rows of 4
        int out = 3, k = 5, cols = 4;
        float[] x = random(2 * k * cols);
        float[] w = random(out * k);
        EmulatedDevice dev = new EmulatedDevice(4096);
        DevicePtr xa = dev.alloc(x.length), wa = dev.alloc(w.length), ya = dev.alloc(2 * out * cols);
        dev.write(xa, x);
        dev.write(wa, w);
        dev.gemm(GemmCall.convolution(cols, out, k, cols, cols, (long) k * cols, (long) out * cols, 2), xa, wa, ya);
        float[] y = dev.read(ya, 2 * out * cols);
        for (int z = 0; z < 2; z++) {
            for (int o = 0; o < out; o++) {
                for (int p = 0; p < cols; p++) {
                    float sum = 0;
                    for (int l = 0; l < k; l++) {
                        sum += w[o * k + l] * x[z * k * cols + l * cols + p];
                    }
                    assertThat(y[z * out * cols + o * cols + p]).isCloseTo(sum, offset(1e-5f));
                }
            }
        }
        // a tile: columns [k, 2] (its own row length 2) into pixels 1..2 of rows of 4
        float[] tile = random(k * 2);
        DevicePtr ta = dev.alloc(tile.length), ta2 = dev.alloc(out * cols);
        dev.write(ta, tile);
        dev.write(ta2, new float[out * cols]);
        dev.gemm(GemmCall.convolution(2, out, k, 2, cols, 0, 0, 1), ta, wa, ta2.plusFloats(1));
        float[] t = dev.read(ta2, out * cols);
        for (int o = 0; o < out; o++) {
            assertThat(t[o * cols]).isZero();
            assertThat(t[o * cols + 3]).isZero();
            for (int p = 0; p < 2; p++) {
                float sum = 0;
                for (int l = 0; l < k; l++) {
                    sum += w[o * k + l] * tile[l * 2 + p];
                }
                assertThat(t[o * cols + 1 + p]).isCloseTo(sum, offset(1e-5f));
            }
        }
    }

    @Test
    void channelAttentionComputesScoresAndOutputsFromChannelPlanes() {
        // q, k, v [C=3, T=5] (one sample); scores for query rows 1..3 (a chunk), then their outputs
        int c = 3, t = 5, i0 = 1, rows = 3;
        float[] q = random(c * t), k = random(c * t), v = random(c * t), p = random(rows * t);
        EmulatedDevice dev = new EmulatedDevice(4096);
        DevicePtr qa = dev.alloc(q.length), ka = dev.alloc(k.length), va = dev.alloc(v.length);
        DevicePtr pa = dev.alloc(p.length), sa = dev.alloc(rows * t), oa = dev.alloc(c * t);
        dev.write(qa, q);
        dev.write(ka, k);
        dev.write(va, v);
        dev.write(pa, p);
        dev.write(oa, new float[c * t]);
        dev.gemm(GemmCall.channelScores(t, rows, c, 0, 0, 1), ka, qa.plusFloats(i0), sa);
        dev.gemm(GemmCall.channelValues(t, rows, c, 0, 0, 0, 1), pa, va, oa.plusFloats(i0));
        float[] s = dev.read(sa, rows * t);
        float[] o = dev.read(oa, c * t);
        for (int i = 0; i < rows; i++) {
            for (int j = 0; j < t; j++) {
                float dot = 0;
                for (int e = 0; e < c; e++) {
                    dot += q[e * t + i0 + i] * k[e * t + j];
                }
                assertThat(s[i * t + j]).as("S[%d][%d]", i, j).isCloseTo(dot, offset(1e-5f));
            }
            for (int e = 0; e < c; e++) {
                float sum = 0;
                for (int j = 0; j < t; j++) {
                    sum += p[i * t + j] * v[e * t + j];
                }
                assertThat(o[e * t + i0 + i]).as("O[%d][%d]", e, i0 + i).isCloseTo(sum, offset(1e-5f));
            }
        }
        for (int e = 0; e < c; e++) {
            assertThat(o[e * t]).as("outside the chunk").isZero();
            assertThat(o[e * t + 4]).as("outside the chunk").isZero();
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
