package io.ditserve.backend.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.OrtSession.SessionOptions.OptLevel;
import ai.onnxruntime.TensorInfo;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ForwardArguments;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.LongBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

/**
 * The DiT forward pass on ONNX Runtime, from the {@code model.onnx} of a model folder. Options:
 *
 * <ul>
 *   <li>{@code onnx.provider}: {@code cpu} (default) or {@code cuda}. {@code cuda} needs the onnxruntime_gpu jar
 *       and a device; without them {@link #create} fails, it never falls back to the CPU;
 *   <li>{@code onnx.cuda.device}: the CUDA device id (default 0);
 *   <li>{@code onnx.optimization}: the graph optimization level, {@code all} (default), {@code extended},
 *       {@code basic} or {@code none}.
 * </ul>
 *
 * The intra-op thread pool has {@link BackendOptions#threads()} threads.
 *
 * <p>The model must follow the contract of tools/dit/export.py: inputs {@code x} [N, C_in, H, W] float32,
 * {@code t} [N] int64, {@code y} [N] int64, output {@code out} [N, C_out, H, W] float32, with a dynamic N. It is
 * checked against that contract and the {@link ModelSpec} at load, so a wrong file fails at start-up, not at the
 * first request.
 *
 * <p>Calls to {@link #forward} are serialised (they share the I/O buffers); {@link #close} waits for a running one.
 */
public final class OnnxDitBackend implements Backend {
    public static final String MODEL_FILE = "model.onnx";
    public static final String PROVIDER_OPTION = "onnx.provider";
    public static final String CUDA_DEVICE_OPTION = "onnx.cuda.device";
    public static final String OPTIMIZATION_OPTION = "onnx.optimization";
    private static final List<String> KNOWN_OPTIONS = List.of(PROVIDER_OPTION, CUDA_DEVICE_OPTION, OPTIMIZATION_OPTION);
    private static final List<String> PROVIDERS = List.of("cpu", "cuda");
    private static final List<String> OPTIMIZATIONS = List.of("all", "extended", "basic", "none");

    private static final String X = "x";
    private static final String T = "t";
    private static final String Y = "y";
    private static final String OUT = "out";
    /** How often a running forward pass looks at its {@link Cancellation}. */
    private static final long CANCEL_POLL_MILLIS = 5;

    /** Process-wide and shared with every other ONNX Runtime user in the JVM: not ours to close. */
    private final OrtEnvironment env;
    private final ModelSpec spec;
    private final Path file;
    // Native objects this backend owns; closed in reverse order of creation. The options outlive the session.
    private final OrtSession.SessionOptions sessionOptions;
    private final OrtSession session;
    private final ScheduledExecutorService cancelWatcher;

    // Direct native-order I/O buffers, sized for `capacity` samples and grown on demand: ONNX Runtime reads the
    // inputs from them and writes the output into them without a copy of its own.
    private int capacity;
    private FloatBuffer xBuffer;
    private LongBuffer tBuffer;
    private LongBuffer yBuffer;
    private FloatBuffer outBuffer;
    private boolean closed;

    private OnnxDitBackend(OrtEnvironment env, ModelSpec spec, Path file, OrtSession.SessionOptions sessionOptions,
            OrtSession session) {
        this.env = env;
        this.spec = spec;
        this.file = file;
        this.sessionOptions = sessionOptions;
        this.session = session;
        ScheduledThreadPoolExecutor watcher = new ScheduledThreadPoolExecutor(1,
                Thread.ofPlatform().name("onnx-cancel-watch-" + spec.name()).daemon().factory());
        watcher.setRemoveOnCancelPolicy(true);
        this.cancelWatcher = watcher;
    }

