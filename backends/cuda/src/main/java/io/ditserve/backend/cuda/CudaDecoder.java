package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.JAVA_FLOAT;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderArguments;
import io.ditserve.backend.DecoderCheckpoint;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Map;
import java.util.Objects;

/**
 * A latent decoder on an NVIDIA GPU ({@link DecoderProgram} is the network, {@link CudaDevice} the GPU): the full
 * VAE decoder or the tiny preview decoder, docs/DECODERS.md. Options: those of the DiT backend ({@link CudaOptions};
 * {@code cuda.precision} sets the matrix products' precision; {@code cuda.max_batch} is not used: a decoder sizes
 * its buffers at the first decode).
 *
 * <p>The weights are uploaded once at load. The activation buffers are allocated at the first decode for its batch
 * and latent size and reused; a larger latent or batch grows them (one sample's needs at 512 px, 64×64 latents: three
 * activations of 256 MiB, the im2col tile and the attention scores, 1 GiB in all). A batch larger than what fits
 * {@link DecoderBuffers.Budgets#activation} runs in several runs through the same buffers. Calls are serialised;
 * {@link #close} waits for a running one.
 */
public final class CudaDecoder implements Decoder {
    private static final System.Logger LOG = System.getLogger(CudaDecoder.class.getName());

    private final DecoderSpec spec;
    private final Device device;
    private final DitOps ops;
    private final DecoderProgram program;
    private final DecoderBuffers.Budgets budgets;
    private DecoderBuffers layout;
    private DevicePtr buffersBase;
    private Arena stagingArena;
    private MemorySegment stageLatent;
    private MemorySegment stageOut;
    private boolean closed;

    private CudaDecoder(DecoderSpec spec, Device device, DecoderWeights weights, DevicePtr weightsBase,
            DecoderBuffers.Budgets budgets) {
        this.spec = spec;
        this.device = device;
        this.ops = device.ops();
        this.program = new DecoderProgram(spec, weights, weightsBase);
        this.budgets = budgets;
    }

    /**
     * Validates the weights file against the spec ({@link DecoderCheckpoint#resolve}: every tensor with its shape,
     * legacy attention names accepted), opens the GPU and uploads the weights. Fails with the reason.
     */
    public static CudaDecoder create(DecoderSpec spec, BackendOptions backendOptions) throws BackendException {
        return create(spec, backendOptions, DecoderBuffers.DEFAULT_BUDGETS);
    }

    /** As {@link #create(DecoderSpec, BackendOptions)} with other buffer budgets (the tests force tiling). */
    static CudaDecoder create(DecoderSpec spec, BackendOptions backendOptions, DecoderBuffers.Budgets budgets)
            throws BackendException {
        Objects.requireNonNull(spec, "spec");
        CudaOptions options = CudaOptions.parse(backendOptions);
        return load(spec, budgets, () -> CudaDevice.open(options, System.getenv()));
    }

    /**
     * Checks the weights file, then opens the device with {@code opener} and uploads the weights; the device is
     * closed again if that fails. The tests pass an emulated device.
     */
    static CudaDecoder load(DecoderSpec spec, DecoderBuffers.Budgets budgets, Device.Opener opener)
            throws BackendException {
        DecoderWeights weights = new DecoderWeights(spec);
        try (Safetensors st = Safetensors.open(spec.weightsFile())) {
            Map<String, String> names = DecoderCheckpoint.resolve(st, spec);
            Device device = opener.open();
            try {
                DevicePtr base = upload(device, st, weights, names, spec);
                CudaDecoder d = new CudaDecoder(spec, device, weights, base, budgets);
                LOG.log(System.Logger.Level.INFO, "cuda backend loaded decoder " + spec.summary() + " from "
                        + spec.directory() + " on " + device.description());
                return d;
            } catch (BackendException | RuntimeException e) {
                device.close();
                throw e;
            }
        }
    }

