package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ForwardArguments;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Map;
import java.util.Objects;

/**
 * The DiT forward pass on an NVIDIA GPU: cuBLAS for the matrix products, NVRTC-compiled kernels for the rest
 * ({@link DitForward} is the pass, {@link CudaDevice} the GPU). Options: see {@link CudaOptions}.
 *
 * <p>The weights are uploaded once at load; the activation buffers are allocated for {@code cuda.max_batch}
 * samples and reused (a larger batch grows them). Per call only x, t and y go up and the output comes down, through
 * host staging buffers of the same capacity. Calls are serialised; {@link #close} waits for a running one.
 */
public final class CudaDitBackend implements Backend {
    public static final String WEIGHTS_FILE = "weights.safetensors";
    private static final System.Logger LOG = System.getLogger(CudaDitBackend.class.getName());

    private final ModelSpec spec;
    private final CudaOptions options;
    private final CudaDevice device;
    private final CudaOps ops;
    private final DitForward program;
    private ActivationLayout act;
    private long actBase;
    private Arena stagingArena;
    private MemorySegment stageX;
    private MemorySegment stageT;
    private MemorySegment stageY;
    private MemorySegment stageOut;
    private boolean closed;

    private CudaDitBackend(ModelSpec spec, CudaOptions options, CudaDevice device, WeightLayout layout,
            long weights) {
        this.spec = spec;
        this.options = options;
        this.device = device;
        this.ops = new CudaOps(device, options.debugSync());
        this.program = new DitForward(spec, layout, weights);
    }

    /**
     * Validates {@code weights.safetensors} against {@code spec}, opens the GPU, uploads the weights and sizes the
     * activation buffers. Fails with the reason (missing library or device, bad weights file, out of memory).
     */
    public static CudaDitBackend create(ModelSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        WeightLayout layout = new WeightLayout(spec);
        Path file = spec.file(WEIGHTS_FILE);
        try (Safetensors st = Safetensors.open(file)) {
            DitCheckpoint.validate(st, spec);
            CudaDevice device = CudaDevice.open(options, System.getenv());
            try {
                long weights = upload(device, st, layout, spec);
                CudaDitBackend b = new CudaDitBackend(spec, options, device, layout, weights);
                b.ensureCapacity(options.maxBatch());
                LOG.log(System.Logger.Level.INFO, "cuda backend loaded " + spec.name() + " on " + device.description());
                return b;
            } catch (BackendException | RuntimeException e) {
                device.close();
                throw e;
            }
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static long upload(CudaDevice device, Safetensors st, WeightLayout layout, ModelSpec spec)
            throws BackendException {
        long base = device.alloc(4 * layout.totalFloats(), "the weights of " + spec.name());
        for (WeightLayout.Slot slot : layout.slots().values()) {
            long dst = base + 4 * slot.offset();
            if (slot.name().equals(WeightLayout.FREQS)) {
                float[] freqs = DitConstants.timestepFrequencies();
                try (Arena a = Arena.ofConfined()) {
                    device.driver.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, freqs), 4L * freqs.length,
                            slot.name());
                }
            } else if (st.entry(slot.name()).dtype().equals("F32")) {
                // the mapped file is little-endian float32 already, as the GPU wants it
                device.driver.copyToDevice(dst, st.segment(slot.name()), 4 * slot.length(), slot.name());
            } else {
                float[] values = st.floats(slot.name());
                try (Arena a = Arena.ofConfined()) {
                    device.driver.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, values), 4L * values.length,
                            slot.name());
                }
            }
        }
        return base;
    }

    /** Sizes the activation and staging buffers for at least {@code n} samples. */
    private void ensureCapacity(int n) throws BackendException {
        if (act != null && n <= act.capacity()) {
            return;
        }
        ActivationLayout next = ActivationLayout.of(spec, Math.max(n, options.maxBatch()));
        if (act != null) {
            device.synchronize("the previous forward pass, before growing the buffers");
            device.free(actBase);
            act = null;
            stagingArena.close();
            stagingArena = null;
        }
        actBase = device.alloc(next.totalBytes(), "the activations of " + spec.name() + " for batches up to "
                + next.capacity());
        stagingArena = Arena.ofShared();
        stageX = stagingArena.allocate(4 * next.length(Buffer.X_IN), 64);
        stageT = stagingArena.allocate(4 * next.length(Buffer.T), 64);
        stageY = stagingArena.allocate(4 * next.length(Buffer.Y), 64);
        stageOut = stagingArena.allocate(4 * next.length(Buffer.OUT), 64);
        act = next;
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return device.description();
    }

    @Override
    public String name() {
        return CudaBackendProvider.NAME;
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
        device.makeCurrent();
        ensureCapacity(n);
        MemorySegment stream = device.stream();
        MemorySegment.copy(x.data(), 0, stageX, JAVA_FLOAT, 0, x.size());
        MemorySegment.copy(t, 0, stageT, JAVA_INT, 0, n);
        MemorySegment.copy(y, 0, stageY, JAVA_INT, 0, n);
        device.driver.copyToDeviceAsync(at(Buffer.X_IN), stageX, 4L * x.size(), stream, "x");
        device.driver.copyToDeviceAsync(at(Buffer.T), stageT, 4L * n, stream, "t");
        device.driver.copyToDeviceAsync(at(Buffer.Y), stageY, 4L * n, stream, "y");
        try {
            program.run(ops, act, actBase, n, cancel);
        } catch (BackendException.Cancelled c) {
            device.synchronize("a cancelled forward pass");
            throw c;
        }
        device.driver.copyToHostAsync(stageOut, at(Buffer.OUT), 4L * out.size(), stream, "out");
        device.synchronize("the forward pass of " + spec.name() + " (batch " + n + ")");
        MemorySegment.copy(stageOut, JAVA_FLOAT, 0, out.data(), 0, out.size());
    }

    private long at(Buffer b) {
        return actBase + 4 * act.offset(b);
    }

    /** Frees the device memory, the cuBLAS handle, the module, the stream and the context reference. Idempotent. */
    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        device.close();
        if (stagingArena != null) {
            stagingArena.close();
        }
    }
}
