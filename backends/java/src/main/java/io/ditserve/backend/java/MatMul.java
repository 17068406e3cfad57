package io.ditserve.backend.java;

import java.util.Arrays;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorSpecies;

/**
 * One matrix product {@code C = epilogue(A·B)} on the Vector API, described once and then computed tile by tile
 * (possibly by several threads, each with its own {@code tile} scratch).
 *
 * <p>A is row-major with any row stride. B is pre-packed by {@link #pack} into panels of {@link #NR} columns: panel
 * p holds B[0..k, p·NR .. p·NR + NR) k-major, so the micro-kernel reads NR consecutive floats per k while it
 * broadcasts one element of each of {@link #MR} rows of A; the MR × NR accumulators stay in registers for the
 * whole k loop (6 × 2 vectors: with the two B vectors and the broadcast, 15 of the 16 AVX2 registers). Columns
 * past n in the last panel are zeros in B and are never stored. The kernel writes its accumulators to the tile, and the epilogue
 * then adds the bias and applies an activation or a gated residual add while the tile is in L1.
 *
 * <p>A row of A may also be read as several equal runs of its k columns that lie apart in memory
 * ({@link #segments}): a 3×3 convolution over a zero-padded channel-last image reads, for each output position, its
 * three kernel rows as three runs of 3·C contiguous floats, so the convolution is one product with no im2col copy.
 *
 * <p>A descriptor is mutable and reused (no allocation per product); set it up, then call {@link #compute}.
 */
final class MatMul {
    static final VectorSpecies<Float> S = FloatVector.SPECIES_PREFERRED;
    static final int L = S.length();
    /** Rows of A per micro-kernel call. */
    static final int MR = 6;
    /** Columns of B per panel: two vectors. */
    static final int NR = 2 * L;
    /** Scratch floats a thread needs for {@link #compute}. */
    static final int TILE = MR * NR;

    enum Epilogue {
        /** C = A·B + bias */
        STORE,
        /** C = GELU_tanh(A·B + bias) */
        GELU,
        /** C = alpha · (A·B + bias) */
        SCALE,
        /** C += gate[row / gateRows] · (A·B + bias): the adaLN-Zero residual of a DiT block */
        GATED_ADD,
        /** C = max(A·B + bias, 0) */
        RELU,
        /** C = A·B + bias + R: a residual connection (R may be C itself) */
        RESIDUAL,
        /** C = max(A·B + bias + R, 0) */
        RESIDUAL_RELU
    }

    private float[] a;
    private int aOff;
    private int lda;
    private int segments = 1;
    private int segmentStride;
    private float[] b;
    private Panels b16; // B in 16 bits, decoded panel by panel into the tile's scratch, or null
    private int k;
    private int n;
    private float[] bias;
    private float[] zeros = new float[0]; // the bias of products without one, grown once
    private float[] c;
    private int cOff;
    private int ldc;
    private Epilogue epilogue = Epilogue.STORE;
    private float alpha;
    private float[] gate;
    private int gateOff;
    private int gateStride;
    private int gateRows;
    private float[] res;
    private int resOff;
    private int ldr;

    /**
     * Scratch floats a thread needs for {@link #compute} of B = {@code w}: the tile, plus one decoded panel when
     * {@code w} is 16-bit.
     */
    static int tileSize(Panels w) {
        return TILE + (w.is16() ? w.k * NR : 0);
    }

    /** Number of panels for n columns. */
    static int panels(int n) {
        return (n + NR - 1) / NR;
    }

    /** Floats {@link #pack} writes for a k × n matrix. */
    static int packedSize(int k, int n) {
        return panels(n) * k * NR;
    }

    /**
     * Packs the k × n matrix {@code B[r][j] = src[off + r·rowStride + j·colStride]} into panels; a PyTorch weight
     * W (out, in) as B = Wᵀ is {@code rowStride = 1, colStride = in}.
     */
    static void pack(float[] src, int off, int rowStride, int colStride, int k, int n, float[] dst) {
        for (int p = 0; p < panels(n); p++) {
            int base = p * k * NR;
            for (int r = 0; r < k; r++) {
                for (int jj = 0; jj < NR; jj++) {
                    int j = p * NR + jj;
                    dst[base + r * NR + jj] = j < n ? src[off + r * rowStride + j * colStride] : 0f;
                }
            }
        }
    }

    /** A copy of a bias of n values, padded with zeros to whole panels. */
    static float[] paddedBias(float[] bias, int n) {
        return Arrays.copyOf(bias, panels(n) * NR);
    }

