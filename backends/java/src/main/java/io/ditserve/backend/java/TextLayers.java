package io.ditserve.backend.java;

import java.util.Arrays;

/**
 * The layers the Java text encoders share ({@link ClipTextEncoder}, {@link T5TextEncoder}), on the threads of the
 * encoder's own {@link Parallel} pool: linear layers on {@link MatMul} (bias, residual or tanh-GELU fused in the
 * epilogue), row-wise work split into items, and multi-head attention over the sequence with an optional causal mask
 * and an optional additive bias per head. Every row is computed in one fixed order whatever the batch or thread
 * count, so a sequence gets the same bits alone and in any batch. One encode at a time; all calls are made from
 * inside {@link Parallel#run}.
 */
final class TextLayers implements AutoCloseable {
    private static final int ROW_TILE = 8 * MatMul.MR;
    static final int ROWS_PER_ITEM = 16;

    /**
     * A Linear layer packed for {@link MatMul}: B = Wᵀ in panels (float32, or 16-bit as an F16/BF16 checkpoint
     * stores it: {@link TextEncoderWeights#linear}), the bias padded (zeros when it has none).
     */
    record Linear(Panels panels, float[] bias, int out, int in) {
        /** Bytes the layers hold: panels and padded biases. */
        static long bytes(Linear... layers) {
            long b = 0;
            for (Linear l : layers) {
                b += l.panels().bytes() + 4L * l.bias().length;
            }
            return b;
        }

        /** From a PyTorch weight (out, in), row-major, and its bias or null. */
        static Linear of(float[] weight, float[] bias, int out, int in) {
            float[] panels = new float[MatMul.packedSize(in, out)];
            MatMul.pack(weight, 0, 1, in, in, out, panels);
            return new Linear(Panels.of(panels, in, out),
                    MatMul.paddedBias(bias == null ? new float[out] : bias, out), out, in);
        }
    }

    /** Row-wise work: rows r0..r1 on one worker. */
    @FunctionalInterface
    interface Rows {
        void run(int r0, int r1);
    }

    final Parallel parallel;
    private final float[][] tiles;
    private final MatMul mm = new MatMul();
    private int rows;
    private int rowTile;
    private int panels;
    // attention scratch, per worker, grown to the sequence length and head size of the call
    private final float[][] keys;
    private final float[][] values;
    private final float[][] scores;
    private final MatMul[] attentionMm;

    TextLayers(int threads, String name) {
        parallel = new Parallel(threads, name);
        tiles = new float[threads][MatMul.TILE];
        keys = new float[threads][0];
        values = new float[threads][0];
        scores = new float[threads][0];
        attentionMm = new MatMul[threads];
        for (int i = 0; i < threads; i++) {
            attentionMm[i] = new MatMul();
        }
    }

