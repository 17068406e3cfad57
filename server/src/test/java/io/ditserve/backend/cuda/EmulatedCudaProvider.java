package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;
import java.util.List;

/**
 * The cuda backend on its CPU emulation as a backend the server can load, registered only on the test class path
 * as {@value #NAME}: the cuda backend's host code (DiT and MMDiT passes, text encoders, decoders) with
 * {@link EmulatedDevice}, the Java mirror of its kernels and of cuBLAS, in place of a GPU. No GPU is touched.
 */
public final class EmulatedCudaProvider implements BackendProvider {
    public static final String NAME = "cuda-emulated";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String description() {
        return "the cuda backend on its CPU emulation (tests only)";
    }

    @Override
    public List<String> requiredFiles() {
        return List.of(CudaDitBackend.WEIGHTS_FILE);
    }

    /** As the cuda provider's, on a fresh emulated device; a DiT's buffers first sized for 4 samples. */
    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return CudaBackendProvider.load(model, 4, EmulatedCudaProvider::device);
    }

    @Override
    public TextEncoder createTextEncoder(TextEncoderSpec encoder, BackendOptions options) throws BackendException {
        return CudaBackendProvider.loadTextEncoder(encoder, EmulatedCudaProvider::device);
    }

    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return CudaBackendProvider.loadDecoder(decoder, EmulatedCudaProvider::device);
    }

    /** An emulated device whose memory grows as the backend allocates it. */
    private static Device device() {
        return new EmulatedDevice(0);
    }
}
