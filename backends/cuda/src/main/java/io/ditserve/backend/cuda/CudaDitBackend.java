package io.ditserve.backend.cuda;

import io.ditserve.backend.DitConstants;
import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.ActivationLayout.Buffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Objects;

/**
 * The DiT forward pass on an NVIDIA GPU: cuBLAS for the matrix products, NVRTC-compiled kernels for the rest
 * ({@link DitForward} is the pass, {@link CudaDevice} the GPU). Options: see {@link CudaOptions}.
 *
 * <p>The weights are uploaded once at load; the activation buffers are allocated for {@code cuda.max_batch}
 * samples and reused (a larger batch grows them). Per call only x, t and y go up and the output comes down, through
 * host staging buffers of the same capacity. Calls are serialised; {@link #close} waits for a running one.
 *
 * <p>Step caching (docs/STEP_CACHE.md, {@link #forward(Tensor, int[], int[], Tensor, Cancellation, StepCache)}):
 * the samples go up reordered, those that store their residual first, then those that only run the cached span,
 * then those that reuse a residual, so that the span runs on a prefix of the batch ({@link DitForward}); the output
 * and the stored residuals come down and go back to the caller's order. Rows of a sample are computed the same
 * wherever the sample is in the batch, so the reordering changes no result.
 */
public final class CudaDitBackend implements Backend {
    public static final String WEIGHTS_FILE = "weights.safetensors";
    private static final System.Logger LOG = System.getLogger(CudaDitBackend.class.getName());
    /** The order of the samples in a pass with a step cache (DitForward runs the cached span on a prefix). */
    private static final StepCache.Use[] PASS_ORDER = {StepCache.Use.STORE, StepCache.Use.RUN, StepCache.Use.REUSE};

    private final ModelSpec spec;
    private final int maxBatch;
    private final Device device;
    private final DitOps ops;
    private final DitForward program;
    private ActivationLayout act;
    private DevicePtr actBase;
    private Arena stagingArena;
    private MemorySegment stageX;
    private MemorySegment stageT;
    private MemorySegment stageY;
    private MemorySegment stageOut;
    private MemorySegment stageResidual;
    private int[] order = new int[0];
    private boolean closed;

    private CudaDitBackend(ModelSpec spec, int maxBatch, Device device, WeightLayout layout, DevicePtr weights) {
        this.spec = spec;
        this.maxBatch = maxBatch;
        this.device = device;
        this.ops = device.ops();
        this.program = new DitForward(spec, layout, weights);
    }

