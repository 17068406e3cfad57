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
import java.util.Objects;

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
        Objects.requireNonNull(model, "model");
        CudaOptions o = CudaOptions.parse(options);
        return load(model, o.maxBatch(), CudaDevice.opener(o));
    }

    /** CLIPTextModelWithProjection or the T5 v1.1 encoder ({@link CudaTextEncoder}), from the folder's weights. */
    @Override
    public TextEncoder createTextEncoder(TextEncoderSpec encoder, BackendOptions options) throws BackendException {
        Objects.requireNonNull(encoder, "encoder");
        return loadTextEncoder(encoder, CudaDevice.opener(CudaOptions.parse(options)));
    }

    /** The full VAE decoder or the tiny preview decoder ({@link CudaDecoder}); reads the folder's weights file. */
    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        Objects.requireNonNull(decoder, "decoder");
        return loadDecoder(decoder, CudaDevice.opener(CudaOptions.parse(options)));
    }

    /**
     * What {@link #create} makes, on the device {@code opener} opens ({@link CudaDevice}; the server tests' emulated
     * provider passes a CPU emulation): a DiT, whose buffers are sized for {@code maxBatch} samples at load, or an
     * MMDiT, whose buffers are sized at its first pass.
     */
    static Backend load(ModelSpec model, int maxBatch, Device.Opener opener) throws BackendException {
        return switch (model.architecture()) {
            case DIT -> CudaDitBackend.load(model, maxBatch, opener);
            case MMDIT -> CudaMmditBackend.load(model, ActivationLayout.SCORES_BUDGET, opener);
        };
    }

    /** What {@link #createTextEncoder} makes, on the device {@code opener} opens. */
    static TextEncoder loadTextEncoder(TextEncoderSpec encoder, Device.Opener opener) throws BackendException {
        return CudaTextEncoder.load(encoder, ActivationLayout.SCORES_BUDGET, opener);
    }

    /** What {@link #createDecoder} makes, on the device {@code opener} opens. */
    static Decoder loadDecoder(DecoderSpec decoder, Device.Opener opener) throws BackendException {
        return CudaDecoder.load(decoder, DecoderBuffers.DEFAULT_BUDGETS, opener);
    }
}