    /** Loads {@code model.onnx} of the model folder and checks it against the I/O contract and {@code spec}. */
    public static OnnxDitBackend create(ModelSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(options, "options");
        for (String key : options.options().keySet()) {
            if (key.startsWith("onnx.") && !KNOWN_OPTIONS.contains(key)) {
                throw new BackendException("Unknown option [" + key + "] of the onnx backend, known options "
                        + KNOWN_OPTIONS);
            }
        }
        String provider = choice(options, PROVIDER_OPTION, PROVIDERS);
        OptLevel optLevel = switch (choice(options, OPTIMIZATION_OPTION, OPTIMIZATIONS)) {
            case "all" -> OptLevel.ALL_OPT;
            case "extended" -> OptLevel.EXTENDED_OPT;
            case "basic" -> OptLevel.BASIC_OPT;
            default -> OptLevel.NO_OPT;
        };
        int cudaDevice = cudaDevice(options);
        Path file = spec.file(MODEL_FILE);
        if (!Files.isRegularFile(file)) {
            throw new BackendException(file + ": missing (the onnx backend needs the exported model)");
        }

        OrtEnvironment env = environment();
        OrtSession.SessionOptions sessionOptions = new OrtSession.SessionOptions();
        OrtSession session = null;
        try {
            try {
                sessionOptions.setIntraOpNumThreads(options.threads());
                sessionOptions.setOptimizationLevel(optLevel);
            } catch (OrtException e) {
                throw new BackendException("ONNX Runtime rejected the session options: " + e.getMessage(), e);
            }
            if (provider.equals("cuda")) {
                try {
                    sessionOptions.addCUDA(cudaDevice);
                } catch (OrtException e) {
                    throw new BackendException("CUDA execution provider not available: " + e.getMessage(), e);
                }
            }
            try {
                session = env.createSession(file.toString(), sessionOptions);
            } catch (OrtException e) {
                throw new BackendException(file + ": ONNX Runtime cannot load it: " + e.getMessage(), e);
            }
            checkContract(file, spec, session);
            return new OnnxDitBackend(env, spec, file, sessionOptions, session);
        } catch (BackendException | RuntimeException e) {
            closeNative(file, session, sessionOptions);
            throw e;
        }
    }

    /** The process-wide environment; loading ONNX Runtime's native library happens here, on first use. */
    private static OrtEnvironment environment() throws BackendException {
        try {
            return OrtEnvironment.getEnvironment();
        } catch (LinkageError | RuntimeException e) {
            throw new BackendException("ONNX Runtime cannot load its native library here: " + e, e);
        }
    }

    private static String choice(BackendOptions options, String key, List<String> allowed) throws BackendException {
        String v = options.get(key, allowed.getFirst());
        if (!allowed.contains(v)) {
            throw new BackendException("Unknown " + key + " [" + v + "] of the onnx backend, known options " + allowed);
        }
        return v;
    }