    /**
     * Validates {@code weights.safetensors} against {@code spec}, opens the GPU, uploads the weights and sizes the
     * activation buffers. Fails with the reason (missing library or device, bad weights file, out of memory).
     */
    public static CudaDitBackend create(ModelSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, options.maxBatch(), () -> CudaDevice.open(options, System.getenv()));
    }

    /**
     * Validates the weights file, then opens the device with {@code opener}, uploads the weights and sizes the
     * buffers for {@code maxBatch} samples; the device is closed again if that fails. The tests pass an emulated
     * device.
     */
    static CudaDitBackend load(ModelSpec spec, int maxBatch, Device.Opener opener) throws BackendException {
        WeightLayout layout = new WeightLayout(spec);
        Path file = spec.file(WEIGHTS_FILE);
        try (Safetensors st = Safetensors.open(file)) {
            DitCheckpoint.validate(st, spec);
            Device device = opener.open();
            try {
                DevicePtr weights = upload(device, st, layout, spec);
                CudaDitBackend b = new CudaDitBackend(spec, maxBatch, device, layout, weights);
                b.ensureCapacity(maxBatch);
                LOG.log(System.Logger.Level.INFO, "cuda backend loaded " + spec.name() + " on " + device.description());
                return b;
            } catch (BackendException | RuntimeException e) {
                device.close();
                throw e;
            }
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static DevicePtr upload(Device device, Safetensors st, WeightLayout layout, ModelSpec spec)
            throws BackendException {
        DevicePtr base = device.alloc(DevicePtr.floatBytes(layout.totalFloats()), "the weights of " + spec.name());
        for (WeightLayout.Slot slot : layout.slots().values()) {
            DevicePtr dst = base.plusFloats(slot.offset());
            if (slot.name().equals(WeightLayout.FREQS)) {
                float[] freqs = DitConstants.timestepFrequencies();
                try (Arena a = Arena.ofConfined()) {
                    device.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, freqs), DevicePtr.floatBytes(freqs.length),
                            slot.name());
                }
            } else if (st.entry(slot.name()).dtype().equals("F32")) {
                // the mapped file is little-endian float32 already, as the GPU wants it
                device.copyToDevice(dst, st.segment(slot.name()), DevicePtr.floatBytes(slot.length()), slot.name());
            } else {
                float[] values = st.floats(slot.name());
                try (Arena a = Arena.ofConfined()) {
                    device.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, values), DevicePtr.floatBytes(values.length),
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
        ActivationLayout next = ActivationLayout.of(spec, Math.max(n, maxBatch));
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
        stageX = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.X_IN)), 64);
        stageT = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.T)), 64);
        stageY = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.Y)), 64);
        stageOut = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.OUT)), 64);
        stageResidual = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.RESIDUAL)), 64);
        order = new int[next.capacity()];
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
    public int preferredMaxBatch() {
        return 64;
    }

    @Override
    public boolean supportsStepCache() {
        return StepCache.cacheable(spec);
    }

    @Override
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        if (closed) {
            throw new IllegalStateException("backend for " + spec.name() + " is closed");
        }
        int n = batch.check(spec, out);
        Tensor x = batch.x();
        float[] t = batch.time();
        int[] y = batch.labels();
        StepCache cache = batch.cache();
        if (n == 0) {
            return;
        }
        device.makeCurrent();
        ensureCapacity(n);
        // order[k] = the caller's sample at position k of the pass: storing, running, then reusing samples
        int storing = 0;
        int running = n;
        if (cache == null || cache.plain()) {
            for (int k = 0; k < n; k++) {
                order[k] = k;
            }
        } else {
            int k = 0;
            for (StepCache.Use use : PASS_ORDER) {
                for (int b = 0; b < n; b++) {
                    if (cache.use(b) == use) {
                        order[k++] = b;
                    }
                }
                if (use == StepCache.Use.STORE) {
                    storing = k;
                } else if (use == StepCache.Use.RUN) {
                    running = k;
                }
            }
        }
        int inLen = x.size() / n;
        int outLen = out.size() / n;
        int resLen = StepCache.residualLength(spec);
        for (int k = 0; k < n; k++) {
            int b = order[k];
            MemorySegment.copy(x.data(), b * inLen, stageX, JAVA_FLOAT, DevicePtr.floatBytes((long) k * inLen), inLen);
            stageT.setAtIndex(JAVA_FLOAT, k, t[b]);
            stageY.setAtIndex(JAVA_INT, k, y[b]);
        }
        for (int k = running; k < n; k++) {
            MemorySegment.copy(cache.residual(order[k]), 0, stageResidual, JAVA_FLOAT,
                    DevicePtr.floatBytes((long) k * resLen), resLen);
        }
        device.copyToDeviceAsync(at(Buffer.X_IN), stageX, DevicePtr.floatBytes(x.size()), "x");
        device.copyToDeviceAsync(at(Buffer.T), stageT, DevicePtr.floatBytes(n), "t");
        device.copyToDeviceAsync(at(Buffer.Y), stageY, DevicePtr.floatBytes(n), "y");
        if (running < n) {
            long off = (long) running * resLen;
            device.copyToDeviceAsync(at(Buffer.RESIDUAL).plusFloats(off),
                    stageResidual.asSlice(DevicePtr.floatBytes(off)),
                    DevicePtr.floatBytes((long) (n - running) * resLen), "the residuals the step cache reuses");
        }
        try {
            program.run(ops, act, actBase, n, running, storing, cancel);
        } catch (BackendException.Cancelled c) {
            device.synchronize("a cancelled forward pass");
            throw c;
        }
        device.copyToHostAsync(stageOut, at(Buffer.OUT), DevicePtr.floatBytes(out.size()), "out");
        if (storing > 0) {
            device.copyToHostAsync(stageResidual, at(Buffer.RESIDUAL), DevicePtr.floatBytes((long) storing * resLen),
                    "the residuals the step cache stores");
        }
        device.synchronize("the forward pass of " + spec.name() + " (batch " + n + ")");
        for (int k = 0; k < n; k++) {
            MemorySegment.copy(stageOut, JAVA_FLOAT, DevicePtr.floatBytes((long) k * outLen), out.data(),
                    order[k] * outLen, outLen);
        }
        for (int k = 0; k < storing; k++) {
            MemorySegment.copy(stageResidual, JAVA_FLOAT, DevicePtr.floatBytes((long) k * resLen),
                    cache.residual(order[k]), 0, resLen);
        }
    }

    private DevicePtr at(Buffer b) {
        return actBase.plusFloats(act.offset(b));
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
