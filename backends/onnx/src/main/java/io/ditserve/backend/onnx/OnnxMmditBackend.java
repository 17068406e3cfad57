package io.ditserve.backend.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.nio.FloatBuffer;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * SD3's MMDiT on ONNX Runtime, from a diffusers {@code transformer/} folder as downloaded: there is no .onnx file,
 * the graph is built at load ({@link MmditGraph}) with its initializers pointing into the folder's safetensors
 * files (external data, no copy in the protobuf), and ONNX Runtime is told the folder to read them from. The weights
 * are checked against the spec first ({@link MmditCheckpoint#open}: a missing, unexpected or misshapen tensor fails
 * naming it), exactly as on the java backend.
 *
 * <p>Same function as the java backend's MMDiT: {@code out = MMDiT(x, σ·1000, context, pooled)}; no step caching
 * (its blocks carry two streams). Calls are serialised; the I/O buffers grow to the largest batch and context seen.
 * A {@link Cancellation} terminates the run (OnnxRunner), so there is no per-block polling.
 */
public final class OnnxMmditBackend implements Backend {
    private final ModelSpec spec;
    private final OnnxRunner runner;
    private final int graphNodes;
    private final GraphCache.Report cacheReport;
    private final SampleBuffers io; // x, t and out
    private int contextCapacity; // samples × context tokens
    private FloatBuffer contextBuffer;
    private FloatBuffer pooledBuffer;
    private boolean closed;

    private OnnxMmditBackend(ModelSpec spec, GraphCache.Loaded loaded) {
        this.spec = spec;
        this.runner = loaded.runner();
        this.graphNodes = loaded.nodes();
        this.cacheReport = loaded.report();
        this.io = new SampleBuffers(spec);
    }

    /**
     * Validates the folder's weights against {@code spec}, builds the graph and opens a session on it; or, when the
     * graph cache has this folder's graph ({@link GraphCache}), opens the cached one.
     */
    public static OnnxMmditBackend create(ModelSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(options, "options");
        if (spec.architecture() != ModelSpec.Architecture.MMDIT) {
            throw new IllegalArgumentException("model " + spec.name() + " is not an MMDiT");
        }
        return new OnnxMmditBackend(spec, GraphCache.open("mmdit", spec, spec.directory(), options, spec.name(),
                () -> build(spec)));
    }

    /** The graph of {@code spec}, after validating the folder's weights against it. */
    private static GraphCache.Built build(ModelSpec spec) throws BackendException {
        Map<String, MmditCheckpoint.Located> located = MmditCheckpoint.open(spec);
        Map<String, GraphWeights.Stored> stored = new java.util.HashMap<>();
        located.forEach((k, v) -> stored.put(k, new GraphWeights.Stored(v.file(), v.entry())));
        OnnxGraph g = new OnnxGraph("mmdit");
        GraphWeights w = new GraphWeights(g, spec.directory(), stored);
        byte[] model = MmditGraph.build(spec, g, w);
        return new GraphCache.Built(model, w.summary(), g.nodeCount());
    }

    /** What the graph cache did for this load. */
    GraphCache.Report cacheReport() {
        return cacheReport;
    }

    @Override
    public String name() {
        return OnnxBackendProvider.NAME;
    }

    @Override
    public ModelSpec model() {
        return spec;
    }

    /** The checkpoint bytes the graph reads in place, by file. */
    ExternalData.Summary externalData() {
        return runner.externalData;
    }

    /** Nodes of the generated graph (before ONNX Runtime's optimisations), for logs and tests. */
    int graphNodes() {
        return graphNodes;
    }

    @Override
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        int n = batch.checkOpen(closed, spec, out);
        if (n == 0) {
            return;
        }
        refuseStepCache(batch);
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        Conditioning.TextEmbeddings text = (Conditioning.TextEmbeddings) batch.conditioning();
        int ctx = text.tokens();
        ensureCapacity(n, ctx);
        FloatBuffer xBuffer = io.x().clear().put(0, batch.x().data()).limit(batch.x().size());
        FloatBuffer tBuffer = io.t().clear().put(0, batch.time(), 0, n).limit(n);
        contextBuffer.clear().put(0, text.context()).limit(text.context().length);
        pooledBuffer.clear().put(0, text.pooled()).limit(text.pooled().length);
        FloatBuffer outBuffer = io.out().clear().limit(out.size());
        List<OnnxTensor> tensors = new ArrayList<>(5);
        try {
            OnnxTensor x = add(tensors, OnnxTensor.createTensor(runner.env, xBuffer, OnnxRunner.longs(batch.x().shape())));
            OnnxTensor t = add(tensors, OnnxTensor.createTensor(runner.env, tBuffer, new long[] {n}));
            OnnxTensor c = add(tensors, OnnxTensor.createTensor(runner.env, contextBuffer,
                    new long[] {n, ctx, text.width()}));
            OnnxTensor p = add(tensors, OnnxTensor.createTensor(runner.env, pooledBuffer,
                    new long[] {n, text.pooledWidth()}));
            long[] outShape = OnnxRunner.longs(out.shape());
            OnnxTensor o = add(tensors, OnnxTensor.createTensor(runner.env, outBuffer, outShape));
            runner.run(Map.of(MmditGraph.X, x, MmditGraph.T, t, MmditGraph.CONTEXT, c, MmditGraph.POOLED, p),
                    MmditGraph.OUT, o, outShape, cancel);
        } catch (OrtException e) {
            throw new BackendException(runner.file + ": cannot create the run's tensors: " + e.getMessage(), e);
        } finally {
            tensors.forEach(OnnxTensor::close);
        }
        outBuffer.get(0, out.data());
    }

    private static OnnxTensor add(List<OnnxTensor> tensors, OnnxTensor t) {
        tensors.add(t);
        return t;
    }

    private void ensureCapacity(int n, int ctx) {
        if (io.ensure(n)) {
            pooledBuffer = OnnxRunner.directBytes(4L * n * spec.text().pooledProjectionDim()).asFloatBuffer();
        }
        if ((long) n * ctx > contextCapacity || contextBuffer == null) {
            int rows = Math.max(n * ctx, 1);
            contextBuffer = OnnxRunner.directBytes(4L * rows * spec.text().jointAttentionDim()).asFloatBuffer();
            contextCapacity = rows;
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        io.release();
        contextBuffer = null;
        pooledBuffer = null;
        runner.close();
    }
}
