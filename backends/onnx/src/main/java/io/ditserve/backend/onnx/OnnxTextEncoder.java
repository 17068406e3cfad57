package io.ditserve.backend.onnx;

import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;

/**
 * A text encoder of SD3's pipeline on ONNX Runtime (CLIPTextModelWithProjection or the T5 v1.1 encoder), from the
 * transformers folder as downloaded: the folder's tensors are validated ({@link TextEncoderCheckpoint#open}, the
 * java backend's rules and messages), the graph is built at load ({@link TextEncoderGraphs}) with its weights as
 * external data into the folder's safetensors files in their stored dtype, and ONNX Runtime reads them from there.
 * Same function as the java backend's encoders; one encode at a time; a {@link Cancellation} terminates the run.
 */
public final class OnnxTextEncoder implements TextEncoder {
    /** CLIP's EOS id; a row whose highest id is this pools at its argmax (see {@link #eosPosition}). */
    static final int CLIP_EOS = TextEncoderRules.CLIP_EOS;

    private final TextEncoderSpec spec;
    private final OnnxRunner runner;
    private final boolean clip;
    private final GraphCache.Report cacheReport;
    private boolean closed;

    private OnnxTextEncoder(TextEncoderSpec spec, GraphCache.Loaded loaded) {
        this.spec = spec;
        this.runner = loaded.runner();
        this.clip = spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION;
        this.cacheReport = loaded.report();
    }

    /** Validates the folder against {@code spec}, builds the encoder's graph and opens a session on it. */
    public static OnnxTextEncoder create(TextEncoderSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(options, "options");
        TextEncoderRules.checkHiddenLayer(spec);
        String kind = spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION ? "clip" : "t5";
        return new OnnxTextEncoder(spec, GraphCache.open(kind, spec, spec.directory(), options, spec.role(),
                () -> build(spec)));
    }

    /** The encoder's graph, after validating the folder's tensors against {@code spec}. */
    private static GraphCache.Built build(TextEncoderSpec spec) throws BackendException {
        Map<String, TextEncoderCheckpoint.Located> located = TextEncoderCheckpoint.open(spec);
        Map<String, GraphWeights.Stored> stored = new HashMap<>();
        located.forEach((k, v) -> stored.put(k, new GraphWeights.Stored(v.file(), v.entry())));
        OnnxGraph g = new OnnxGraph(spec.role());
        GraphWeights w = new GraphWeights(g, spec.directory(), stored);
        byte[] model = switch (spec.kind()) {
            case CLIP_WITH_PROJECTION -> TextEncoderGraphs.clip(spec, g, w);
            case T5_ENCODER -> TextEncoderGraphs.t5(spec, g, w, TextEncoderCheckpoint.t5Embedding(located));
        };
        return new GraphCache.Built(model, w.summary(), g.nodeCount());
    }

    /** What the graph cache did for this load. */
    GraphCache.Report cacheReport() {
        return cacheReport;
    }

    @Override
    public TextEncoderSpec spec() {
        return spec;
    }

    @Override
    public String backendName() {
        return OnnxBackendProvider.NAME;
    }

    /** The checkpoint bytes the graph reads in place, by file. */
    ExternalData.Summary externalData() {
        return runner.externalData;
    }

    @Override
    public synchronized Output encode(int[][] ids, Cancellation cancel) throws BackendException {
        int n = TextEncoderRules.checkOpen(closed, spec, ids);
        int t = spec.maxTokens();
        int d = spec.hiddenSize();
        float[] hidden = new float[n * t * d];
        float[] pooled = clip ? new float[n * spec.projectionDim()] : null;
        if (n == 0) {
            return new Output(hidden, t, d, pooled);
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        LongBuffer idBuffer = OnnxRunner.directBytes(8L * n * t).asLongBuffer();
        LongBuffer rowBuffer = OnnxRunner.directBytes(8L * n).asLongBuffer();
        for (int b = 0; b < n; b++) {
            for (int i = 0; i < t; i++) {
                idBuffer.put(b * t + i, ids[b][i]);
            }
            if (clip) {
                rowBuffer.put(b, (long) b * t + eosPosition(ids[b]));
            }
        }
        FloatBuffer hiddenBuffer = OnnxRunner.directBytes(4L * hidden.length).asFloatBuffer();
        FloatBuffer pooledBuffer = clip ? OnnxRunner.directBytes(4L * pooled.length).asFloatBuffer() : null;
        List<OnnxTensor> tensors = new ArrayList<>(4);
        try {
            Map<String, OnnxTensor> in = new HashMap<>();
            Map<String, OnnxTensor> out = new HashMap<>();
            in.put(TextEncoderGraphs.IDS, add(tensors, OnnxTensor.createTensor(runner.env, idBuffer,
                    new long[] {n, t})));
            out.put(TextEncoderGraphs.HIDDEN, add(tensors, OnnxTensor.createTensor(runner.env, hiddenBuffer,
                    new long[] {n, t, d})));
            if (clip) {
                in.put(TextEncoderGraphs.POOL_ROWS, add(tensors, OnnxTensor.createTensor(runner.env, rowBuffer,
                        new long[] {n})));
                out.put(TextEncoderGraphs.POOLED, add(tensors, OnnxTensor.createTensor(runner.env, pooledBuffer,
                        new long[] {n, spec.projectionDim()})));
            }
            runner.run(in, out, cancel);
        } catch (OrtException e) {
            throw new BackendException(runner.file + ": cannot create the run's tensors: " + e.getMessage(), e);
        } finally {
            tensors.forEach(OnnxTensor::close);
        }
        hiddenBuffer.get(0, hidden);
        if (clip) {
            pooledBuffer.get(0, pooled);
        }
        return new Output(hidden, t, d, pooled);
    }

    private static OnnxTensor add(List<OnnxTensor> tensors, OnnxTensor t) {
        tensors.add(t);
        return t;
    }

    /** CLIP's pooling position in one row ({@link TextEncoderRules#clipPoolPosition}). */
    int eosPosition(int[] row) {
        return TextEncoderRules.clipPoolPosition(spec, row);
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        runner.close();
    }
}
