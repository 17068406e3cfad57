package io.ditserve.backend.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtException;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.onnx.OnnxRunner.Dim;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.util.Map;
import java.util.Objects;
import java.util.List;

/**
 * The DiT forward pass on ONNX Runtime, from the {@code model.onnx} of a model folder. Options: see
 * {@link OnnxRunner} ({@code onnx.provider}, {@code onnx.cuda.device}, {@code onnx.optimization}).
 *
 * <p>A graph over protobuf's 2 GB limit (DiT-XL/2) keeps its weights in {@code model.onnx.data} beside it
 * ({@link #DATA_FILE}, written by tools/convert.py); it is checked before the session is created
 * ({@link ExternalData}: missing or short fails naming it) and ONNX Runtime reads it relative to the model file.
 *
 * <p>The model must follow the contract of tools/dit/export.py: inputs {@code x} [N, C_in, H, W] float32,
 * {@code t} [N] int64, {@code y} [N] int64, {@code cache_residual} [N, T, D] float32 and {@code cache_run} [M]
 * int64, outputs {@code out} [N, C_out, H, W] float32 and {@code cache_residual_out} [N, T, D] float32, with dynamic
 * N and M (step caching: docs/STEP_CACHE.md). A graph exported before step caching, with only x, t, y → out, still
 * loads; it runs plain passes and {@link #supportsStepCache()} is false. It is checked against the contract and the
 * {@link ModelSpec} at load, so a wrong file fails at start-up, not at the first request.
 *
 * <p>Calls to {@link #forward} are serialised (they share the I/O buffers); {@link #close} waits for a running one.
 */
public final class OnnxDitBackend implements Backend {
    public static final String MODEL_FILE = "model.onnx";
    /** Where tools/convert.py puts the weights of a graph that keeps them outside (docs/MODEL_FORMAT.md). */
    public static final String DATA_FILE = "model.onnx.data";
    public static final String PROVIDER_OPTION = OnnxRunner.PROVIDER_OPTION;
    public static final String CUDA_DEVICE_OPTION = OnnxRunner.CUDA_DEVICE_OPTION;
    public static final String OPTIMIZATION_OPTION = OnnxRunner.OPTIMIZATION_OPTION;

    private static final String X = "x";
    private static final String T = "t";
    private static final String Y = "y";
    private static final String OUT = "out";
    private static final String RESIDUAL = "cache_residual";
    private static final String RUN = "cache_run";
    private static final String RESIDUAL_OUT = "cache_residual_out";

    private final ModelSpec spec;
    private final OnnxRunner runner;

    // Direct native-order I/O buffers, sized for the largest batch seen and grown with io: ONNX Runtime reads the
    // inputs from them and writes the output into them without a copy of its own.
    private final SampleBuffers io;
    private LongBuffer tBuffer; // graphs exported before float times take integer timesteps
    private LongBuffer yBuffer;
    private boolean closed;

    private final boolean cacheGraph; // the graph has the step-cache inputs and output
    private final boolean floatTime; // the graph's t is float32 (exported since the float time contract)
    private FloatBuffer residualBuffer;
    private LongBuffer runBuffer;
    private FloatBuffer residualOutBuffer;

    private OnnxDitBackend(ModelSpec spec, OnnxRunner runner, boolean cacheGraph, boolean floatTime) {
        this.spec = spec;
        this.runner = runner;
        this.cacheGraph = cacheGraph;
        this.floatTime = floatTime;
        this.io = new SampleBuffers(spec);
    }

    /** Loads {@code model.onnx} of the model folder and checks it against the I/O contract and {@code spec}. */
    public static OnnxDitBackend create(ModelSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        OnnxRunner runner = OnnxRunner.open(spec.file(MODEL_FILE), options,
                "the onnx backend needs the exported model", spec.name());
        try {
            boolean cache = checkContract(spec, runner);
            return new OnnxDitBackend(spec, runner, cache, floatTime(spec, runner));
        } catch (BackendException | RuntimeException e) {
            runner.close();
            throw e;
        }
    }

