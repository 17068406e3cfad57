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
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.MmditBuffers.Buffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.HashMap;
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
    private final Device device;
    private final DitOps ops;
    private final MmditWeights weights;
    private final CudaMmditForward program;
    private final long scoresBudget;
    private MmditBuffers buffers;
    private DevicePtr buffersBase;
    private Arena stagingArena;
    private MemorySegment stageX;
    private MemorySegment stageT;
    private MemorySegment stageContext;
    private MemorySegment stagePooled;
    private MemorySegment stageOut;
    private boolean closed;

    private CudaMmditBackend(ModelSpec spec, Device device, MmditWeights weights, DevicePtr weightsBase,
            long scoresBudget) {
        this.spec = spec;
        this.device = device;
        this.ops = device.ops();
        this.weights = weights;
        this.program = new CudaMmditForward(spec, weights, weightsBase);
        this.scoresBudget = scoresBudget;
    }

    /**
     * Validates the folder's weights against {@code spec}, opens the GPU and uploads them. Fails with the reason
     * (missing library or device, bad weights, out of memory).
     */
    public static CudaMmditBackend create(ModelSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, ActivationLayout.SCORES_BUDGET, () -> CudaDevice.open(options, System.getenv()));
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
        Device device = opener.open();
        try {
            DevicePtr base = upload(device, tensors, layout, spec);
            CudaMmditBackend b = new CudaMmditBackend(spec, device, layout, base, scoresBudget);
            LOG.log(System.Logger.Level.INFO, "cuda backend loaded MMDiT " + spec.name() + " on "
                    + device.description());
            return b;
        } catch (BackendException | RuntimeException e) {
            device.close();
            throw e;
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static DevicePtr upload(Device device, Map<String, MmditCheckpoint.Located> tensors, MmditWeights layout,
            ModelSpec spec) throws BackendException {
        DevicePtr base = device.alloc(DevicePtr.floatBytes(layout.totalFloats()), "the weights of " + spec.name());
        Map<Path, Safetensors> files = new HashMap<>();
        try {
            for (SlotLayout.Slot slot : layout.layout().slots()) {
                DevicePtr dst = base.plusFloats(slot.offset());
                if (slot.name().equals(MmditWeights.FREQS)) {
                    copy(device, dst, DitConstants.timestepFrequencies(), slot.name());
                } else if (slot.name().equals(MmditWeights.POS)) {
                    float[] table = read(files, tensors.get(MmditWeights.POS_TABLE));
                    copy(device, dst, centreCrop(table, spec.text().posEmbedMaxSize(), spec.gridSize(),
                            spec.hiddenSize()), slot.name());
                } else {
                    MmditCheckpoint.Located t = tensors.get(slot.name());
                    if (t.entry().dtype().equals("F32")) {
                        // the mapped file is little-endian float32 already, as the GPU wants it
                        device.copyToDevice(dst, file(files, t).segment(slot.name()),
                                DevicePtr.floatBytes(slot.length()), slot.name());
                    } else {
                        copy(device, dst, read(files, t), slot.name());
                    }
                }
            }
        } finally {
            files.values().forEach(Safetensors::close);
        }
        return base;
    }

    private static Safetensors file(Map<Path, Safetensors> files, MmditCheckpoint.Located t)
            throws BackendException {
        Safetensors st = files.get(t.file());
        if (st == null) {
            st = Safetensors.open(t.file());
            files.put(t.file(), st);
        }
        return st;
    }

    /** A tensor as float32 (F16, BF16 and F64 decoded). */
    private static float[] read(Map<Path, Safetensors> files, MmditCheckpoint.Located t) throws BackendException {
        return file(files, t).floats(t.entry().name());
    }

    private static void copy(Device device, DevicePtr dst, float[] values, String what) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            device.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, values), DevicePtr.floatBytes(values.length), what);
        }
    }

    /**
     * The stored (max·max, D) table's centred g×g window, rows in raster order: rows and columns (max − g)/2 … of
     * the max×max grid (diffusers' PatchEmbed.cropped_pos_embed).
     */
    static float[] centreCrop(float[] table, int max, int g, int d) {
        int top = (max - g) / 2;
        int left = (max - g) / 2;
        float[] crop = new float[g * g * d];
        for (int i = 0; i < g; i++) {
            for (int j = 0; j < g; j++) {
                System.arraycopy(table, ((top + i) * max + left + j) * d, crop, (i * g + j) * d, d);
            }
        }
        return crop;
    }

    /** Sizes the activation and staging buffers for at least n samples of ctx context tokens. */
    private void ensureCapacity(int n, int ctx) throws BackendException {
        if (buffers != null && n <= buffers.capacity() && ctx <= buffers.contextCapacity()) {
            return;
        }
        int cap = buffers == null ? n : Math.max(n, buffers.capacity());
        int ctxCap = Math.max(Math.max(ctx, 1), buffers == null ? 0 : buffers.contextCapacity());
        MmditBuffers next = new MmditBuffers(spec, weights.modulationWidth(), cap, ctxCap, scoresBudget);
        if (buffers != null) {
            device.synchronize("the previous forward pass, before growing the buffers");
            device.free(buffersBase);
            buffers = null;
            stagingArena.close();
            stagingArena = null;
        }
        buffersBase = device.alloc(next.totalBytes(), "the activations of " + spec.name() + " for batches up to "
                + cap + " with up to " + ctxCap + " context tokens");
        stagingArena = Arena.ofShared();
        stageX = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.X_IN)), 64);
        stageT = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.T)), 64);
        stageContext = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.CONTEXT_IN)), 64);
        stagePooled = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.POOLED_IN)), 64);
        stageOut = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.OUT)), 64);
        buffers = next;
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
    public synchronized void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
        if (closed) {
            throw new IllegalStateException("backend for " + spec.name() + " is closed");
        }
        int n = batch.check(spec, out);
        if (n == 0) {
            return;
        }
        refuseStepCache(batch);
        Conditioning.TextEmbeddings text = (Conditioning.TextEmbeddings) batch.conditioning();
        int ctx = text.tokens();
        device.makeCurrent();
        ensureCapacity(n, ctx);
        Tensor x = batch.x();
        MemorySegment.copy(x.data(), 0, stageX, JAVA_FLOAT, 0, x.size());
        MemorySegment.copy(batch.time(), 0, stageT, JAVA_FLOAT, 0, n);
        MemorySegment.copy(text.context(), 0, stageContext, JAVA_FLOAT, 0, text.context().length);
        MemorySegment.copy(text.pooled(), 0, stagePooled, JAVA_FLOAT, 0, text.pooled().length);
        device.copyToDeviceAsync(at(Buffer.X_IN), stageX, DevicePtr.floatBytes(x.size()), "x");
        device.copyToDeviceAsync(at(Buffer.T), stageT, DevicePtr.floatBytes(n), "t");
        if (ctx > 0) {
            device.copyToDeviceAsync(at(Buffer.CONTEXT_IN), stageContext, DevicePtr.floatBytes(text.context().length),
                    "the context");
        }
        device.copyToDeviceAsync(at(Buffer.POOLED_IN), stagePooled, DevicePtr.floatBytes(text.pooled().length),
                "the pooled text embeddings");
        try {
            program.run(ops, buffers, buffersBase, n, ctx, cancel);
        } catch (BackendException.Cancelled c) {
            device.synchronize("a cancelled forward pass");
            throw c;
        }
        device.copyToHostAsync(stageOut, at(Buffer.OUT), DevicePtr.floatBytes(out.size()), "out");
        device.synchronize("the forward pass of " + spec.name() + " (batch " + n + ", " + ctx + " context tokens)");
        MemorySegment.copy(stageOut, JAVA_FLOAT, 0, out.data(), 0, out.size());
    }

    private DevicePtr at(Buffer b) {
        return buffersBase.plusFloats(buffers.offset(b));
    }

    /** Frees the device memory and releases the device. Idempotent. */
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
