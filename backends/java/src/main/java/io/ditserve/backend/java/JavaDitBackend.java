package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import java.util.Objects;

/**
 * The DiT forward pass in pure Java. Options:
 *
 * <ul>
 *   <li>{@code java.path}: {@code vector} (default; Vector API on {@code threads} threads of a pool this backend
 *       owns) or {@code scalar} (the single-threaded reference loops, for checking the fast path);
 *   <li>{@code java.max_batch}: the batch size the activation buffers are sized for at load (default 8); a larger
 *       batch grows them once.
 * </ul>
 *
 * <p>Calls to {@link #forward} are serialised; {@link #close} waits for a running one.
 */
public final class JavaDitBackend implements Backend {
    public static final String WEIGHTS_FILE = "weights.safetensors";
    public static final String PATH_OPTION = "java.path";
    public static final String MAX_BATCH_OPTION = "java.max_batch";
    static final java.util.List<String> KNOWN_OPTIONS = java.util.List.of(PATH_OPTION, MAX_BATCH_OPTION);

    /** A {@code java.*} key this backend does not know is an error, so that a typo such as java.pth is not ignored. */
    static void checkKeys(BackendOptions options) throws BackendException {
        options.checkKeys("java", KNOWN_OPTIONS);
    }

    /** {@code java.path}: vector (default) or scalar. */
    static String path(BackendOptions options) throws BackendException {
        return options.choice("java", PATH_OPTION, java.util.List.of("vector", "scalar"));
    }
    private static final System.Logger LOG = System.getLogger(JavaDitBackend.class.getName());

    private final ModelSpec spec;
    private final DitEngine engine;
    private boolean closed;

    private JavaDitBackend(ModelSpec spec, DitEngine engine) {
        this.spec = spec;
        this.engine = engine;
    }

    /** Loads {@code weights.safetensors} of the model folder, checked against {@code spec}. */
    public static JavaDitBackend create(ModelSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        checkKeys(options);
        String path = path(options);
        int maxBatch = options.intAtLeast(MAX_BATCH_OPTION, 8, 1);
        long start = System.nanoTime();
        DitEngine engine;
        long bytes;
        try (CheckpointReader reader = CheckpointReader.open(spec, spec.file(WEIGHTS_FILE))) {
            engine = path.equals("scalar")
                    ? new ScalarDit(spec, new DitWeights(spec, reader))
                    : new VectorDit(spec, reader, options.threads(), maxBatch);
            bytes = reader.bytesRead();
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        LOG.log(System.Logger.Level.INFO, () -> String.format("java backend loaded %s: %.1f MB of weights in %.1f s"
                + " (%s path)", spec.name(), bytes / 1e6, seconds, path));
        return new JavaDitBackend(spec, engine);
    }


    @Override
    public String name() {
        return JavaBackendProvider.NAME;
    }

    @Override
    public ModelSpec model() {
        return spec;
    }

    @Override
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        if (closed) {
            throw new IllegalStateException("backend for " + spec.name() + " is closed");
        }
        int n = batch.check(spec, out);
        if (n > 0) {
            engine.forward(batch.x().data(), batch.time(), batch.labels(), n, out.data(), cancel, batch.cache());
        }
    }

    @Override
    public int preferredMaxBatch() {
        return 32;
    }

    @Override
    public boolean supportsStepCache() {
        return StepCache.cacheable(spec);
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            engine.close();
        }
    }
}
