package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.cuda.TextBuffers.Buffer;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.Objects;

/**
 * A text encoder of SD3's pipeline on an NVIDIA GPU ({@link TextEncoderForward} is the network, {@link CudaDevice}
 * the GPU): CLIPTextModelWithProjection (CLIP-L, CLIP-G) or the T5 v1.1 encoder, from a transformers folder
 * ({@code model.safetensors} or its shards), validated against the spec ({@link TextEncoderCheckpoint#open}: a
 * missing, unexpected or misshapen tensor fails naming it) and uploaded as float32 once at load. Returns what the
 * java backend's encoders return: CLIP's hidden_states[hiddenLayer] and projected pooled output, T5's last hidden
 * state after its final norm (docs/TEXT_MODELS.md, "Text encoders").
 *
 * <p>Options: those of the DiT backend ({@link CudaOptions}; {@code cuda.max_batch} is not used: the buffers are
 * allocated at the first encode for its batch and grow for a larger one). CLIP's pooled positions are chosen on the
 * host ({@link TextEncoderRules#clipPoolPosition}) and T5's position bias [heads, T, T] is computed at load
 * ({@link TextEncoderRules#t5PositionBias}). One encode at a time; {@link #close} waits for a running one.
 */
public final class CudaTextEncoder implements TextEncoder {
    private static final System.Logger LOG = System.getLogger(CudaTextEncoder.class.getName());

    private final TextEncoderSpec spec;
    private final DitOps ops;
    private final TextEncoderForward program;
    private final long scoresBudget;
    private final boolean clip;
    private final PassMemory<TextBuffers> memory;
    private final PassMemory.Stage<TextBuffers> stagedIds;
    private final PassMemory.Stage<TextBuffers> stagedRows;
    private final PassMemory.Stage<TextBuffers> stagedHidden;
    private final PassMemory.Stage<TextBuffers> stagedPooled;

    private CudaTextEncoder(TextEncoderSpec spec, Device device, TextWeights weights, DevicePtr weightsBase,
            long scoresBudget) throws BackendException {
        this.spec = spec;
        this.ops = device.ops();
        this.program = new TextEncoderForward(spec, weights, weightsBase);
        this.scoresBudget = scoresBudget;
        this.clip = spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION;
        this.memory = new PassMemory<>(device, "encode");
        this.stagedIds = memory.stage(b -> b.length(Buffer.IDS));
        this.stagedRows = memory.stage(b -> b.length(Buffer.POOL_ROWS));
        this.stagedHidden = memory.stage(b -> b.length(Buffer.HIDDEN));
        this.stagedPooled = memory.stage(b -> b.length(Buffer.TEXT_EMBEDS));
    }

