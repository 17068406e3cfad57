package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.DitConstants;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.MmditBuffers.Buffer;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.Objects;

/**
 * SD3's MMDiT on an NVIDIA GPU ({@link CudaMmditForward} is the pass, {@link CudaDevice} the GPU), from a diffusers
 * {@code transformer/} folder: {@value MmditCheckpoint#SINGLE_FILE} or its shards, F32, F16 or BF16, validated
 * against the spec ({@link MmditCheckpoint#open}: a missing, unexpected or misshapen tensor fails naming it) and
 * uploaded as float32 once at load. Options: those of the DiT backend ({@link CudaOptions}); {@code cuda.max_batch}
 * is not used: the activation buffers are allocated at the first pass for its batch and context length and grow when
 * a later pass needs more.
 *
 * <p>Same function as the other backends' MMDiT: {@code out = MMDiT(x, σ·1000, context, pooled)}, each sample with
 * its own time and prompt embeddings; no step caching (its blocks carry two streams). Per call x, t, the context
 * and the pooled vectors go up and the output comes down, through host staging buffers of the buffers' capacity.
 * Calls are serialised; {@link #close} waits for a running one.
 */
public final class CudaMmditBackend implements Backend {
    private static final System.Logger LOG = System.getLogger(CudaMmditBackend.class.getName());

    private final ModelSpec spec;
    private final DitOps ops;
    private final MmditWeights weights;
    private final CudaMmditForward program;
    private final long scoresBudget;
    private final PassMemory<MmditBuffers> memory;
    private final PassMemory.Stage<MmditBuffers> stageX;
    private final PassMemory.Stage<MmditBuffers> stageT;
    private final PassMemory.Stage<MmditBuffers> stageContext;
    private final PassMemory.Stage<MmditBuffers> stagePooled;
    private final PassMemory.Stage<MmditBuffers> stageOut;

    private CudaMmditBackend(ModelSpec spec, Device device, MmditWeights weights, DevicePtr weightsBase,
            long scoresBudget) {
        this.spec = spec;
        this.ops = device.ops();
        this.weights = weights;
        this.program = new CudaMmditForward(spec, weights, weightsBase);
        this.scoresBudget = scoresBudget;
        this.memory = new PassMemory<>(device, "forward pass");
        this.stageX = memory.stage(b -> b.length(Buffer.X_IN));
        this.stageT = memory.stage(b -> b.length(Buffer.T));
        this.stageContext = memory.stage(b -> b.length(Buffer.CONTEXT_IN));
        this.stagePooled = memory.stage(b -> b.length(Buffer.POOLED_IN));
        this.stageOut = memory.stage(b -> b.length(Buffer.OUT));
    }

