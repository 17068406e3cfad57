package io.ditserve.backend.onnx;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import java.util.List;

/**
 * The ONNX Runtime backend: runs the {@code model.onnx} exported by tools/dit/export.py.
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
                + "=all|extended|basic|none), reads " + OnnxDitBackend.MODEL_FILE;
    }

    @Override
    public List<String> requiredFiles() {
        return List.of(OnnxDitBackend.MODEL_FILE);
    }

    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        return OnnxDitBackend.create(model, options);
    }

    @Override
    public List<String> requiredDecoderFiles() {
        return List.of(DecoderSpec.ONNX_FILE);
    }

    @Override
    public Decoder createDecoder(DecoderSpec decoder, BackendOptions options) throws BackendException {
        return OnnxDecoder.create(decoder, options);
    }
}
