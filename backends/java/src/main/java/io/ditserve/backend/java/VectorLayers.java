package io.ditserve.backend.java;

import static io.ditserve.backend.java.MatMul.L;
import static io.ditserve.backend.java.MatMul.S;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import jdk.incubator.vector.FloatVector;

/**
 * The layers the transformer engines share ({@link VectorDit}, {@link MmditForward}), on the threads of the
 * engine's {@link Parallel} pool: linear layers on {@link MatMul} with their epilogue fused (bias, GELU, the
 * adaLN-Zero gated residual), and the adaLN-modulated LayerNorm. Every row is computed in one fixed order whatever
 * the number of rows or threads, so a sample gets the same bits alone and in any batch. One forward at a time.
 */
final class VectorLayers {
    /** Most rows of A one linear-layer work item covers: each packed panel is reused by 8 micro-kernel calls. */
    private static final int ROW_TILE = 8 * MatMul.MR;
    /** Rows per LayerNorm work item. */
    private static final int NORM_ROWS = 16;

    /**
     * A Linear layer with its weight packed as B = Wᵀ ({@link Panels}: float32, or 16-bit as an F16/BF16
     * checkpoint stores it, decoded per panel in the product) and its bias padded, for {@link MatMul}.
     */
    record Packed(Panels panels, float[] bias, int out, int in) {
        /** Bytes the layer holds: its panels and its padded bias; 0 for null (a layer a block does not have). */
        static long bytes(Packed... layers) {
            long b = 0;
            for (Packed p : layers) {
                b += p == null ? 0 : p.panels().bytes() + 4L * p.bias().length;
            }
            return b;
        }

        /**
         * Reads {@code prefix.weight} (out, in) and packs it: in 16 bits straight from the read buffer when the
         * reader keeps this tensor's F16/BF16 ({@link CheckpointReader#half}), else through the reader's float32
         * scratch array.
         */
        static Packed read(CheckpointReader r, String prefix, int out, int in) throws BackendException {
            float[] bias = MatMul.paddedBias(r.floats(prefix + ".bias"), out);
            String name = prefix + ".weight";
            Half half = r.half(name);
            if (half != null) {
                Panels panels = Panels.of16(half, in, out);
                panels.packColumns(r.bytes(name), 0, 0, out);
                return new Packed(panels, bias, out, in);
            }
            float[] weight = r.scratch(name);
            float[] panels = new float[MatMul.packedSize(in, out)];
            MatMul.pack(weight, 0, 1, in, in, out, panels);
            return new Packed(Panels.of(panels, in, out), bias, out, in);
        }

        /**
         * Linear layers of the same input, each (out, in), as one layer whose output row holds theirs side by side
         * (q | k | v): one product instead of several. Each output still sums over its input in the same order, so
         * the values are those of the separate layers, bit for bit. 16-bit when every part is kept in the same
         * 16-bit format, else float32.
         */
        static Packed concat(CheckpointReader r, int out, int in, String... prefixes) throws BackendException {
            int n = prefixes.length * out;
            float[] bias = new float[n];
            Half half = r.half(prefixes[0] + ".weight");
            for (String prefix : prefixes) {
                if (r.half(prefix + ".weight") != half) {
                    half = null;
                }
            }
            if (half != null) {
                Panels panels = Panels.of16(half, in, n);
                for (int i = 0; i < prefixes.length; i++) {
                    System.arraycopy(r.floats(prefixes[i] + ".bias"), 0, bias, i * out, out);
                    panels.packColumns(r.bytes(prefixes[i] + ".weight"), 0, i * out, out);
                }
                return new Packed(panels, MatMul.paddedBias(bias, n), n, in);
            }
            float[] weight = new float[n * in];
            for (int i = 0; i < prefixes.length; i++) {
                System.arraycopy(r.scratch(prefixes[i] + ".weight"), 0, weight, i * out * in, out * in);
                System.arraycopy(r.floats(prefixes[i] + ".bias"), 0, bias, i * out, out);
            }
            float[] panels = new float[MatMul.packedSize(in, n)];
            MatMul.pack(weight, 0, 1, in, in, n, panels);
            return new Packed(Panels.of(panels, in, n), MatMul.paddedBias(bias, n), n, in);
        }
    }

    private final Parallel parallel;
    private final float[][] tiles; // one micro-kernel tile per worker, grown for a decoded 16-bit panel
    private final LinearJob linearJob = new LinearJob();
    private final NormJob normJob = new NormJob();

    VectorLayers(Parallel parallel) {
        this.parallel = parallel;
        tiles = new float[parallel.threads()][MatMul.TILE];
    }

    /**
     * The patch embedding of n samples x [n, C_in, H, W]: patches [n·T, C_in·p·p] (a stride-p conv as a product),
     * x = patches·Wᵀ + b + positions, the (T, D) position table added to each sample's rows.
     */
    void patchEmbed(ModelSpec spec, float[] in, int n, float[] patches, Packed w, float[] positions, float[] x) {
        int tokens = spec.tokens();
        int d = w.out();
        int rows = n * tokens;
        DitMath.patchify(spec, in, n, patches);
        linear(patches, rows, w, x);
        for (int r = 0; r < rows; r++) {
            int pos = (r % tokens) * d;
            for (int k = 0; k < d; k++) {
                x[r * d + k] += positions[pos + k];
            }
        }
    }