    /** Validates the folder's weights against {@code spec}, opens the GPU and uploads them. */
    public static CudaTextEncoder create(TextEncoderSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, ActivationLayout.SCORES_BUDGET, CudaDevice.opener(options));
    }

    /**
     * Checks the spec and the weights, then opens the device with {@code opener} and uploads them; the device is
     * closed again if that fails. {@code scoresBudget}: the target size of the attention scores buffer in floats.
     * The tests pass an emulated device.
     */
    static CudaTextEncoder load(TextEncoderSpec spec, long scoresBudget, Device.Opener opener)
            throws BackendException {
        TextEncoderRules.checkHiddenLayer(spec);
        TextWeights layout = new TextWeights(spec);
        Map<String, TextEncoderCheckpoint.Located> tensors = TextEncoderCheckpoint.open(spec);
        CudaTextEncoder e = opener.load(device -> new CudaTextEncoder(spec, device, layout,
                upload(device, tensors, layout, spec), scoresBudget));
        LOG.log(System.Logger.Level.INFO, "cuda backend loaded text encoder " + spec.summary() + " from "
                + spec.directory() + " on " + e.deviceDescription());
        return e;
    }

    /**
     * Copies every weight to its slot of one device allocation (CLIP's position table: its first rows only), T5's
     * position bias computed from block 0's table; returns the allocation's address.
     */
    private static DevicePtr upload(Device device, Map<String, TextEncoderCheckpoint.Located> tensors,
            TextWeights layout, TextEncoderSpec spec) throws BackendException {
        try (WeightUpload up = new WeightUpload(device, layout.totalFloats(),
                "the weights of text encoder " + spec.summary())) {
            for (SlotLayout.Slot slot : layout.layout().slots()) {
                String name = slot.name();
                switch (name) {
                    case TextWeights.ZEROS -> up.values(slot.offset(), new float[Math.toIntExact(slot.length())],
                            name);
                    case TextWeights.POSITION_BIAS -> {
                        TextEncoderCheckpoint.Located t = tensors.get(TextWeights.T5_BIAS_TABLE);
                        float[] table = up.file(t.file()).floats(t.entry().name());
                        up.values(slot.offset(), TextEncoderRules.t5PositionBias(table, spec.heads(),
                                spec.maxTokens(), spec.relativeBuckets(), spec.relativeMaxDistance()), name);
                    }
                    default -> {
                        String stored = name.equals(TextWeights.T5_EMBEDDING)
                                ? TextEncoderCheckpoint.t5Embedding(tensors) : name;
                        TextEncoderCheckpoint.Located t = tensors.get(stored);
                        up.tensor(slot.offset(), slot.length(), t.file(), t.entry().name());
                    }
                }
            }
            return up.base();
        }
    }

    /** Sizes the activation and staging buffers for at least n sequences. */
    private void ensureCapacity(int n) throws BackendException {
        TextBuffers buffers = memory.layout();
        if (buffers != null && n <= buffers.capacity()) {
            return;
        }
        memory.regrow(new TextBuffers(spec, n, scoresBudget), "the activations of text encoder " + spec.summary()
                + " for " + n + " sequences");
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return memory.device().description();
    }

    @Override
    public TextEncoderSpec spec() {
        return spec;
    }

    @Override
    public String backendName() {
        return CudaBackendProvider.NAME;
    }

    @Override
    public synchronized Output encode(int[][] ids, Cancellation cancel) throws BackendException {
        int n = TextEncoderRules.checkOpen(memory.closed(), spec, ids);
        int tokens = spec.maxTokens();
        int d = spec.hiddenSize();
        int proj = clip ? spec.projectionDim() : 0;
        if (n == 0) {
            return new Output(new float[0], tokens, d, clip ? new float[0] : null);
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        Device device = memory.device();
        device.makeCurrent();
        ensureCapacity(n);
        MemorySegment stageIds = stagedIds.segment();
        MemorySegment stageRows = stagedRows.segment();
        MemorySegment stageHidden = stagedHidden.segment();
        MemorySegment stagePooled = stagedPooled.segment();
        for (int b = 0; b < n; b++) {
            MemorySegment.copy(ids[b], 0, stageIds, JAVA_INT, DevicePtr.floatBytes((long) b * tokens), tokens);
            if (clip) {
                stageRows.setAtIndex(JAVA_INT, b, b * tokens + TextEncoderRules.clipPoolPosition(spec, ids[b]));
            }
        }
        device.copyToDeviceAsync(at(Buffer.IDS), stageIds, DevicePtr.floatBytes((long) n * tokens), "the ids");
        if (clip) {
            device.copyToDeviceAsync(at(Buffer.POOL_ROWS), stageRows, DevicePtr.floatBytes(n), "the pooled rows");
        }
        memory.queue(() -> program.run(ops, memory.layout(), memory.base(), n, cancel));
        long hiddenLen = (long) n * tokens * d;
        device.copyToHostAsync(stageHidden, at(Buffer.HIDDEN), DevicePtr.floatBytes(hiddenLen), "the hidden states");
        if (clip) {
            device.copyToHostAsync(stagePooled, at(Buffer.TEXT_EMBEDS), DevicePtr.floatBytes((long) n * proj),
                    "the pooled output");
        }
        device.synchronize("the encode of " + n + " sequences by " + spec.summary());
        float[] hidden = new float[Math.toIntExact(hiddenLen)];
        MemorySegment.copy(stageHidden, JAVA_FLOAT, 0, hidden, 0, hidden.length);
        float[] pooled = null;
        if (clip) {
            pooled = new float[n * proj];
            MemorySegment.copy(stagePooled, JAVA_FLOAT, 0, pooled, 0, pooled.length);
        }
        return new Output(hidden, tokens, d, pooled);
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
