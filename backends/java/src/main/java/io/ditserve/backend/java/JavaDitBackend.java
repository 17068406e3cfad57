package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import java.util.Objects;

/**
 * The transformer's forward pass in pure Java, for either architecture ({@link ModelSpec#architecture()}): DiT
 * ({@code weights.safetensors}; {@link VectorDit}, {@link ScalarDit}) or SD3's MMDiT (diffusers' transformer
 * folder, {@value MmditCheckpoint#SINGLE_FILE} or its shards; {@link MmditForward}, vector path only). Options:
 *
 * <ul>
 *   <li>{@code java.path}: {@code vector} (default; Vector API on {@code threads} threads of a pool this backend
 *       owns) or {@code scalar} (the single-threaded reference loops, for checking the fast path);
 *   <li>{@code java.max_batch}: the batch size the activation buffers are sized for at load (default 8); a larger
 *       batch grows them once;
 *   <li>{@code java.weights}: {@code stored} (default: F16/BF16 weights stay 16-bit in memory, the products run in
 *       float32 on panels decoded as they are used, bit-identical results) or {@code f32} (decoded at load).
 * </ul>
 *
 * <p>Calls to {@link #forward} are serialised; {@link #close} waits for a running one.
 */
public final class JavaDitBackend implements Backend {
    public static final String WEIGHTS_FILE = "weights.safetensors";
    public static final String PATH_OPTION = "java.path";
    public static final String MAX_BATCH_OPTION = "java.max_batch";
    public static final String WEIGHTS_OPTION = "java.weights";
    static final java.util.List<String> KNOWN_OPTIONS = java.util.List.of(PATH_OPTION, MAX_BATCH_OPTION, WEIGHTS_OPTION);

    /** A {@code java.*} key this backend does not know is an error, so that a typo such as java.pth is not ignored. */
    static void checkKeys(BackendOptions options) throws BackendException {
        options.checkKeys("java", KNOWN_OPTIONS);
    }

    /**
     * {@code java.weights}: {@code stored} (default) keeps F16/BF16 weights of linear layers and embedding tables in
     * 16 bits, decoded per panel or row when used ({@link Panels}, {@link Table}); {@code f32} decodes everything
     * to float32 at load (twice the memory; the results are the same bits, the decoding being exact).
     */
    static boolean keep16(BackendOptions options) throws BackendException {
        return options.choice("java", WEIGHTS_OPTION, java.util.List.of("stored", "f32")).equals("stored");
    }

    /** {@code java.path}: vector (default) or scalar. */
    static String path(BackendOptions options) throws BackendException {
        return options.choice("java", PATH_OPTION, java.util.List.of("vector", "scalar"));
    }
    private static final System.Logger LOG = System.getLogger(JavaDitBackend.class.getName());

    private final ModelSpec spec;
    private final DitEngine engine; // a DiT, or null
    private final MmditForward mmdit; // an MMDiT, or null
    private boolean closed;

    private JavaDitBackend(ModelSpec spec, DitEngine engine, MmditForward mmdit) {
        this.spec = spec;
        this.engine = engine;
        this.mmdit = mmdit;
    }

    /**
     * Loads the weights of the model folder, checked against {@code spec}: a DiT's {@code weights.safetensors}, an
     * MMDiT's diffusers weights in {@code spec.directory()} (the transformer folder).
     */
    public static JavaDitBackend create(ModelSpec spec, BackendOptions options) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        checkKeys(options);
        String path = path(options);
        int maxBatch = options.intAtLeast(MAX_BATCH_OPTION, 8, 1);
        boolean keep16 = keep16(options);
        long start = System.nanoTime();
        JavaDitBackend backend;
        long bytes;
        long held = -1; // bytes the MMDiT's weights take in memory
        switch (spec.architecture()) {
            case DIT -> {
                try (CheckpointReader reader = CheckpointReader.open(spec, spec.file(WEIGHTS_FILE)).keep16(keep16)) {
                    DitEngine engine = path.equals("scalar")
                            ? new ScalarDit(spec, new DitWeights(spec, reader))
                            : new VectorDit(spec, reader, options.threads(), maxBatch);
                    bytes = reader.bytesRead();
                    backend = new JavaDitBackend(spec, engine, null);
                }
            }
            case MMDIT -> {
                if (path.equals("scalar")) {
                    throw new BackendException(PATH_OPTION + "=scalar has no MMDiT (model " + spec.name()
                            + "); use " + PATH_OPTION + "=vector");
                }
                try (CheckpointReader reader = CheckpointReader.openMmdit(spec).keep16(keep16)) {
                    MmditForward forward = new MmditForward(spec, reader, options.threads(), maxBatch);
                    bytes = reader.bytesRead();
                    held = forward.weightBytes();
                    backend = new JavaDitBackend(spec, null, forward);
                }
            }
            default -> throw new IllegalStateException("unknown architecture " + spec.architecture());
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        long inMemory = held;
        LOG.log(System.Logger.Level.INFO, () -> String.format("java backend loaded %s: %.1f MB of weights in %.1f s"
                + " (%s path, %s%s)", spec.name(), bytes / 1e6, seconds, path, spec.architecture(),
                inMemory < 0 ? "" : String.format(", %.1f MB in memory, java.weights=%s", inMemory / 1e6,
                        keep16 ? "stored" : "f32")));
        return backend;
    }


    /** Bytes an MMDiT's weights take in memory as loaded ({@link MmditForward#weightBytes}); -1 for a DiT. */
    long weightBytes() {
        return mmdit == null ? -1 : mmdit.weightBytes();
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
        int n = batch.checkOpen(closed, spec, out);
        if (n == 0) {
            return;
        }
        if (mmdit != null) {
            refuseStepCache(batch);
            mmdit.forward(batch.x().data(), batch.time(), (Conditioning.TextEmbeddings) batch.conditioning(), n,
                    out.data(), cancel);
        } else {
            engine.forward(batch.x().data(), batch.time(), batch.labels(), n, out.data(), cancel, batch.cache());
        }
    }

    @Override
    public int preferredMaxBatch() {
        return 32;
    }

    @Override
    public boolean supportsStepCache() {
        return mmdit == null && StepCache.cacheable(spec); // MMDiT: not yet (its blocks carry two streams)
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            if (mmdit != null) {
                mmdit.close();
            } else {
                engine.close();
            }
        }
    }
}
