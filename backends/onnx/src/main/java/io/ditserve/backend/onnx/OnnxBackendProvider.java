package io.ditserve.backend.onnx;

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
 * The ONNX Runtime backend: runs the {@code model.onnx} exported by tools/dit/export.py for a DiT-architecture
 * model; for a text-to-image pipeline (SD3, SD3.5) it builds the MMDiT and text-encoder graphs itself at load, from
 * the diffusers folders as downloaded, their weights read in place from the safetensors files
 * (docs/TEXT_MODELS.md, "The onnx backend"), and likewise an AutoencoderKL decoder's graph when its folder has no
 * exported {@code decoder.onnx} (docs/DECODERS.md). Built graphs are kept in a cache folder outside the model
 * folders and reused while nothing they depend on changes ({@link GraphCache}).
 *
 * <p>Discovery is cheap: this class touches no ONNX Runtime type, so constructing it and calling {@link #name()}
 * load no native code. The native library is loaded by {@link #create}, only for the backend the configuration
 * selects.
 */
public final class OnnxBackendProvider implements BackendProvider {
    public static final String NAME = "onnx";

    @Override
    public String name() {
        return NAME;
    }

    @Override
    public String description() {
        return "ONNX Runtime (" + OnnxDitBackend.PROVIDER_OPTION + "=cpu|cuda, " + OnnxDitBackend.OPTIMIZATION_OPTION
                + "=all|extended|basic|none), reads " + OnnxDitBackend.MODEL_FILE + " (DiT); builds the graphs of SD3"
                + " pipelines (MMDiT, CLIP, T5, VAE) from their safetensors and caches them (" + GraphCache.OPTION
                + "=on|optimized|off, " + GraphCache.DIR_OPTION + ", " + GraphCache.MAX_MB_OPTION + ")";
    }

    /**
     * What a DiT model folder needs. An MMDiT comes only inside a pipeline folder, whose loader checks the
     * transformer's own files ({@code diffusion_pytorch_model.safetensors} or its index): no .onnx file there.
     */
    @Override
    public List<String> requiredFiles() {
        return List.of(OnnxDitBackend.MODEL_FILE);
    }

    /** A DiT from its exported model.onnx, or an MMDiT from its diffusers folder, by the spec's architecture. */
    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return switch (model.architecture()) {
            case DIT -> OnnxDitBackend.create(model, options);
            case MMDIT -> OnnxMmditBackend.create(model, options);
        };
    }

    /** CLIPTextModelWithProjection or the T5 v1.1 encoder, its graph built from the folder's safetensors. */
    @Override
    public TextEncoder createTextEncoder(TextEncoderSpec encoder, BackendOptions options) throws BackendException {
        return OnnxTextEncoder.create(encoder, options);
    }

    /**
     * The weights, as on every backend: an AutoencoderKL's graph is built from them when the folder has no
     * {@code decoder.onnx}; an AutoencoderTiny without one fails at {@link #createDecoder} naming the file.
     */
    @Override
    public List<String> requiredDecoderFiles() {
        return List.of(DecoderSpec.WEIGHTS_FILE);
    }

    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return OnnxDecoder.create(decoder, options);
    }
}