    /**
     * Checks names, element types and ranks against the export contract, and the static dims against the spec;
     * returns whether the graph has the step-cache inputs and output.
     */
    private static boolean checkContract(ModelSpec spec, OnnxRunner runner) throws BackendException {
        Map<String, NodeInfo> inputs = runner.inputInfo();
        boolean cacheGraph = inputs.size() != 3;
        if (cacheGraph) {
            runner.checkNames(List.of(X, T, Y, RESIDUAL, RUN), List.of(OUT, RESIDUAL_OUT));
        } else {
            runner.checkNames(List.of(X, T, Y), List.of(OUT));
        }
        Map<String, NodeInfo> outputs = runner.outputInfo();
        int size = spec.inputSize();
        runner.checkTensor("input", inputs.get(X), OnnxJavaType.FLOAT, "[N, C_in, H, W]",
                new Dim("channels (in_channels)", spec.inChannels()),
                new Dim("rows (input_size)", size),
                new Dim("columns (input_size)", size));
        runner.checkTensor("input", inputs.get(T), floatTime(spec, runner) ? OnnxJavaType.FLOAT : OnnxJavaType.INT64,
                "[N]");
        runner.checkTensor("input", inputs.get(Y), OnnxJavaType.INT64, "[N]");
        runner.checkTensor("output", outputs.get(OUT), OnnxJavaType.FLOAT, "[N, C_out, H, W]",
                new Dim("channels (in_channels, doubled with learn_sigma)", spec.outChannels()),
                new Dim("rows (input_size)", size),
                new Dim("columns (input_size)", size));
        if (cacheGraph) {
            Dim tokens = new Dim("tokens ((input_size / patch_size)²)", spec.tokens());
            Dim hidden = new Dim("features (hidden_size)", spec.hiddenSize());
            runner.checkTensor("input", inputs.get(RESIDUAL), OnnxJavaType.FLOAT, "[N, T, D]", tokens, hidden);
            runner.checkTensor("input", inputs.get(RUN), OnnxJavaType.INT64, "[M]");
            runner.checkTensor("output", outputs.get(RESIDUAL_OUT), OnnxJavaType.FLOAT, "[N, T, D]", tokens, hidden);
        }
        return cacheGraph;
    }

    /**
     * Whether the graph takes float times (float32 {@code t}, the contract since the float-time SPI) or integer
     * timesteps (int64, graphs exported before it: DiT only; their passes must carry integral times).
     */
    private static boolean floatTime(ModelSpec spec, OnnxRunner runner) throws BackendException {
        NodeInfo t = runner.inputInfo().get(T);
        boolean isFloat = t != null && t.getInfo() instanceof ai.onnxruntime.TensorInfo info
                && info.type == OnnxJavaType.FLOAT;
        if (!isFloat && spec.process().flow()) {
            throw new BackendException(runner.file + ": input 't' must be float32 for a " + spec.family()
                    + " model (it is fed a continuous time); re-export it with tools/convert.py");
        }
        return isFloat;
    }

    @Override
    public String name() {
        return OnnxBackendProvider.NAME;
    }

    @Override
    public ModelSpec model() {
        return spec;
    }

