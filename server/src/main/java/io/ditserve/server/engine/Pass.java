package io.ditserve.server.engine;

import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;

/**
 * The packing of one forward pass: up to {@code maxBatch} sample rows, each copied from a generation's evaluation
 * (its input, time, conditioning — a label, or a prompt's context and pooled vector — and step-cache use), with the
 * row's owner. Buffers exist once per pass size that occurred
 * (x, out, time and labels must have exactly N rows) and are reused: packing allocates nothing per pass.
 */
final class Pass {
    private final ModelSpec spec;
    private final int per;
    final int outPer;
    final int maxBatch;
    private final Tensor[] xs;
    private final Tensor[] outs;
    private final float[][] ts;
    private final int[][] ys;
    // text models (docs/TEXT_MODELS.md): each row's context [T, W] and pooled vector [P]
    private final ModelSpec.TextConditioning text;
    private final int contextLen;
    private final int pooledLen;
    private final float[][] contexts;
    private final float[][] pooleds;
    final Generation[] owner;
    final int[] ownerSample;
    // step caching: each row's use of the cached span and its residual (docs/STEP_CACHE.md)
    private final StepCache.Use[] rowUse;
    private final float[][] rowResidual;
    // the StepCache of a pass of n rows and the arrays behind it (filled from rowUse/rowResidual for each pass)
    private final StepCache[] stepCaches;
    private final StepCache.Use[][] cacheUses;
    private final float[][][] cacheResiduals;
    /** Rows packed so far, and the size of the pass being packed. */
    int rows;
    int capacity;

    Pass(ModelSpec spec, int maxBatch) {
        this.spec = spec;
        this.text = spec.text();
        this.contextLen = text == null ? 0 : text.contextTokens() * text.jointAttentionDim();
        this.pooledLen = text == null ? 0 : text.pooledProjectionDim();
        this.contexts = new float[maxBatch + 1][];
        this.pooleds = new float[maxBatch + 1][];
        int hw = spec.inputSize() * spec.inputSize();
        this.per = spec.inChannels() * hw;
        this.outPer = spec.outChannels() * hw;
        this.maxBatch = maxBatch;
        xs = new Tensor[maxBatch + 1];
        outs = new Tensor[maxBatch + 1];
        ts = new float[maxBatch + 1][];
        ys = new int[maxBatch + 1][];
        owner = new Generation[maxBatch];
        ownerSample = new int[maxBatch];
        rowUse = new StepCache.Use[maxBatch];
        rowResidual = new float[maxBatch][];
        stepCaches = new StepCache[maxBatch + 1];
        cacheUses = new StepCache.Use[maxBatch + 1][];
        cacheResiduals = new float[maxBatch + 1][][];
    }

    /**
     * Packs the rows of every generation of {@code tick} (its evaluation's samples, prepared) end to end in order
     * into passes of up to {@code maxBatch} rows, each sized exactly to the rows still to come, and runs each when
     * full; the last one may be left short by generations that a failed pass ended, and runs at its exact size.
     */
    void packAndRun(java.util.List<Generation> tick, PassExecutor executor) {
        for (int gi = 0; gi < tick.size(); gi++) {
            Generation g = tick.get(gi);
            for (int s = 0; !g.ended && s < g.samples(); s++) {
                if (rows == 0) {
                    begin(Math.min(maxBatch, rowsLeft(tick, gi, s)));
                }
                if (add(g, s)) {
                    executor.run(this);
                }
            }
        }
        if (rows > 0) {
            executor.run(this);
        }
    }

    /** Rows still to pack from generation {@code from}'s sample {@code s} on. */
    private static int rowsLeft(java.util.List<Generation> tick, int from, int s) {
        int left = tick.get(from).samples() - s;
        for (int i = from + 1; i < tick.size(); i++) {
            left += tick.get(i).ended ? 0 : tick.get(i).samples();
        }
        return left;
    }

    /** Starts packing a pass of exactly {@code n} rows (allocating its buffers on first use). */
    void begin(int n) {
        allocate(n);
        capacity = n;
        rows = 0;
    }

    private void allocate(int n) {
        if (xs[n] == null) {
            xs[n] = Tensor.zeros(n, spec.inChannels(), spec.inputSize(), spec.inputSize());
            outs[n] = Tensor.zeros(n, spec.outChannels(), spec.inputSize(), spec.inputSize());
            ts[n] = new float[n];
            ys[n] = new int[n];
            if (text != null) {
                contexts[n] = new float[n * contextLen];
                pooleds[n] = new float[n * pooledLen];
            }
        }
    }

    /** Packs sample s of g's evaluation as the next row; returns whether the pass is now full. */
    boolean add(Generation g, int s) {
        g.inputs(s, xs[capacity].data(), rows * per, ts[capacity], rows);
        if (text == null) {
            ys[capacity][rows] = g.label(s);
        } else {
            var e = g.text(s);
            System.arraycopy(e.context(), 0, contexts[capacity], rows * contextLen, contextLen);
            System.arraycopy(e.pooled(), 0, pooleds[capacity], rows * pooledLen, pooledLen);
        }
        owner[rows] = g;
        ownerSample[rows] = s;
        rowUse[rows] = g.cacheUse(s);
        rowResidual[rows] = g.residual(s);
        rows++;
        return rows == capacity;
    }

    /**
     * Rows [start, start + n) of the pass of {@code size} rows as a batch of their own, copied into the buffers of
     * size n (for a pass left short by failed generations, or one generation's rows rerun alone).
     */
    ForwardBatch batch(int size, int start, int n) {
        if (start != 0 || n != size) {
            allocate(n);
            System.arraycopy(xs[size].data(), start * per, xs[n].data(), 0, n * per);
            System.arraycopy(ts[size], start, ts[n], 0, n);
            System.arraycopy(ys[size], start, ys[n], 0, n);
            if (text != null) {
                System.arraycopy(contexts[size], start * contextLen, contexts[n], 0, n * contextLen);
                System.arraycopy(pooleds[size], start * pooledLen, pooleds[n], 0, n * pooledLen);
            }
        }
        Conditioning c = text == null ? new Conditioning.ClassLabels(ys[n])
                : new Conditioning.TextEmbeddings(contexts[n], text.contextTokens(), text.jointAttentionDim(),
                        pooleds[n], pooledLen);
        return new ForwardBatch(xs[n], ts[n], c, stepCache(start, n));
    }

    Tensor out(int n) {
        return outs[n];
    }

    /** The step cache of rows [start, start + n), or null when they all run every block plainly. */
    private StepCache stepCache(int start, int n) {
        boolean plain = true;
        for (int r = start; r < start + n && plain; r++) {
            plain = rowUse[r] == StepCache.Use.RUN;
        }
        if (plain) {
            return null;
        }
        if (stepCaches[n] == null) { // one per pass size, like the batch buffers: no allocation per pass
            cacheUses[n] = new StepCache.Use[n];
            cacheResiduals[n] = new float[n][];
            stepCaches[n] = new StepCache(cacheUses[n], cacheResiduals[n]);
        }
        System.arraycopy(rowUse, start, cacheUses[n], 0, n);
        System.arraycopy(rowResidual, start, cacheResiduals[n], 0, n);
        return stepCaches[n];
    }

    /** Forgets row r's owner and residual (after the pass), so that nothing outlives it. */
    void release(int r) {
        owner[r] = null;
        rowResidual[r] = null;
    }
}
