package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import java.util.List;

/**
 * The CUDA backend: the forward pass and the latent decoders on an NVIDIA GPU through the driver API, cuBLAS and
 * NVRTC. Constructing the provider loads nothing; {@link #create} and {@link #createDecoder} find the libraries and
 * fail, naming what is missing, where there is no usable GPU.
 */
public final class CudaBackendProvider implements BackendProvider {
    public static final String NAME = "cuda";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String description() {
        return "NVIDIA GPU (CUDA driver API, cuBLAS, NVRTC; " + CudaOptions.PRECISION + "=fp32|tf32|bf16), reads "
                + CudaDitBackend.WEIGHTS_FILE;
    }

    @Override
    public List<String> requiredFiles() {
        return List.of(CudaDitBackend.WEIGHTS_FILE);
    }

    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return CudaDitBackend.create(model, options);
    }

    /** The full VAE decoder or the tiny preview decoder ({@link CudaDecoder}); reads the folder's weights file. */
    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return CudaDecoder.create(decoder, options);
    }
}
