package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;
import java.util.List;

/**
 * The CUDA backend: the forward pass (DiT, SD3's MMDiT), SD3's text encoders (CLIP, T5) and the latent decoders on
 * an NVIDIA GPU through the driver API, cuBLAS and NVRTC. Constructing the provider loads nothing; {@link #create},
 * {@link #createTextEncoder} and {@link #createDecoder} find the libraries and fail, naming what is missing, where
 * there is no usable GPU.
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
                + CudaDitBackend.WEIGHTS_FILE + " (DiT) or diffusers' " + MmditCheckpoint.SINGLE_FILE
                + " and its shards (SD3 MMDiT)";
    }

    @Override
    public List<String> requiredFiles() {
        return List.of(CudaDitBackend.WEIGHTS_FILE);
    }

    /** A DiT ({@link CudaDitBackend}) or SD3's MMDiT ({@link CudaMmditBackend}), by the spec's architecture. */
    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return switch (model.architecture()) {
            case DIT -> CudaDitBackend.create(model, options);
            case MMDIT -> CudaMmditBackend.create(model, options);
        };
    }

    /** CLIPTextModelWithProjection or the T5 v1.1 encoder ({@link CudaTextEncoder}), from the folder's weights. */
    @Override
    public TextEncoder createTextEncoder(TextEncoderSpec encoder, BackendOptions options) throws BackendException {
        return CudaTextEncoder.create(encoder, options);
    }

    /** The full VAE decoder or the tiny preview decoder ({@link CudaDecoder}); reads the folder's weights file. */
    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return CudaDecoder.create(decoder, options);
    }
}
