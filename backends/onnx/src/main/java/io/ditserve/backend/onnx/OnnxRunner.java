package io.ditserve.backend.onnx;

import ai.onnxruntime.NodeInfo;
import ai.onnxruntime.OnnxJavaType;
import ai.onnxruntime.OnnxTensor;
import ai.onnxruntime.OrtEnvironment;
import ai.onnxruntime.OrtException;
import ai.onnxruntime.OrtSession;
import ai.onnxruntime.OrtSession.SessionOptions.OptLevel;
import ai.onnxruntime.TensorInfo;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
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
 * One ONNX Runtime session with everything the DiT backend and the decoders share: the options of the onnx
 * backend, parsed once; session creation; the I/O contract checks; a run whose output is pinned to the caller's
 * buffer and that a {@link Cancellation} can terminate. Options:
 *
 * <ul>
 *   <li>{@code onnx.provider}: {@code cpu} (default) or {@code cuda}. {@code cuda} needs the onnxruntime_gpu jar
 *       and a device; without them {@link #open} fails, it never falls back to the CPU;
 *   <li>{@code onnx.cuda.device}: the CUDA device id (default 0);
 *   <li>{@code onnx.optimization}: the graph optimization level, {@code all} (default), {@code extended},
 *       {@code basic} or {@code none};
 *   <li>{@code onnx.spinning}: {@code false} (default) or {@code true}: whether idle intra-op threads spin. In a
 *       server the compute shares the cores with the transport and the encoders; spinning workers then lose their
 *       core in the middle of a parallel region and every pass waits for them (measured: a batch of 16 ran 5× slower
 *       under 16 streaming clients with spinning on; README, "Batching");
 *   <li>{@code onnx.graph_cache}, {@code onnx.graph_cache_dir}, {@code onnx.graph_cache_max_mb}: the cache of the
 *       graphs built at load ({@link GraphCache}).
 * </ul>
 *
 * The intra-op thread pool has {@link BackendOptions#threads()} threads. Not thread-safe: its owner serialises runs.
 */
final class OnnxRunner implements AutoCloseable {
    static final String PROVIDER_OPTION = "onnx.provider";
    static final String CUDA_DEVICE_OPTION = "onnx.cuda.device";
    static final String OPTIMIZATION_OPTION = "onnx.optimization";
    static final String SPINNING_OPTION = "onnx.spinning";
    private static final List<String> KNOWN_OPTIONS = List.of(PROVIDER_OPTION, CUDA_DEVICE_OPTION, OPTIMIZATION_OPTION,
            SPINNING_OPTION, GraphCache.OPTION, GraphCache.DIR_OPTION, GraphCache.MAX_MB_OPTION);
    private static final List<String> PROVIDERS = List.of("cpu", "cuda");
    private static final List<String> OPTIMIZATIONS = List.of("all", "extended", "basic", "none");
    /** How often a running session looks at a {@link Cancellation} that cannot notify. */
    private static final long CANCEL_POLL_MILLIS = 5;

    /** Process-wide and shared with every other ONNX Runtime user in the JVM: not ours to close. */
    final OrtEnvironment env;
    final Path file;
    /** The model's external-data files (empty when its weights are inside it), checked before the session. */
    final ExternalData.Summary externalData;
    // Native objects this runner owns; closed in reverse order of creation. The options outlive the session.
    private final OrtSession.SessionOptions sessionOptions;
    final OrtSession session;
    private final ScheduledExecutorService cancelWatcher;
    private boolean closed;

    private OrtSession.SessionOptions options() {
        return sessionOptions;
    }

    private OnnxRunner(OrtEnvironment env, Path file, ExternalData.Summary externalData,
            OrtSession.SessionOptions sessionOptions, OrtSession session, String threadName) {
        this.env = env;
        this.file = file;
        this.externalData = externalData;
        this.sessionOptions = sessionOptions;
        this.session = session;
        ScheduledThreadPoolExecutor watcher = new ScheduledThreadPoolExecutor(1,
                Thread.ofPlatform().name("onnx-cancel-watch-" + threadName).daemon().factory());
        watcher.setRemoveOnCancelPolicy(true);
        this.cancelWatcher = watcher;
    }

    /** The backend options as ONNX Runtime takes them. */
    private record Settings(String provider, OptLevel optLevel, int cudaDevice, boolean spinning, int threads) {
        static Settings of(BackendOptions options) throws BackendException {
            Objects.requireNonNull(options, "options");
            options.checkKeys("onnx", KNOWN_OPTIONS);
            String provider = options.choice("onnx", PROVIDER_OPTION, PROVIDERS);
            OptLevel optLevel = switch (options.choice("onnx", OPTIMIZATION_OPTION, OPTIMIZATIONS)) {
                case "all" -> OptLevel.ALL_OPT;
                case "extended" -> OptLevel.EXTENDED_OPT;
                case "basic" -> OptLevel.BASIC_OPT;
                default -> OptLevel.NO_OPT;
            };
            int cudaDevice = options.intAtLeast(CUDA_DEVICE_OPTION, 0, 0);
            boolean spinning = options.choice("onnx", SPINNING_OPTION, List.of("false", "true")).equals("true");
            return new Settings(provider, optLevel, cudaDevice, spinning, options.threads());
        }

        /**
         * What of these settings can change the graph ONNX Runtime makes of a model (its optimised form): the level,
         * the provider and its device, the thread count. Not spinning, which only changes how idle threads wait.
         */
        String graphKey() {
            return "optimization " + optLevel + ", provider " + provider
                    + (provider.equals("cuda") ? " device " + cudaDevice : "") + ", threads " + threads;
        }
    }

    /** Checks the onnx options; {@link Settings#graphKey} of them (GraphCache's key of an optimised graph). */
    static String sessionGraphKey(BackendOptions options) throws BackendException {
        return Settings.of(options).graphKey();
    }

    /** Whether the options have ONNX Runtime optimise the graph at all ({@code onnx.optimization} not none). */
    static boolean optimizes(BackendOptions options) throws BackendException {
        return Settings.of(options).optLevel() != OptLevel.NO_OPT;
    }

    /** How a session is made from prepared session options (a file path, or generated bytes). */
    @FunctionalInterface
    private interface SessionFactory {
        OrtSession create(OrtEnvironment env, OrtSession.SessionOptions options) throws OrtException;
    }

    /**
     * Opens {@code file} with the backend options; {@code what} says what the file is for the missing-file message.
     */
    static OnnxRunner open(Path file, BackendOptions options, String what, String threadName)
            throws BackendException {
        Settings settings = Settings.of(options);
        if (!Files.isRegularFile(file)) {
            throw new BackendException(file + ": missing (" + what + ")");
        }
        // a graph over 2 GB keeps its weights in model.onnx.data beside it: a missing or short one is named here
        ExternalData.Summary external = ExternalData.check(file);
        return open(settings, null, file, external, Map.of(), null,
                (env, o) -> env.createSession(file.toString(), o), threadName);
    }

    /**
     * A session on a graph built in memory ({@code model}, protobuf bytes) whose external data lies in
     * {@code folder}: ONNX Runtime has no model path to resolve the locations against, so it is told the folder
     * (session config {@value #EXTERNAL_FOLDER_KEY}). {@code external} describes that data for messages; the
     * session's messages name {@code folder}.
     */
    static OnnxRunner openGenerated(byte[] model, Path folder, ExternalData.Summary external, BackendOptions options,
            String threadName) throws BackendException {
        return openGenerated(model, folder, external, options, threadName, null);
    }

    /**
     * As above; with {@code saveOptimized} not null, ONNX Runtime also writes the graph it made of the model (after
     * its optimisations) to that file, with every initializer over {@value #SAVED_INLINE_MAX} bytes in
     * {@code saveOptimized + ".data"} beside it (GraphCache's optimised entries).
     */
    static OnnxRunner openGenerated(byte[] model, Path folder, ExternalData.Summary external, BackendOptions options,
            String threadName, Path saveOptimized) throws BackendException {
        Settings settings = Settings.of(options);
        Map<String, String> config = new java.util.LinkedHashMap<>();
        config.put(EXTERNAL_FOLDER_KEY, folder.toAbsolutePath().toString());
        if (saveOptimized != null) {
            config.put(SAVED_DATA_FILE_KEY, saveOptimized.getFileName() + ".data");
            config.put(SAVED_INLINE_MAX_KEY, Long.toString(SAVED_INLINE_MAX));
        }
        return open(settings, null, folder, external, config, saveOptimized,
                (env, o) -> env.createSession(model, o), threadName);
    }

    /**
     * A session on a graph ONNX Runtime optimised and saved before ({@link #openGenerated} with a file to save to):
     * it is loaded as it is, with ONNX Runtime's optimisations off (they were applied when it was saved), its
     * external data resolved beside it. Messages name {@code folder}, the model's own folder, and {@code external}
     * (the checkpoint's bytes, what the graph was built from).
     */
    static OnnxRunner openOptimized(Path saved, Path folder, ExternalData.Summary external, BackendOptions options,
            String threadName) throws BackendException {
        Settings settings = Settings.of(options);
        return open(settings, OptLevel.NO_OPT, folder, external, Map.of(), null,
                (env, o) -> env.createSession(saved.toString(), o), threadName);
    }

    /** ONNX Runtime's session config key for the folder of external data when the model comes from memory. */
    static final String EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path";
    /** The file (beside the saved model) where ONNX Runtime writes the initializers of an optimised model it saves. */
    private static final String SAVED_DATA_FILE_KEY = "session.optimized_model_external_initializers_file_name";
    /** Initializers of at most this many bytes stay inside a saved model; larger ones go to its data file. */
    private static final String SAVED_INLINE_MAX_KEY = "session.optimized_model_external_initializers_min_size_in_bytes";
    static final long SAVED_INLINE_MAX = 1024;

    /**
     * The session of {@code factory} with {@code settings} ({@code level}, when not null, in place of the settings'
     * optimisation level), the session config entries {@code config}, and {@code saveOptimized} (when not null) the
     * file ONNX Runtime writes the optimised model to.
     */
    private static OnnxRunner open(Settings settings, OptLevel level, Path file, ExternalData.Summary external,
            Map<String, String> config, Path saveOptimized, SessionFactory factory, String threadName)
            throws BackendException {
        OrtEnvironment env = environment();
        OrtSession.SessionOptions sessionOptions = new OrtSession.SessionOptions();
        OrtSession session = null;
        try {
            try {
                sessionOptions.setIntraOpNumThreads(settings.threads());
                sessionOptions.setOptimizationLevel(level != null ? level : settings.optLevel());
                if (saveOptimized != null) {
                    sessionOptions.setOptimizedModelFilePath(saveOptimized.toString());
                }
                sessionOptions.addConfigEntry("session.intra_op.allow_spinning", settings.spinning() ? "1" : "0");
                for (Map.Entry<String, String> e : config.entrySet()) {
                    sessionOptions.addConfigEntry(e.getKey(), e.getValue());
                }
            } catch (OrtException e) {
                throw new BackendException("ONNX Runtime rejected the session options: " + e.getMessage(), e);
            }
            if (settings.provider().equals("cuda")) {
                try {
                    sessionOptions.addCUDA(settings.cudaDevice());
                } catch (OrtException e) {
                    throw new BackendException("CUDA execution provider not available: " + e.getMessage(), e);
                }
            }
            try {
                session = factory.create(env, sessionOptions);
            } catch (OrtException e) {
                throw new BackendException(file + (external.isEmpty() ? "" : " (" + external.describe() + ")")
                        + ": ONNX Runtime cannot load it: " + e.getMessage(), e);
            }
            return new OnnxRunner(env, file, external, sessionOptions, session, threadName);
        } catch (BackendException | RuntimeException e) {
            closeNative(file, session, sessionOptions);
            throw e;
        }
    }

    /** The process-wide environment; loading ONNX Runtime's native library happens here, on first use. */
    static OrtEnvironment environment() throws BackendException {
        try {
            return OrtEnvironment.getEnvironment();
        } catch (LinkageError | RuntimeException e) {
            throw new BackendException("ONNX Runtime cannot load its native library here: " + e, e);
        }
    }



    /** The model file for messages, with its external data if it has any. */
    String source() {
        return externalData.isEmpty() ? file.toString() : file + " (" + externalData.describe() + ")";
    }

    /** Checks that the session's input and output names are exactly the contract's (listed in its order). */
    void checkNames(List<String> inputs, List<String> outputs) throws BackendException {
        Map<String, NodeInfo> in = inputInfo();
        Map<String, NodeInfo> out = outputInfo();
        if (!in.keySet().equals(Set.copyOf(inputs))) {
            throw new BackendException(source() + ": expected " + (inputs.size() == 1 ? "one input " : "inputs ")
                    + inputs + ", found " + in.keySet());
        }
        if (!out.keySet().equals(Set.copyOf(outputs))) {
            throw new BackendException(source() + ": expected " + (outputs.size() == 1 ? "one output " : "outputs ")
                    + outputs + ", found " + out.keySet());
        }
    }

    Map<String, NodeInfo> inputInfo() throws BackendException {
        try {
            return session.getInputInfo();
        } catch (OrtException e) {
            throw new BackendException(file + ": cannot read the model's inputs: " + e.getMessage(), e);
        }
    }

    Map<String, NodeInfo> outputInfo() throws BackendException {
        try {
            return session.getOutputInfo();
        } catch (OrtException e) {
            throw new BackendException(file + ": cannot read the model's outputs: " + e.getMessage(), e);
        }
    }

    /** One dimension after the batch one: what it is (with its config.json source) and its expected size (−1: any). */
    record Dim(String what, long expected) {}

    /**
     * The batch dimension must be dynamic; each following one must equal its expected size when the model fixes it
     * (a symbolic one is checked by ONNX Runtime when it runs), and must be dynamic where any size is expected.
     */
    void checkTensor(String role, NodeInfo node, OnnxJavaType type, String layout, Dim... dims)
            throws BackendException {
        String where = source() + ": " + role + " '" + node.getName() + "': ";
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
            long expected = dims[i].expected();
            if (expected < 0 && found >= 0) {
                throw new BackendException(where + "expected dynamic " + dims[i].what() + ", found the fixed size "
                        + found + " in " + formatShape(info) + " (export with dynamic_axes)");
            }
            if (expected >= 0 && found >= 0 && found != expected) {
                throw new BackendException(where + "expected " + expected + " " + dims[i].what()
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

    /**
     * Runs the session with output {@code outName} pinned to {@code out} (ONNX Runtime writes into its buffer), while
     * the watcher thread sets the terminate flag of the run as soon as {@code cancel} fires.
     */
    void run(Map<String, OnnxTensor> inputs, String outName, OnnxTensor out, long[] outShape, Cancellation cancel)
            throws BackendException {
        run(inputs, Map.of(outName, out), cancel);
    }

    /** As above, with every output pinned to a caller's tensor. */
    void run(Map<String, OnnxTensor> inputs, Map<String, OnnxTensor> outputs, Cancellation cancel)
            throws BackendException {
        if (closed) {
            throw new IllegalStateException(file + ": session is closed");
        }
        OrtSession.RunOptions runOptions;
        try {
            runOptions = new OrtSession.RunOptions();
        } catch (OrtException e) {
            throw new BackendException(file + ": cannot create run options: " + e.getMessage(), e);
        }
        try (runOptions) {
            CancelWatch watch = new CancelWatch(runOptions, cancel);
            // told at once when the cancellation can notify; polled every few milliseconds otherwise
            Cancellation.Subscription told = cancel == Cancellation.NEVER ? null : cancel.onCancel(watch);
            ScheduledFuture<?> polling = cancel == Cancellation.NEVER || told != null ? null
                    : cancelWatcher.scheduleWithFixedDelay(watch, CANCEL_POLL_MILLIS, CANCEL_POLL_MILLIS,
                            TimeUnit.MILLISECONDS);
            OrtException failure = null;
            boolean fired;
            try (OrtSession.Result result = session.run(inputs, Set.of(), outputs, runOptions)) {
                // ONNX Runtime fails the run when the model's output shape differs from the pinned tensor's; here it
                // only remains to check that each output is the pinned tensor, i.e. in the caller's buffer
                for (Map.Entry<String, OnnxTensor> e : outputs.entrySet()) {
                    if (result.get(e.getKey()).orElse(null) != e.getValue()) {
                        throw new IllegalStateException(file + ": ONNX Runtime returned '" + e.getKey()
                                + "' in a tensor of its own instead of the pinned "
                                + Arrays.toString(e.getValue().getInfo().getShape()) + " one");
                    }
                }
            } catch (OrtException e) {
                failure = e;
            } finally {
                if (polling != null) {
                    polling.cancel(false);
                }
                if (told != null) {
                    told.close();
                }
                fired = watch.stop(); // from here on the watcher leaves runOptions alone: they are closed below
            }
            // a run that finished just as the request was cancelled is reported as cancelled: the caller asked to stop
            if (fired) {
                throw cancelled(failure != null ? failure : watch.failure());
            }
            if (failure != null) {
                throw new BackendException(file + ": ONNX Runtime run failed: " + failure.getMessage(), failure);
            }
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

    static ByteBuffer directBytes(long bytes) {
        return ByteBuffer.allocateDirect(Math.toIntExact(bytes)).order(ByteOrder.nativeOrder());
    }

    static long[] longs(int[] v) {
        long[] r = new long[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = v[i];
        }
        return r;
    }

    /** Stops the watcher, then closes the session and its options. Idempotent. */
    @Override
    public void close() {
        if (closed) {
            return;
        }
        closed = true;
        cancelWatcher.shutdownNow();
        closeNative(file, session, options());
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
