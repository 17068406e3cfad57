package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;
import static java.lang.foreign.ValueLayout.JAVA_INT;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.cuda.TextBuffers.Buffer;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HashMap;
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
    private final Device device;
    private final DitOps ops;
    private final TextEncoderForward program;
    private final long scoresBudget;
    private final boolean clip;
    private TextBuffers buffers;
    private DevicePtr buffersBase;
    private Arena stagingArena;
    private MemorySegment stageIds;
    private MemorySegment stageRows;
    private MemorySegment stageHidden;
    private MemorySegment stagePooled;
    private boolean closed;

    private CudaTextEncoder(TextEncoderSpec spec, Device device, TextWeights weights, DevicePtr weightsBase,
            long scoresBudget) throws BackendException {
        this.spec = spec;
        this.device = device;
        this.ops = device.ops();
        this.program = new TextEncoderForward(spec, weights, weightsBase);
        this.scoresBudget = scoresBudget;
        this.clip = spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION;
    }

    /** Validates the folder's weights against {@code spec}, opens the GPU and uploads them. */
    public static CudaTextEncoder create(TextEncoderSpec spec, BackendOptions backendOptions) throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, ActivationLayout.SCORES_BUDGET, () -> CudaDevice.open(options, System.getenv()));
    }

    /**
     * Checks the spec and the weights, then opens the device with {@code opener} and uploads them; the device is
     * closed again if that fails. {@code scoresBudget}: the target size of the attention scores buffer in floats.
     * The tests pass an emulated device.
     */
    static CudaTextEncoder load(TextEncoderSpec spec, long scoresBudget, Device.Opener opener)
            throws BackendException {
        if (spec.kind() == TextEncoderSpec.Kind.CLIP_WITH_PROJECTION
                && (spec.hiddenLayer() < 0 || spec.hiddenLayer() > spec.layers())) {
            throw new BackendException(spec.directory() + ": hidden layer " + spec.hiddenLayer() + " of "
                    + spec.layers());
        }
        TextWeights layout = new TextWeights(spec);
        Map<String, TextEncoderCheckpoint.Located> tensors = TextEncoderCheckpoint.open(spec);
        Device device = opener.open();
        try {
            DevicePtr base = upload(device, tensors, layout, spec);
            CudaTextEncoder e = new CudaTextEncoder(spec, device, layout, base, scoresBudget);
            LOG.log(System.Logger.Level.INFO, "cuda backend loaded text encoder " + spec.summary() + " from "
                    + spec.directory() + " on " + device.description());
            return e;
        } catch (BackendException | RuntimeException e) {
            device.close();
            throw e;
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static DevicePtr upload(Device device, Map<String, TextEncoderCheckpoint.Located> tensors,
            TextWeights layout, TextEncoderSpec spec) throws BackendException {
        DevicePtr base = device.alloc(DevicePtr.floatBytes(layout.totalFloats()),
                "the weights of text encoder " + spec.summary());
        Map<Path, Safetensors> files = new HashMap<>();
        try {
            for (SlotLayout.Slot slot : layout.layout().slots()) {
                DevicePtr dst = base.plusFloats(slot.offset());
                String name = slot.name();
                switch (name) {
                    case TextWeights.ZEROS -> copy(device, dst, new float[Math.toIntExact(slot.length())], name);
                    case TextWeights.POSITION_BIAS -> copy(device, dst, TextEncoderRules.t5PositionBias(
                            read(files, tensors.get(TextWeights.T5_BIAS_TABLE)), spec.heads(), spec.maxTokens(),
                            spec.relativeBuckets(), spec.relativeMaxDistance()), name);
                    default -> {
                        String stored = name.equals(TextWeights.T5_EMBEDDING)
                                ? TextEncoderCheckpoint.t5Embedding(tensors) : name;
                        TextEncoderCheckpoint.Located t = tensors.get(stored);
                        if (t.entry().dtype().equals("F32")) {
                            // little-endian float32 already; CLIP's position table: its first rows only
                            device.copyToDevice(dst, file(files, t).segment(stored),
                                    DevicePtr.floatBytes(slot.length()), stored);
                        } else {
                            float[] values = read(files, t);
                            copy(device, dst, values.length == slot.length() ? values
                                    : Arrays.copyOf(values, Math.toIntExact(slot.length())), stored);
                        }
                    }
                }
            }
        } finally {
            files.values().forEach(Safetensors::close);
        }
        return base;
    }

    private static Safetensors file(Map<Path, Safetensors> files, TextEncoderCheckpoint.Located t)
            throws BackendException {
        Safetensors st = files.get(t.file());
        if (st == null) {
            st = Safetensors.open(t.file());
            files.put(t.file(), st);
        }
        return st;
    }

    private static float[] read(Map<Path, Safetensors> files, TextEncoderCheckpoint.Located t)
            throws BackendException {
        return file(files, t).floats(t.entry().name());
    }

    private static void copy(Device device, DevicePtr dst, float[] values, String what) throws BackendException {
        try (Arena a = Arena.ofConfined()) {
            device.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, values), DevicePtr.floatBytes(values.length), what);
        }
    }

    /** Sizes the activation and staging buffers for at least n sequences. */
    private void ensureCapacity(int n) throws BackendException {
        if (buffers != null && n <= buffers.capacity()) {
            return;
        }
        TextBuffers next = new TextBuffers(spec, n, scoresBudget);
        if (buffers != null) {
            device.synchronize("the previous encode, before growing the buffers");
            device.free(buffersBase);
            buffers = null;
            stagingArena.close();
            stagingArena = null;
        }
        buffersBase = device.alloc(next.totalBytes(), "the activations of text encoder " + spec.summary()
                + " for " + n + " sequences");
        stagingArena = Arena.ofShared();
        stageIds = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.IDS)), 64);
        stageRows = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.POOL_ROWS)), 64);
        stageHidden = stagingArena.allocate(DevicePtr.floatBytes(next.length(Buffer.HIDDEN)), 64);
        stagePooled = stagingArena.allocate(Math.max(1, DevicePtr.floatBytes(next.length(Buffer.TEXT_EMBEDS))), 64);
        buffers = next;
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return device.description();
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
        if (closed) {
            throw new IllegalStateException("text encoder " + spec.summary() + " is closed");
        }
        int n = ids.length;
        int tokens = spec.maxTokens();
        int d = spec.hiddenSize();
        for (int b = 0; b < n; b++) {
            if (ids[b].length != tokens) {
                throw new BackendException(spec.role() + ": sequence " + b + " has " + ids[b].length
                        + " ids, the encoder takes " + tokens);
            }
            for (int id : ids[b]) {
                if (id < 0 || id >= spec.vocab()) {
                    throw new BackendException(spec.role() + ": id " + id + " is outside the vocabulary (0.."
                            + (spec.vocab() - 1) + ")");
                }
            }
        }
        int proj = clip ? spec.projectionDim() : 0;
        if (n == 0) {
            return new Output(new float[0], tokens, d, clip ? new float[0] : null);
        }
        if (cancel.isCancelled()) {
            throw new BackendException.Cancelled();
        }
        device.makeCurrent();
        ensureCapacity(n);
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
        try {
            program.run(ops, buffers, buffersBase, n, cancel);
        } catch (BackendException.Cancelled c) {
            device.synchronize("a cancelled encode");
            throw c;
        }
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