    /**
     * Validates the folder's weights against {@code spec}, opens the GPU and uploads them. Fails with the reason
     * (missing library or device, bad weights, out of memory).
     */
    public static CudaMmditBackend create(ModelSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, ActivationLayout.SCORES_BUDGET, CudaDevice.opener(options));
    }

    /**
     * Checks the weights, then opens the device with {@code opener} and uploads them; the device is closed again if
     * that fails. {@code scoresBudget}: the target size of the attention scores buffer in floats (the tests make it
     * small to force chunks). The tests pass an emulated device.
     */
    static CudaMmditBackend load(ModelSpec spec, long scoresBudget, Device.Opener opener) throws BackendException {
        if (spec.architecture() != ModelSpec.Architecture.MMDIT) {
            throw new IllegalArgumentException("model " + spec.name() + " is not an MMDiT");
        }
        MmditWeights layout = new MmditWeights(spec);
        Map<String, MmditCheckpoint.Located> tensors = MmditCheckpoint.open(spec);
        CudaMmditBackend b = opener.load(device -> new CudaMmditBackend(spec, device, layout,
                upload(device, tensors, layout, spec), scoresBudget));
        LOG.log(System.Logger.Level.INFO, "cuda backend loaded MMDiT " + spec.name() + " on " + b.deviceDescription());
        return b;
    }

    /**
     * Copies every weight to its slot of one device allocation, the position table as its centred crop
     * ({@link MmditCheckpoint#centreCrop}); returns the allocation's address.
     */
    private static DevicePtr upload(Device device, Map<String, MmditCheckpoint.Located> tensors, MmditWeights layout,
            ModelSpec spec) throws BackendException {
        try (WeightUpload up = new WeightUpload(device, layout.totalFloats(), "the weights of " + spec.name())) {
            for (SlotLayout.Slot slot : layout.layout().slots()) {
                switch (slot.name()) {
                    case MmditWeights.FREQS -> up.values(slot.offset(), DitConstants.timestepFrequencies(),
                            slot.name());
                    case MmditWeights.POS -> {
                        MmditCheckpoint.Located t = tensors.get(MmditWeights.POS_TABLE);
                        float[] table = up.file(t.file()).floats(t.entry().name());
                        up.values(slot.offset(), MmditCheckpoint.centreCrop(table, spec.text().posEmbedMaxSize(),
                                spec.gridSize(), spec.hiddenSize()), slot.name());
                    }
                    default -> {
                        MmditCheckpoint.Located t = tensors.get(slot.name());
                        up.tensor(slot.offset(), slot.length(), t.file(), t.entry().name());
                    }
                }
            }
            return up.base();
        }
    }

    /** Sizes the activation and staging buffers for at least n samples of ctx context tokens. */
    private void ensureCapacity(int n, int ctx) throws BackendException {
        MmditBuffers buffers = memory.layout();
        if (buffers != null && n <= buffers.capacity() && ctx <= buffers.contextCapacity()) {
            return;
        }
        int cap = buffers == null ? n : Math.max(n, buffers.capacity());
        int ctxCap = Math.max(Math.max(ctx, 1), buffers == null ? 0 : buffers.contextCapacity());
        memory.regrow(new MmditBuffers(spec, weights.modulationWidth(), cap, ctxCap, scoresBudget),
                "the activations of " + spec.name() + " for batches up to " + cap + " with up to " + ctxCap
                        + " context tokens");
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
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        int n = batch.checkOpen(memory.closed(), spec, out);
        if (n == 0) {
            return;
        }
        refuseStepCache(batch);
        Conditioning.TextEmbeddings text = (Conditioning.TextEmbeddings) batch.conditioning();
        int ctx = text.tokens();
        Device device = memory.device();
        device.makeCurrent();
        ensureCapacity(n, ctx);
        Tensor x = batch.x();
        MemorySegment.copy(x.data(), 0, stageX.segment(), JAVA_FLOAT, 0, x.size());
        MemorySegment.copy(batch.time(), 0, stageT.segment(), JAVA_FLOAT, 0, n);
        MemorySegment.copy(text.context(), 0, stageContext.segment(), JAVA_FLOAT, 0, text.context().length);
        MemorySegment.copy(text.pooled(), 0, stagePooled.segment(), JAVA_FLOAT, 0, text.pooled().length);
        device.copyToDeviceAsync(at(Buffer.X_IN), stageX.segment(), DevicePtr.floatBytes(x.size()), "x");
        device.copyToDeviceAsync(at(Buffer.T), stageT.segment(), DevicePtr.floatBytes(n), "t");
        if (ctx > 0) {
            device.copyToDeviceAsync(at(Buffer.CONTEXT_IN), stageContext.segment(),
                    DevicePtr.floatBytes(text.context().length), "the context");
        }
        device.copyToDeviceAsync(at(Buffer.POOLED_IN), stagePooled.segment(),
                DevicePtr.floatBytes(text.pooled().length), "the pooled text embeddings");
        memory.queue(() -> program.run(ops, memory.layout(), memory.base(), n, ctx, cancel));
        device.copyToHostAsync(stageOut.segment(), at(Buffer.OUT), DevicePtr.floatBytes(out.size()), "out");
        device.synchronize("the forward pass of " + spec.name() + " (batch " + n + ", " + ctx + " context tokens)");
        MemorySegment.copy(stageOut.segment(), JAVA_FLOAT, 0, out.data(), 0, out.size());
    }

    private DevicePtr at(Buffer b) {
        return memory.base().plusFloats(memory.layout().offset(b));
    }

    /** Frees the device memory and releases the device. Idempotent. */
    @Override
    public synchronized void close() {
        memory.close();
    }
}
