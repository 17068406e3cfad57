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
    private final DitOps ops;
    private final DitForward program;
    private final PassMemory<ActivationLayout> memory;
    private final PassMemory.Stage<ActivationLayout> stagedX;
    private final PassMemory.Stage<ActivationLayout> stagedT;
    private final PassMemory.Stage<ActivationLayout> stagedY;
    private final PassMemory.Stage<ActivationLayout> stagedOut;
    private final PassMemory.Stage<ActivationLayout> stagedResidual;
    private int[] order = new int[0];

    private CudaDitBackend(ModelSpec spec, int maxBatch, Device device, WeightLayout layout, DevicePtr weights) {
        this.spec = spec;
        this.maxBatch = maxBatch;
        this.ops = device.ops();
        this.program = new DitForward(spec, layout, weights);
        this.memory = new PassMemory<>(device, "forward pass");
        this.stagedX = memory.stage(a -> a.length(Buffer.X_IN));
        this.stagedT = memory.stage(a -> a.length(Buffer.T));
        this.stagedY = memory.stage(a -> a.length(Buffer.Y));
        this.stagedOut = memory.stage(a -> a.length(Buffer.OUT));
        this.stagedResidual = memory.stage(a -> a.length(Buffer.RESIDUAL));
    }

    /**
     * Validates {@code weights.safetensors} against {@code spec}, opens the GPU, uploads the weights and sizes the
     * activation buffers. Fails with the reason (missing library or device, bad weights file, out of memory).
     */
    public static CudaDitBackend create(ModelSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, options.maxBatch(), CudaDevice.opener(options));
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
            CudaDitBackend b = opener.load(device -> {
                CudaDitBackend loaded = new CudaDitBackend(spec, maxBatch, device, layout,
                        upload(device, st, layout, spec));
                loaded.ensureCapacity(maxBatch);
                return loaded;
            });
            LOG.log(System.Logger.Level.INFO, "cuda backend loaded " + spec.name() + " on " + b.deviceDescription());
            return b;
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static DevicePtr upload(Device device, Safetensors st, WeightLayout layout, ModelSpec spec)
            throws BackendException {
        try (WeightUpload up = new WeightUpload(device, layout.totalFloats(), "the weights of " + spec.name())) {
            for (WeightLayout.Slot slot : layout.slots().values()) {
                if (slot.name().equals(WeightLayout.FREQS)) {
                    up.values(slot.offset(), DitConstants.timestepFrequencies(), slot.name());
                } else {
                    up.tensor(slot.offset(), slot.length(), st, slot.name());
                }
            }
            return up.base();
        }
    }

    /** Sizes the activation and staging buffers for at least {@code n} samples. */
    private void ensureCapacity(int n) throws BackendException {
        ActivationLayout act = memory.layout();
        if (act != null && n <= act.capacity()) {
            return;
        }
        ActivationLayout next = ActivationLayout.of(spec, Math.max(n, maxBatch));
        memory.regrow(next, "the activations of " + spec.name() + " for batches up to " + next.capacity());
        order = new int[next.capacity()];
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return memory.device().description();
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
        int n = batch.checkOpen(memory.closed(), spec, out);
        Tensor x = batch.x();
        float[] t = batch.time();
        int[] y = batch.labels();
        StepCache cache = batch.cache();
        if (n == 0) {
            return;
        }
        Device device = memory.device();
        device.makeCurrent();
        ensureCapacity(n);
        MemorySegment stageX = stagedX.segment();
        MemorySegment stageT = stagedT.segment();
        MemorySegment stageY = stagedY.segment();
        MemorySegment stageOut = stagedOut.segment();
        MemorySegment stageResidual = stagedResidual.segment();
        PassOrder p = reorder(cache, n);
        int storing = p.storing();
        int running = p.running();
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
        memory.queue(() -> program.run(ops, memory.layout(), memory.base(), n, running, storing, cancel));
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

    /** The first {@code storing} samples of a pass store their residual, the first {@code running} run the span. */
    private record PassOrder(int storing, int running) {}

    /** Fills order[k] = the caller's sample at position k of the pass: storing, running, then reusing samples. */
    private PassOrder reorder(StepCache cache, int n) {
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
        return new PassOrder(storing, running);
    }

    private DevicePtr at(Buffer b) {
        return memory.base().plusFloats(memory.layout().offset(b));
    }

    /** Frees the device memory, the cuBLAS handle, the module, the stream and the context reference. Idempotent. */
    @Override
    public synchronized void close() {
        memory.close();
    }
}