    /** Calls {@code body} over rows 0..rows−1 in items of {@link #ROWS_PER_ITEM}. */
    void forRows(int rows, Rows body) {
        parallel.forEach((rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM,
                (item, worker) -> body.run(item * ROWS_PER_ITEM, Math.min(rows, (item + 1) * ROWS_PER_ITEM)));
    }

    private MatMul prepare(float[] src, int rows, Linear w, float[] dst) {
        this.rows = rows;
        int count = (rows + ROW_TILE - 1) / ROW_TILE;
        int perTile = (rows + count - 1) / count;
        rowTile = (perTile + MatMul.MR - 1) / MatMul.MR * MatMul.MR; // even tiles, whole micro-kernel blocks
        panels = MatMul.panels(w.out());
        int tile = MatMul.tileSize(w.panels());
        if (tiles[0].length < tile) { // a 16-bit layer wider than any before: room for its decoded panel, once
            for (int i = 0; i < tiles.length; i++) {
                tiles[i] = new float[tile];
            }
        }
        return mm.a(src, 0, w.in()).b(w.panels(), w.bias()).c(dst, 0, w.out());
    }

    private void run() {
        parallel.forEach((rows + rowTile - 1) / rowTile * panels, (item, worker) -> {
            int m0 = item / panels * rowTile;
            int p = item % panels;
            mm.compute(m0, Math.min(rows, m0 + rowTile), p, p + 1, tiles[worker]);
        });
    }

    /** dst = src·Wᵀ + b. */
    void linear(float[] src, int rows, Linear w, float[] dst) {
        prepare(src, rows, w, dst).store();
        run();
    }

    /** dst = GELU_tanh(src·Wᵀ + b). */
    void linearGelu(float[] src, int rows, Linear w, float[] dst) {
        prepare(src, rows, w, dst).gelu();
        run();
    }

    /** x += src·Wᵀ + b (x rows of width w.out()). */
    void linearAdd(float[] src, int rows, Linear w, float[] x) {
        prepare(src, rows, w, x).residual(x, 0, w.out(), false);
        run();
    }

    /**
     * Multi-head attention over {@code n} sequences of {@code tokens} rows: q, k, v of head h of row r are
     * {@code qkv[r·3·inner + {0, inner, 2·inner} + h·headDim ..]}; the result goes to
     * {@code att[r·inner + h·headDim ..]}. scores = scale·(q·kᵀ) + bias[h] (bias [heads, T, T] or null), the future
     * masked when {@code causal}, softmax per row, then ·v. One (sequence, head) per item.
     */
    void attention(float[] qkv, int n, int tokens, int heads, int headDim, float scale, boolean causal,
            float[] bias, float[] att) {
        int inner = heads * headDim;
        for (int w = 0; w < keys.length; w++) {
            if (keys[w].length < MatMul.packedSize(headDim, tokens)) {
                keys[w] = new float[MatMul.packedSize(headDim, tokens)];
            }
            if (values[w].length < MatMul.packedSize(tokens, headDim)) {
                values[w] = new float[MatMul.packedSize(tokens, headDim)];
            }
            if (scores[w].length < tokens * tokens) {
                scores[w] = new float[tokens * tokens];
            }
        }
        parallel.forEach(n * heads, (item, worker) -> {
            int row0 = item / heads * tokens;
            int head = item % heads;
            int q = row0 * 3 * inner + head * headDim;
            float[] k = keys[worker];
            float[] v = values[worker];
            float[] s = scores[worker];
            MatMul m = attentionMm[worker];
            MatMul.pack(qkv, q + inner, 1, 3 * inner, headDim, tokens, k); // B[e][j] = k_j[e]
            MatMul.pack(qkv, q + 2 * inner, 3 * inner, 1, tokens, headDim, v); // B[j][e] = v_j[e]
            m.a(qkv, q, 3 * inner).b(k, headDim, tokens, null).c(s, 0, tokens);
            if (bias != null) {
                m.residual(bias, head * tokens * tokens, tokens, false);
            } else {
                m.scale(scale);
            }
            m.compute(0, tokens, 0, MatMul.panels(tokens), tiles[worker]);
            for (int i = 0; i < tokens; i++) {
                softmax(s, i * tokens, causal ? i + 1 : tokens, tokens);
            }
            m.a(s, 0, tokens).b(v, tokens, headDim, null).c(att, row0 * inner + head * headDim, inner).store()
                    .compute(0, tokens, 0, MatMul.panels(headDim), tiles[worker]);
        });
    }

    /** a[off .. off + keep) = its softmax (sum in double); a[off + keep .. off + len) = 0 (masked positions). */
    static void softmax(float[] a, int off, int keep, int len) {
        float max = Float.NEGATIVE_INFINITY;
        for (int j = 0; j < keep; j++) {
            max = Math.max(max, a[off + j]);
        }
        double sum = 0;
        for (int j = 0; j < keep; j++) {
            float e = (float) Math.exp(a[off + j] - max);
            a[off + j] = e;
            sum += e;
        }
        float inv = (float) (1.0 / sum);
        for (int j = 0; j < keep; j++) {
            a[off + j] *= inv;
        }
        Arrays.fill(a, off + keep, off + len, 0f);
    }

    @Override
    public void close() {
        parallel.close();
    }
}