    /** dst = src·Wᵀ + b over {@code rows} rows. */
    void linear(float[] src, int rows, Packed w, float[] dst) {
        linearJob.prepare(src, rows, w, dst).store();
        linearJob.run();
    }

    /** dst = GELU_tanh(src·Wᵀ + b). */
    void linearGelu(float[] src, int rows, Packed w, float[] dst) {
        linearJob.prepare(src, rows, w, dst).gelu();
        linearJob.run();
    }

    /**
     * x += gate · (src·Wᵀ + b), the adaLN-Zero residual: each sample's gate is the chunk at {@code gateOff} of its
     * modulation row {@code mod[sample·modStride ..]}, and a sample has {@code rowsPerSample} rows.
     */
    void linearGatedAdd(float[] src, int rows, Packed w, float[] x, float[] mod, int modStride, int gateOff,
            int rowsPerSample) {
        linearJob.prepare(src, rows, w, x).gatedAdd(mod, gateOff, modStride, rowsPerSample);
        linearJob.run();
    }

    /**
     * h = LN(x)·(1 + scale) + shift over {@code rows} rows of width d (LayerNorm without affine, eps 1e-6), with
     * the chunks at {@code shiftOff} and {@code scaleOff} of each sample's modulation row; a sample has
     * {@code rowsPerSample} rows.
     */
    void modulatedLayerNorm(float[] x, int rows, int d, int rowsPerSample, float[] mod, int modStride, int shiftOff,
            int scaleOff, float[] h) {
        NormJob j = normJob;
        j.x = x;
        j.rows = rows;
        j.d = d;
        j.rowsPerSample = rowsPerSample;
        j.mod = mod;
        j.modStride = modStride;
        j.shiftOff = shiftOff;
        j.scaleOff = scaleOff;
        j.h = h;
        parallel.forEach((rows + NORM_ROWS - 1) / NORM_ROWS, j);
    }

    /** Splits a linear layer into (row tile, panel) items. */
    private final class LinearJob implements Parallel.Body {
        private final MatMul mm = new MatMul();
        private int rows;
        private int rowTile;
        private int panels;

        MatMul prepare(float[] src, int rows, Packed w, float[] dst) {
            this.rows = rows;
            int tiles = Math.max(1, (rows + ROW_TILE - 1) / ROW_TILE);
            int perTile = (rows + tiles - 1) / tiles;
            rowTile = Math.max(MatMul.MR, (perTile + MatMul.MR - 1) / MatMul.MR * MatMul.MR); // whole kernel blocks
            panels = MatMul.panels(w.out());
            float[][] scratch = VectorLayers.this.tiles;
            int tile = MatMul.tileSize(w.panels());
            if (scratch[0].length < tile) { // a 16-bit layer wider than any before: room for its decoded panel, once
                for (int i = 0; i < scratch.length; i++) {
                    scratch[i] = new float[tile];
                }
            }
            return mm.a(src, 0, w.in()).b(w.panels(), w.bias()).c(dst, 0, w.out());
        }

        void run() {
            parallel.forEach((rows + rowTile - 1) / rowTile * panels, this);
        }

        @Override
        public void run(int item, int worker) {
            int m0 = item / panels * rowTile;
            int p = item % panels;
            mm.compute(m0, Math.min(rows, m0 + rowTile), p, p + 1, tiles[worker]);
        }
    }

    private static final class NormJob implements Parallel.Body {
        float[] x;
        int rows;
        int d;
        int rowsPerSample;
        float[] mod;
        int modStride;
        int shiftOff;
        int scaleOff;
        float[] h;

        @Override
        public void run(int item, int worker) {
            for (int r = item * NORM_ROWS; r < Math.min(rows, (item + 1) * NORM_ROWS); r++) {
                int m = (r / rowsPerSample) * modStride;
                modulatedLayerNorm(x, r * d, d, mod, m + shiftOff, m + scaleOff, h);
            }
        }
    }

    /** h[off..off+d) = LN(x[off..off+d))·(1 + mod[scale..]) + mod[shift..]. */
    static void modulatedLayerNorm(float[] x, int off, int d, float[] mod, int shift, int scale, float[] h) {
        int bound = S.loopBound(d);
        FloatVector acc = FloatVector.zero(S);
        int i = 0;
        for (; i < bound; i += L) {
            acc = acc.add(FloatVector.fromArray(S, x, off + i));
        }
        float sum = ExactMath.sum(acc);
        for (; i < d; i++) {
            sum += x[off + i];
        }
        float mean = sum / d;
        FloatVector meanV = FloatVector.broadcast(S, mean);
        acc = FloatVector.zero(S);
        for (i = 0; i < bound; i += L) {
            FloatVector c = FloatVector.fromArray(S, x, off + i).sub(meanV);
            acc = c.fma(c, acc);
        }
        float var = ExactMath.sum(acc);
        for (; i < d; i++) {
            float c = x[off + i] - mean;
            var += c * c;
        }
        float inv = (float) (1.0 / Math.sqrt(var / d + DitMath.LN_EPS));
        for (i = 0; i < bound; i += L) {
            FloatVector norm = FloatVector.fromArray(S, x, off + i).sub(meanV).mul(inv);
            FloatVector scaleV = FloatVector.fromArray(S, mod, scale + i).add(1f);
            norm.fma(scaleV, FloatVector.fromArray(S, mod, shift + i)).intoArray(h, off + i);
        }
        for (; i < d; i++) {
            h[off + i] = (x[off + i] - mean) * inv * (1f + mod[scale + i]) + mod[shift + i];
        }
    }
}