    MatMul a(float[] a, int off, int ld) {
        this.a = a;
        this.aOff = off;
        this.lda = ld;
        this.segments = 1;
        this.segmentStride = 0;
        return this;
    }

    /**
     * Reads each row of A (set by {@link #a}) as {@code count} equal runs of k / count columns: run s of row m
     * starts at {@code off + m·ld + s·stride}.
     */
    MatMul segments(int count, int stride) {
        this.segments = count;
        this.segmentStride = stride;
        return this;
    }

    /**
     * B packed by {@link #pack} (k × n), and its bias padded with zeros to whole panels ({@link #paddedBias}), or
     * null for none.
     */
    MatMul b(float[] packed, int k, int n, float[] bias) {
        this.b = packed;
        this.b16 = null;
        this.k = k;
        this.n = n;
        if (bias == null) {
            if (zeros.length < panels(n) * NR) {
                zeros = new float[panels(n) * NR];
            }
            bias = zeros;
        }
        this.bias = bias;
        return this;
    }

    /**
     * B as {@link Panels} (k × n, float32 or 16-bit) and its padded bias or null. With 16-bit panels
     * {@link #compute} needs a tile of {@link #tileSize} floats.
     */
    MatMul b(Panels w, float[] bias) {
        b(w.floats(), w.k, w.n, bias);
        this.b16 = w.is16() ? w : null;
        return this;
    }

    MatMul c(float[] c, int off, int ld) {
        this.c = c;
        this.cOff = off;
        this.ldc = ld;
        return this;
    }

    MatMul store() {
        epilogue = Epilogue.STORE;
        return this;
    }

    MatMul gelu() {
        epilogue = Epilogue.GELU;
        return this;
    }

    MatMul scale(float alpha) {
        epilogue = Epilogue.SCALE;
        this.alpha = alpha;
        return this;
    }

    /** C row r += gate[off + (r / rowsPerGate)·stride + j] · (A·B + bias)[r, j]. */
    MatMul gatedAdd(float[] gate, int off, int stride, int rowsPerGate) {
        epilogue = Epilogue.GATED_ADD;
        this.gate = gate;
        this.gateOff = off;
        this.gateStride = stride;
        this.gateRows = rowsPerGate;
        return this;
    }

    MatMul relu() {
        epilogue = Epilogue.RELU;
        return this;
    }

    /** C row r = (A·B + bias)[r] + R row r, R row r at {@code r[off + r·ld]}; with relu, max(…, 0). */
    MatMul residual(float[] r, int off, int ld, boolean relu) {
        epilogue = relu ? Epilogue.RESIDUAL_RELU : Epilogue.RESIDUAL;
        this.res = r;
        this.resOff = off;
        this.ldr = ld;
        return this;
    }

    int panels() {
        return panels(n);
    }

    /**
     * Computes rows m0..m1 of C in panels p0..p1, using {@code tile} (at least {@link #TILE} floats; with 16-bit B
     * {@link #tileSize}) as scratch. A 16-bit panel is decoded once per call into {@code tile[TILE ..]}, then read
     * by the same kernels in the same order as float32 panels, so the result does not depend on B's storage.
     */
    void compute(int m0, int m1, int p0, int p1, float[] tile) {
        for (int p = p0; p < p1; p++) {
            float[] b = this.b;
            int base = p * k * NR;
            if (b16 != null) {
                b16.unpack(p, tile, TILE);
                b = tile;
                base = TILE;
            }
            int m = m0;
            for (; m + MR <= m1; m += MR) {
                kernel6(m, b, base, tile);
                finish(m, MR, p, tile);
            }
            // leftover rows: 4, 2, 1 at a time (more independent FMA chains than row by row; same order per output)
            if (m + 4 <= m1) {
                kernel4(m, b, base, tile);
                finish(m, 4, p, tile);
                m += 4;
            }
            if (m + 2 <= m1) {
                kernel2(m, b, base, tile);
                finish(m, 2, p, tile);
                m += 2;
            }
            if (m < m1) {
                kernel1(m, b, base, tile);
                finish(m, 1, p, tile);
            }
        }
    }