    private static int cudaDevice(BackendOptions options) throws BackendException {
        String v = options.get(CUDA_DEVICE_OPTION, "0");
        try {
            int id = Integer.parseInt(v.trim());
            if (id >= 0) {
                return id;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new BackendException(CUDA_DEVICE_OPTION + " must be a device id >= 0, found '" + v + "'");
    }

    /** Checks names, element types and ranks against the export contract, and the static dims against the spec. */
    private static void checkContract(Path file, ModelSpec spec, OrtSession session) throws BackendException {
        Map<String, NodeInfo> inputs;
        Map<String, NodeInfo> outputs;
        try {
            inputs = session.getInputInfo();
            outputs = session.getOutputInfo();
        } catch (OrtException e) {
            throw new BackendException(file + ": cannot read the model's inputs and outputs: " + e.getMessage(), e);
        }
        if (!inputs.keySet().equals(Set.of(X, T, Y))) {
            throw new BackendException(file + ": expected inputs [x, t, y], found " + inputs.keySet());
        }
        if (!outputs.keySet().equals(Set.of(OUT))) {
            throw new BackendException(file + ": expected one output [out], found " + outputs.keySet());
        }
        int size = spec.inputSize();
        checkTensor(file, "input", inputs.get(X), OnnxJavaType.FLOAT, "[N, C_in, H, W]",
                new Dim("channels (in_channels)", spec.inChannels()),
                new Dim("rows (input_size)", size),
                new Dim("columns (input_size)", size));
        checkTensor(file, "input", inputs.get(T), OnnxJavaType.INT64, "[N]");
        checkTensor(file, "input", inputs.get(Y), OnnxJavaType.INT64, "[N]");
        checkTensor(file, "output", outputs.get(OUT), OnnxJavaType.FLOAT, "[N, C_out, H, W]",
                new Dim("channels (in_channels, doubled with learn_sigma)", spec.outChannels()),
                new Dim("rows (input_size)", size),
                new Dim("columns (input_size)", size));
    }

    /** One dimension after the batch one: what it is (with its config.json source) and its expected size. */
    private record Dim(String what, long expected) {}

    /**
     * The batch dimension must be dynamic; each following one must equal its expected size when the model fixes it
     * (a symbolic one is checked by ONNX Runtime when it runs).
     */
    private static void checkTensor(Path file, String role, NodeInfo node, OnnxJavaType type, String layout,
            Dim... dims) throws BackendException {
        String where = file + ": " + role + " '" + node.getName() + "': ";
        if (!(node.getInfo() instanceof TensorInfo info)) {
            throw new BackendException(where + "expected a tensor, found " + node.getInfo());
        }
        if (info.type != type) {
            throw new BackendException(where + "expected " + type + " elements, found " + info.type);
        }
        long[] shape = info.getShape();
        if (shape.length != dims.length + 1) {
            throw new BackendException(where + "expected rank " + (dims.length + 1) + " " + layout + ", found rank "
                    + shape.length + " " + formatShape(info));
        }
        if (shape[0] >= 0) {
            throw new BackendException(where + "expected a dynamic batch dimension N, found the fixed size "
                    + shape[0] + " (export with dynamic_axes)");
        }
        for (int i = 0; i < dims.length; i++) {
            long found = shape[i + 1];
            if (found >= 0 && found != dims[i].expected()) {
                throw new BackendException(where + "expected " + dims[i].expected() + " " + dims[i].what()
                        + " as config.json says, found " + found + " in " + formatShape(info));
            }
        }
    }

    /** The shape with symbolic dimensions by name, e.g. {@code [N, 1, 28, 28]}. */
    private static String formatShape(TensorInfo info) {
        long[] shape = info.getShape();
        String[] names = info.getDimensionNames();
        List<String> dims = new ArrayList<>(shape.length);
        for (int i = 0; i < shape.length; i++) {
            dims.add(shape[i] >= 0 ? Long.toString(shape[i]) : names[i].isEmpty() ? "?" : names[i]);
        }
        return dims.toString();
    }

    @Override
    public String name() {
        return OnnxBackendProvider.NAME;
    }

    @Override
    public ModelSpec model() {
        return spec;
    }

    @Override
    public synchronized void forward(Tensor x, int[] t, int[] y, Tensor out, Cancellation cancel)
            throws BackendException {
        if (closed) {
            throw new IllegalStateException("backend for " + spec.name() + " is closed");
        }
        int n = ForwardArguments.check(spec, x, t, y, out);
        if (n == 0) {
            return;
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        ensureCapacity(n);
        xBuffer.clear().put(0, x.data()).limit(x.size());
        tBuffer.clear().limit(n);
        yBuffer.clear().limit(n);
        for (int i = 0; i < n; i++) {
            tBuffer.put(i, t[i]);
            yBuffer.put(i, y[i]);
        }
        outBuffer.clear().limit(out.size());
        long[] outShape = longs(out.shape());
        try (OnnxTensor xTensor = OnnxTensor.createTensor(env, xBuffer, longs(x.shape()));
                OnnxTensor tTensor = OnnxTensor.createTensor(env, tBuffer, new long[] {n});
                OnnxTensor yTensor = OnnxTensor.createTensor(env, yBuffer, new long[] {n});
                OnnxTensor outTensor = OnnxTensor.createTensor(env, outBuffer, outShape);
                OrtSession.RunOptions runOptions = new OrtSession.RunOptions()) {
            run(Map.of(X, xTensor, T, tTensor, Y, yTensor), outTensor, outShape, runOptions, cancel);
        } catch (OrtException e) {
            throw new BackendException(file + ": cannot create the run's tensors and options: " + e.getMessage(), e);
        }
        outBuffer.get(0, out.data());
    }

    /**
     * Runs the session with the output pinned to {@code out} (ONNX Runtime writes into its buffer), while the
     * watcher thread sets the terminate flag of {@code runOptions} as soon as {@code cancel} fires.
     */
    private void run(Map<String, OnnxTensor> inputs, OnnxTensor out, long[] outShape, OrtSession.RunOptions runOptions,
            Cancellation cancel) throws BackendException {
        CancelWatch watch = new CancelWatch(runOptions, cancel);
        ScheduledFuture<?> polling = cancel == Cancellation.NEVER ? null
                : cancelWatcher.scheduleWithFixedDelay(watch, CANCEL_POLL_MILLIS, CANCEL_POLL_MILLIS,
                        TimeUnit.MILLISECONDS);
        OrtException failure = null;
        boolean fired;
        try (OrtSession.Result result = session.run(inputs, Set.of(), Map.of(OUT, out), runOptions)) {
            // ONNX Runtime fails the run when the model's output shape differs from the pinned tensor's, which is
            // out.shape(); here it only remains to check that the output is the pinned tensor, i.e. in outBuffer
            if (result.get(OUT).orElse(null) != out) {
                throw new IllegalStateException(file + ": ONNX Runtime returned 'out' in a tensor of its own"
                        + " instead of the pinned " + Arrays.toString(outShape) + " one");
            }
        } catch (OrtException e) {
            failure = e;
        } finally {
            if (polling != null) {
                polling.cancel(false);
            }
            fired = watch.stop(); // from here on the watcher leaves runOptions alone: the caller closes them
        }
        // a run that finished just as the request was cancelled is reported as cancelled too: the caller asked to stop
        if (fired) {
            throw cancelled(failure != null ? failure : watch.failure());
        }
        if (failure != null) {
            throw new BackendException(file + ": ONNX Runtime run failed: " + failure.getMessage(), failure);
        }
    }

    private static BackendException.Cancelled cancelled(Throwable cause) {
        BackendException.Cancelled c = new BackendException.Cancelled();
        if (cause != null) {
            c.initCause(cause);
        }
        return c;
    }

    /**
     * One run's link between its {@link Cancellation} and its {@link OrtSession.RunOptions}, polled on the watcher
     * thread. After {@link #stop} it never touches the run options again, so the caller may close them.
     */
    private static final class CancelWatch implements Runnable {
        private final OrtSession.RunOptions runOptions;
        private final Cancellation cancel;
        private boolean stopped;
        private boolean fired;
        private OrtException failure;

        CancelWatch(OrtSession.RunOptions runOptions, Cancellation cancel) {
            this.runOptions = runOptions;
            this.cancel = cancel;
        }

        @Override
        public synchronized void run() {
            if (stopped || fired || !cancel.isCancelled()) {
                return;
            }
            fired = true;
            try {
                runOptions.setTerminate(true);
            } catch (OrtException e) {
                failure = e; // the run then completes, and the caller still gets Cancelled with this as cause
            }
        }

        /** Ends the watch; returns whether the cancellation fired during the run. */
        synchronized boolean stop() {
            stopped = true;
            return fired;
        }

        synchronized OrtException failure() {
            return failure;
        }
    }

    private void ensureCapacity(int n) {
        if (n <= capacity) {
            return;
        }
        int pixels = spec.inputSize() * spec.inputSize();
        xBuffer = directBytes(4L * n * spec.inChannels() * pixels).asFloatBuffer();
        tBuffer = directBytes(8L * n).asLongBuffer();
        yBuffer = directBytes(8L * n).asLongBuffer();
        outBuffer = directBytes(4L * n * spec.outChannels() * pixels).asFloatBuffer();
        capacity = n;
    }

    private static ByteBuffer directBytes(long bytes) {
        return ByteBuffer.allocateDirect(Math.toIntExact(bytes)).order(ByteOrder.nativeOrder());
    }

    private static long[] longs(int[] v) {
        long[] r = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = v[i];
        }
        return r;
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        cancelWatcher.shutdownNow();
        xBuffer = null;
        tBuffer = null;
        yBuffer = null;
        outBuffer = null;
        capacity = 0;
        closeNative(file, session, sessionOptions);
    }

    /** Closes the session (if any), then the options it was built with. */
    private static void closeNative(Path file, OrtSession session, OrtSession.SessionOptions sessionOptions) {
        try {
            if (session != null) {
                session.close();
            }
        } catch (OrtException e) {
            throw new IllegalStateException(file + ": closing the ONNX Runtime session failed: " + e.getMessage(), e);
        } finally {
            sessionOptions.close();
        }
    }
}
