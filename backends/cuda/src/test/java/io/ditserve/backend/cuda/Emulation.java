package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.TextEncoderSpec;

/**
 * The cuda backend's DiT and MMDiT backends, text encoders and decoders, host code and all, on an
 * {@link EmulatedDevice} instead of a GPU.
 */
final class Emulation {
    private Emulation() {}

    /** A {@link CudaDitBackend} whose buffers are first sized for {@code maxBatch} samples. */
    static CudaDitBackend backend(ModelSpec spec, int maxBatch) throws BackendException {
        return backend(spec, maxBatch, device(spec, maxBatch));
    }

    /** The same on a given device (a test that reads its trace). */
    static CudaDitBackend backend(ModelSpec spec, int maxBatch, EmulatedDevice device) throws BackendException {
        return CudaDitBackend.load(spec, maxBatch, () -> device);
    }

    /** A device with room for the weights and the buffers of {@code maxBatch} samples. */
    static EmulatedDevice device(ModelSpec spec, int maxBatch) throws BackendException {
        return new EmulatedDevice(new WeightLayout(spec).totalFloats()
                + ActivationLayout.of(spec, maxBatch).totalElements() + 256);
    }

    /** A {@link CudaDecoder}; its device memory grows at the first decode. */
    static CudaDecoder decoder(DecoderSpec spec, DecoderBuffers.Budgets budgets) throws BackendException {
        long floats = new DecoderWeights(spec).totalFloats() + 256;
        return CudaDecoder.load(spec, budgets, () -> new EmulatedDevice(floats));
    }

    /** A {@link CudaMmditBackend}; its device memory grows at the first pass. */
    static CudaMmditBackend mmdit(ModelSpec spec, long scoresBudget) throws BackendException {
        long floats = new MmditWeights(spec).totalFloats() + 256;
        return CudaMmditBackend.load(spec, scoresBudget, () -> new EmulatedDevice(floats));
    }

    /** The same on a given device (a test that reads its trace). */
    static CudaMmditBackend mmdit(ModelSpec spec, long scoresBudget, EmulatedDevice device) throws BackendException {
        return CudaMmditBackend.load(spec, scoresBudget, () -> device);
    }

    /** A {@link CudaTextEncoder}; its device memory grows at the first encode. */
    static CudaTextEncoder textEncoder(TextEncoderSpec spec, long scoresBudget) throws BackendException {
        long floats = new TextWeights(spec).totalFloats() + 256;
        return CudaTextEncoder.load(spec, scoresBudget, () -> new EmulatedDevice(floats));
    }
}
