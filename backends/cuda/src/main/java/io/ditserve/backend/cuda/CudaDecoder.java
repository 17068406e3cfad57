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
    private final DitOps ops;
    private final DecoderProgram program;
    private final DecoderBuffers.Budgets budgets;
    private final PassMemory<DecoderBuffers> memory;
    private final PassMemory.Stage<DecoderBuffers> stagedLatent;
    private final PassMemory.Stage<DecoderBuffers> stagedOut;

    private CudaDecoder(DecoderSpec spec, Device device, DecoderWeights weights, DevicePtr weightsBase,
            DecoderBuffers.Budgets budgets) {
        this.spec = spec;
        this.ops = device.ops();
        this.program = new DecoderProgram(spec, weights, weightsBase);
        this.budgets = budgets;
        this.memory = new PassMemory<>(device, "decode");
        this.stagedLatent = memory.stage(b -> b.samples() * DecoderBuffers.needs(spec, b.pixels()).latent());
        this.stagedOut = memory.stage(b -> b.samples() * DecoderBuffers.needs(spec, b.pixels()).output());
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
        return load(spec, budgets, CudaDevice.opener(options));
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
            CudaDecoder d = opener.load(device -> new CudaDecoder(spec, device, weights,
                    upload(device, st, weights, names, spec), budgets));
            LOG.log(System.Logger.Level.INFO, "cuda backend loaded decoder " + spec.summary() + " from "
                    + spec.directory() + " on " + d.deviceDescription());
            return d;
        }
    }

    /**
     * Copies every weight to its slot of one device allocation, each read under its name in the file
     * ({@code names}: canonical name → stored name); returns the allocation's address.
     */
    private static DevicePtr upload(Device device, Safetensors st, DecoderWeights weights, Map<String, String> names,
            DecoderSpec spec) throws BackendException {
        try (WeightUpload up = new WeightUpload(device, weights.totalFloats(),
                "the weights of decoder " + spec.summary())) {
            for (DecoderWeights.Slot slot : weights.slots().values()) {
                up.tensor(slot.offset(), slot.length(), st, names.get(slot.name()));
            }
            return up.base();
        }
    }

    /** The device, libraries and precision, in one line. */
    public String deviceDescription() {
        return memory.device().description();
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
        DecoderBuffers layout = memory.layout();
        if (layout != null && samples <= layout.samples() && pixels <= layout.pixels()) {
            return;
        }
        long p = layout == null ? pixels : Math.max(pixels, layout.pixels());
        int s = layout == null ? samples : Math.max(samples, layout.samples());
        s = Math.min(s, DecoderBuffers.samplesPerRun(spec, p, s, budgets));
        DecoderBuffers next = DecoderBuffers.of(spec, s, p, budgets);
        memory.regrow(next, "the activations of decoder " + spec.summary() + " for " + next.samples()
                + " latents of " + next.pixels() + " positions");
    }

    @Override
    public synchronized void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
        int n = DecoderArguments.checkOpen(memory.closed(), spec, latent, out);
        Objects.requireNonNull(cancel, "cancel");
        if (n == 0) {
            return;
        }
        int h = latent.dim(2);
        int w = latent.dim(3);
        long pixels = (long) h * w;
        Device device = memory.device();
        device.makeCurrent();
        int perRun = DecoderBuffers.samplesPerRun(spec, pixels, n, budgets);
        ensureCapacity(perRun, pixels);
        perRun = Math.min(perRun, memory.layout().samples());
        DecoderBuffers.Addresses buf = memory.layout().at(memory.base());
        MemorySegment stageLatent = stagedLatent.segment();
        MemorySegment stageOut = stagedOut.segment();
        int inPerSample = latent.size() / n;
        int outPerSample = out.size() / n;
        for (int s0 = 0; s0 < n; s0 += perRun) {
            int cnt = Math.min(perRun, n - s0);
            long inCount = (long) cnt * inPerSample;
            long outCount = (long) cnt * outPerSample;
            MemorySegment.copy(latent.data(), s0 * inPerSample, stageLatent, JAVA_FLOAT, 0, (int) inCount);
            device.copyToDeviceAsync(buf.latent(), stageLatent, DevicePtr.floatBytes(inCount), "latent");
            DevicePtr image = memory.queue(() -> program.run(ops, buf, cnt, h, w, cancel));
            device.copyToHostAsync(stageOut, image, DevicePtr.floatBytes(outCount), "image");
            device.synchronize("decoder " + spec.summary() + " (" + cnt + " latents of " + h + "×" + w + ")");
            MemorySegment.copy(stageOut, JAVA_FLOAT, 0, out.data(), s0 * outPerSample, (int) outCount);
        }
    }

    /** Frees the device memory and releases the device. Idempotent. */
    @Override
    public synchronized void close() {
        memory.close();
    }
}