    /**
     * With the step-cache graph every pass feeds {@code cache_run} (all samples for a plain pass) and pins
     * {@code cache_residual_out}: a sample that runs the span gets the span's output itself, so a plain pass through
     * this graph computes the plain function.
     */
    @Override
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        int n = batch.checkOpen(closed, spec, out);
        Tensor x = batch.x();
        float[] t = batch.time();
        int[] y = batch.labels();
        StepCache cache = batch.cache();
        boolean plain = batch.plain();
        if (!plain && !cacheGraph) {
            throw new BackendException(runner.file + " has no step-cache inputs (exported before step caching): "
                    + "re-export it with tools/convert.py to cache steps of " + spec.name());
        }
        if (n == 0) {
            return;
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        ensureCapacity(n);
        FloatBuffer xBuffer = io.x().clear().put(0, x.data()).limit(x.size());
        yBuffer.clear().limit(n);
        for (int i = 0; i < n; i++) {
            yBuffer.put(i, y[i]);
        }
        java.nio.Buffer tIn;
        if (floatTime) {
            tIn = io.t().clear().put(0, t, 0, n).limit(n);
        } else {
            tBuffer.clear().limit(n);
            for (int i = 0; i < n; i++) {
                if (t[i] != Math.rint(t[i])) {
                    throw new BackendException(runner.file + " takes integer timesteps (exported before float times),"
                            + " but time[" + i + "] = " + t[i] + "; re-export it with tools/convert.py");
                }
                tBuffer.put(i, (long) t[i]);
            }
            tIn = tBuffer;
        }
        FloatBuffer outBuffer = io.out().clear().limit(out.size());
        long[] outShape = OnnxRunner.longs(out.shape());
        int len = StepCache.residualLength(spec);
        long[] residualShape = {n, spec.tokens(), spec.hiddenSize()};
        int m = 0;
        if (cacheGraph) {
            residualBuffer.clear().limit(n * len);
            residualOutBuffer.clear().limit(n * len);
            runBuffer.clear();
            for (int b = 0; b < n; b++) {
                if (plain || cache.use(b) != StepCache.Use.REUSE) {
                    runBuffer.put(m++, b);
                } else {
                    residualBuffer.put(b * len, cache.residual(b));
                }
            }
            runBuffer.limit(m);
        }
        List<OnnxTensor> tensors = new java.util.ArrayList<>(7);
        try {
            OnnxTensor xTensor = add(tensors, OnnxTensor.createTensor(runner.env, xBuffer, OnnxRunner.longs(x.shape())));
            OnnxTensor tTensor = add(tensors, tIn instanceof FloatBuffer fb
                    ? OnnxTensor.createTensor(runner.env, fb, new long[] {n})
                    : OnnxTensor.createTensor(runner.env, (LongBuffer) tIn, new long[] {n}));
            OnnxTensor yTensor = add(tensors, OnnxTensor.createTensor(runner.env, yBuffer, new long[] {n}));
            OnnxTensor outTensor = add(tensors, OnnxTensor.createTensor(runner.env, outBuffer, outShape));
            if (cacheGraph) {
                OnnxTensor res = add(tensors, OnnxTensor.createTensor(runner.env, residualBuffer, residualShape));
                OnnxTensor run = add(tensors, OnnxTensor.createTensor(runner.env, runBuffer, new long[] {m}));
                OnnxTensor resOut = add(tensors,
                        OnnxTensor.createTensor(runner.env, residualOutBuffer, residualShape));
                runner.run(Map.of(X, xTensor, T, tTensor, Y, yTensor, RESIDUAL, res, RUN, run),
                        Map.of(OUT, outTensor, RESIDUAL_OUT, resOut), cancel);
            } else {
                runner.run(Map.of(X, xTensor, T, tTensor, Y, yTensor), OUT, outTensor, outShape, cancel);
            }
        } catch (OrtException e) {
            throw new BackendException(runner.file + ": cannot create the run's tensors: " + e.getMessage(), e);
        } finally {
            tensors.forEach(OnnxTensor::close);
        }
        outBuffer.get(0, out.data());
        if (!plain) {
            for (int b = 0; b < n; b++) {
                if (cache.use(b) == StepCache.Use.STORE) {
                    residualOutBuffer.get(b * len, cache.residual(b));
                }
            }
        }
    }

    @Override
    public boolean supportsStepCache() {
        return cacheGraph && StepCache.cacheable(spec);
    }

    private static OnnxTensor add(List<OnnxTensor> tensors, OnnxTensor t) {
        tensors.add(t);
        return t;
    }

    private void ensureCapacity(int n) {
        if (!io.ensure(n)) {
            return;
        }
        tBuffer = OnnxRunner.directBytes(8L * n).asLongBuffer();
        yBuffer = OnnxRunner.directBytes(8L * n).asLongBuffer();
        if (cacheGraph) {
            long residualBytes = 4L * n * StepCache.residualLength(spec);
            residualBuffer = OnnxRunner.directBytes(residualBytes).asFloatBuffer();
            residualOutBuffer = OnnxRunner.directBytes(residualBytes).asFloatBuffer();
            runBuffer = OnnxRunner.directBytes(8L * n).asLongBuffer();
        }
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        io.release();
        tBuffer = null;
        yBuffer = null;
        residualBuffer = null;
        residualOutBuffer = null;
        runBuffer = null;
        runner.close();
    }
}