    /** tile[r][0..NR) = A[m + r, :] · the panel at b[base ..], r = 0..5. */
    private void kernel6(int m, float[] b, int base, float[] tile) {
        float[] a = this.a;
        int run = k / segments;
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        FloatVector c40 = FloatVector.zero(S), c41 = FloatVector.zero(S);
        FloatVector c50 = FloatVector.zero(S), c51 = FloatVector.zero(S);
        for (int s = 0; s < segments; s++) {
            int k0 = s * run;
            // a[aj + kk] is row m + j, column kk of A (kk counts from 0 over all runs)
            int a0 = aOff + m * lda + s * segmentStride - k0;
            int a1 = a0 + lda;
            int a2 = a1 + lda;
            int a3 = a2 + lda;
            int a4 = a3 + lda;
            int a5 = a4 + lda;
            for (int kk = k0; kk < k0 + run; kk++) {
                int bo = base + kk * NR;
                FloatVector b0 = FloatVector.fromArray(S, b, bo);
                FloatVector b1 = FloatVector.fromArray(S, b, bo + L);
                FloatVector x = FloatVector.broadcast(S, a[a0 + kk]);
                c00 = x.fma(b0, c00);
                c01 = x.fma(b1, c01);
                x = FloatVector.broadcast(S, a[a1 + kk]);
                c10 = x.fma(b0, c10);
                c11 = x.fma(b1, c11);
                x = FloatVector.broadcast(S, a[a2 + kk]);
                c20 = x.fma(b0, c20);
                c21 = x.fma(b1, c21);
                x = FloatVector.broadcast(S, a[a3 + kk]);
                c30 = x.fma(b0, c30);
                c31 = x.fma(b1, c31);
                x = FloatVector.broadcast(S, a[a4 + kk]);
                c40 = x.fma(b0, c40);
                c41 = x.fma(b1, c41);
                x = FloatVector.broadcast(S, a[a5 + kk]);
                c50 = x.fma(b0, c50);
                c51 = x.fma(b1, c51);
            }
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
        c40.intoArray(tile, 4 * NR);
        c41.intoArray(tile, 4 * NR + L);
        c50.intoArray(tile, 5 * NR);
        c51.intoArray(tile, 5 * NR + L);
    }

    /** tile[r][0..NR) = A[m + r, :] · the panel at b[base ..], r = 0..3, in the order of {@link #kernel6}. */
    private void kernel4(int m, float[] b, int base, float[] tile) {
        float[] a = this.a;
        int run = k / segments;
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        FloatVector c20 = FloatVector.zero(S), c21 = FloatVector.zero(S);
        FloatVector c30 = FloatVector.zero(S), c31 = FloatVector.zero(S);
        for (int s = 0; s < segments; s++) {
            int k0 = s * run;
            int a0 = aOff + m * lda + s * segmentStride - k0;
            int a1 = a0 + lda;
            int a2 = a1 + lda;
            int a3 = a2 + lda;
            for (int kk = k0; kk < k0 + run; kk++) {
                int bo = base + kk * NR;
                FloatVector b0 = FloatVector.fromArray(S, b, bo);
                FloatVector b1 = FloatVector.fromArray(S, b, bo + L);
                FloatVector x = FloatVector.broadcast(S, a[a0 + kk]);
                c00 = x.fma(b0, c00);
                c01 = x.fma(b1, c01);
                x = FloatVector.broadcast(S, a[a1 + kk]);
                c10 = x.fma(b0, c10);
                c11 = x.fma(b1, c11);
                x = FloatVector.broadcast(S, a[a2 + kk]);
                c20 = x.fma(b0, c20);
                c21 = x.fma(b1, c21);
                x = FloatVector.broadcast(S, a[a3 + kk]);
                c30 = x.fma(b0, c30);
                c31 = x.fma(b1, c31);
            }
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
        c20.intoArray(tile, 2 * NR);
        c21.intoArray(tile, 2 * NR + L);
        c30.intoArray(tile, 3 * NR);
        c31.intoArray(tile, 3 * NR + L);
    }

    /** tile[r][0..NR) = A[m + r, :] · the panel at b[base ..], r = 0..1, in the order of {@link #kernel6}. */
    private void kernel2(int m, float[] b, int base, float[] tile) {
        float[] a = this.a;
        int run = k / segments;
        FloatVector c00 = FloatVector.zero(S), c01 = FloatVector.zero(S);
        FloatVector c10 = FloatVector.zero(S), c11 = FloatVector.zero(S);
        for (int s = 0; s < segments; s++) {
            int k0 = s * run;
            int a0 = aOff + m * lda + s * segmentStride - k0;
            int a1 = a0 + lda;
            for (int kk = k0; kk < k0 + run; kk++) {
                int bo = base + kk * NR;
                FloatVector b0 = FloatVector.fromArray(S, b, bo);
                FloatVector b1 = FloatVector.fromArray(S, b, bo + L);
                FloatVector x = FloatVector.broadcast(S, a[a0 + kk]);
                c00 = x.fma(b0, c00);
                c01 = x.fma(b1, c01);
                x = FloatVector.broadcast(S, a[a1 + kk]);
                c10 = x.fma(b0, c10);
                c11 = x.fma(b1, c11);
            }
        }
        c00.intoArray(tile, 0);
        c01.intoArray(tile, L);
        c10.intoArray(tile, NR);
        c11.intoArray(tile, NR + L);
    }

    /**
     * tile[0][0..NR) = A[m, :] · the panel at b[base ..], for a row left over after the 6-, 4- and 2-row blocks (and for products with a
     * single row, like the adaLN of one sample). It accumulates in exactly the order of {@link #kernel6} (one FMA
     * chain per output, k ascending), so a row's result does not depend on whether it falls in a 6-row block, i.e. on
     * its position in the batch or the batch's size: a generation gets the same bytes in any batch.
     */
    private void kernel1(int m, float[] b, int base, float[] tile) {
        int run = k / segments;
        FloatVector c0 = FloatVector.zero(S), c1 = FloatVector.zero(S);
        for (int s = 0; s < segments; s++) {
            int k0 = s * run;
            int a0 = aOff + m * lda + s * segmentStride - k0;
            for (int kk = k0; kk < k0 + run; kk++) {
                int bo = base + kk * NR;
                FloatVector x = FloatVector.broadcast(S, a[a0 + kk]);
                c0 = x.fma(FloatVector.fromArray(S, b, bo), c0);
                c1 = x.fma(FloatVector.fromArray(S, b, bo + L), c1);
            }
        }
        c0.intoArray(tile, 0);
        c1.intoArray(tile, L);
    }

    /**
     * Adds the bias, applies the epilogue to {@code rows} tile rows and writes the columns of panel p that exist.
     * Each epilogue has its own loop, and no vector is null, chosen by a branch or passed to a method that might
     * not be inlined: C2 keeps Vector API values in registers only while it sees every use, else it allocates them.
     */
    private void finish(int m, int rows, int p, float[] tile) {
        if (epilogue == Epilogue.GELU) {
            biasGelu(tile, rows, p);
        }
        for (int v = 0; v < 2; v++) {
            int col = p * NR + v * L;
            if (col >= n) {
                return;
            }
            boolean full = col + L <= n;
            VectorMask<Float> mask = S.indexInRange(col, n);
            FloatVector bv = FloatVector.fromArray(S, bias, col);
            int t = v * L;
            int ci = cOff + m * ldc + col;
            for (int r = 0; r < rows; r++, t += NR, ci += ldc) {
                FloatVector acc = FloatVector.fromArray(S, tile, t);
                FloatVector out = switch (epilogue) {
                    case STORE -> acc.add(bv);
                    case GELU -> acc; // biasGelu has added the bias
                    case SCALE -> acc.add(bv).mul(alpha);
                    case GATED_ADD -> {
                        int gi = gateOff + ((m + r) / gateRows) * gateStride + col;
                        FloatVector g = FloatVector.fromArray(S, gate, gi, mask);
                        yield g.fma(acc.add(bv), FloatVector.fromArray(S, c, ci, mask));
                    }
                    case RELU -> acc.add(bv).max(0f);
                    case RESIDUAL -> acc.add(bv).add(FloatVector.fromArray(S, res, resOff + (m + r) * ldr + col, mask));
                    case RESIDUAL_RELU -> acc.add(bv)
                            .add(FloatVector.fromArray(S, res, resOff + (m + r) * ldr + col, mask)).max(0f);
                };
                if (full) {
                    out.intoArray(c, ci);
                } else {
                    out.intoArray(c, ci, mask);
                }
            }
        }
    }

    /**
     * tile = GELU_tanh(tile + bias) in place. 0.5·u·(1 + tanh(z)) with z = √(2/π)·(u + 0.044715·u³) is computed
     * as the identical u / (1 + exp(−2z)), with the bit-reproducible {@link ExactMath#exp} (the Vector API's EXP
     * gives other bits in the interpreter than in C2).
     */
    private void biasGelu(float[] tile, int rows, int p) {
        for (int r = 0; r < rows; r++) {
            for (int v = 0; v < NR; v += L) {
                int t = r * NR + v;
                FloatVector u = FloatVector.fromArray(S, tile, t).add(FloatVector.fromArray(S, bias, p * NR + v));
                FloatVector z = u.mul(DitMath.GELU_A).mul(u).mul(u).add(u).mul(-2f * DitMath.GELU_C);
                u.div(ExactMath.exp(z).add(1f)).intoArray(tile, t);
            }
        }
    }
}