    /** Copies every weight to its slot of one device allocation; returns the allocation's address. */
    private static DevicePtr upload(Device device, Safetensors st, DecoderWeights weights, Map<String, String> names,
            DecoderSpec spec) throws BackendException {
        DevicePtr base = device.alloc(DevicePtr.floatBytes(weights.totalFloats()),
                "the weights of decoder " + spec.summary());
        for (DecoderWeights.Slot slot : weights.slots().values()) {
            String file = names.get(slot.name());
            DevicePtr dst = base.plusFloats(slot.offset());
            if (st.entry(file).dtype().equals("F32")) {
                device.copyToDevice(dst, st.segment(file), DevicePtr.floatBytes(slot.length()), file);
            } else {
                float[] values = st.floats(file);
                try (Arena a = Arena.ofConfined()) {
                    device.copyToDevice(dst, a.allocateFrom(JAVA_FLOAT, values), DevicePtr.floatBytes(values.length),
                            file);
                }
            }
        }
        return base;
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return device.description();
    }

    @Override
    public String backendName() {
        return CudaBackendProvider.NAME;
    }

    @Override
    public DecoderSpec spec() {
        return spec;
    }

    /** Sizes the buffers for runs of {@code samples} latents of {@code pixels} positions, keeping larger ones. */
    private void ensureCapacity(int samples, long pixels) throws BackendException {
        if (layout != null && samples <= layout.samples() && pixels <= layout.pixels()) {
            return;
        }
        long p = layout == null ? pixels : Math.max(pixels, layout.pixels());
        int s = layout == null ? samples : Math.max(samples, layout.samples());
        s = Math.min(s, DecoderBuffers.samplesPerRun(spec, p, s, budgets));
        DecoderBuffers next = DecoderBuffers.of(spec, s, p, budgets);
        if (layout != null) {
            device.synchronize("the previous decode, before growing the buffers");
            device.free(buffersBase);
            layout = null;
            stagingArena.close();
            stagingArena = null;
        }
        buffersBase = device.alloc(next.totalBytes(), "the activations of decoder " + spec.summary() + " for "
                + next.samples() + " latents of " + next.pixels() + " positions");
        DecoderBuffers.Needs needs = DecoderBuffers.needs(spec, next.pixels());
        stagingArena = Arena.ofShared();
        stageLatent = stagingArena.allocate(DevicePtr.floatBytes(next.samples() * needs.latent()), 64);
        stageOut = stagingArena.allocate(DevicePtr.floatBytes(next.samples() * needs.output()), 64);
        layout = next;
    }

    @Override
    public synchronized void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
        if (closed) {
            throw new IllegalStateException("decoder " + spec.summary() + " is closed");
        }
        int n = DecoderArguments.check(spec, latent, out);
        Objects.requireNonNull(cancel, "cancel");
        if (n == 0) {
            return;
        }
        int h = latent.dim(2);
        int w = latent.dim(3);
        long pixels = (long) h * w;
        device.makeCurrent();
        int perRun = DecoderBuffers.samplesPerRun(spec, pixels, n, budgets);
        ensureCapacity(perRun, pixels);
        perRun = Math.min(perRun, layout.samples());
        DecoderBuffers.Addresses buf = layout.at(buffersBase);
        int inPerSample = latent.size() / n;
        int outPerSample = out.size() / n;
        for (int s0 = 0; s0 < n; s0 += perRun) {
            int cnt = Math.min(perRun, n - s0);
            long inCount = (long) cnt * inPerSample;
            long outCount = (long) cnt * outPerSample;
            MemorySegment.copy(latent.data(), s0 * inPerSample, stageLatent, JAVA_FLOAT, 0, (int) inCount);
            device.copyToDeviceAsync(buf.latent(), stageLatent, DevicePtr.floatBytes(inCount), "latent");
            DevicePtr image;
            try {
                image = program.run(ops, buf, cnt, h, w, cancel);
            } catch (BackendException.Cancelled c) {
                device.synchronize("a cancelled decode");
                throw c;
            }
            device.copyToHostAsync(stageOut, image, DevicePtr.floatBytes(outCount), "image");
            device.synchronize("decoder " + spec.summary() + " (" + cnt + " latents of " + h + "×" + w + ")");
            MemorySegment.copy(stageOut, JAVA_FLOAT, 0, out.data(), s0 * outPerSample, (int) outCount);
        }
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
