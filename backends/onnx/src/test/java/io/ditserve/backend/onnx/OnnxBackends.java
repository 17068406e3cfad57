package io.ditserve.backend.onnx;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.Map;

/**
 * The onnx backend and its text encoders with chosen options (found through ServiceLoader, as the server finds it),
 * and model specs bent for the validation tests.
 */
final class OnnxBackends {
    private OnnxBackends() {}

    static Backend onnx(ModelSpec spec, int threads, Map<String, String> options) throws BackendException {
        return Fixtures.provider(OnnxBackendProvider.NAME).create(spec, new BackendOptions(threads, options));
    }

    static Backend onnx(ModelSpec spec) throws BackendException {
        return onnx(spec, 2, Map.of());
    }

    static TextEncoder textEncoder(TextEncoderSpec spec, int threads) throws BackendException {
        return Fixtures.provider(OnnxBackendProvider.NAME).createTextEncoder(spec, BackendOptions.ofThreads(threads));
    }

    /** {@code spec} with another folder and input channel count (the output channels follow). */
    static ModelSpec with(ModelSpec s, Path directory, int inChannels) {
        return new ModelSpec(directory, s.name(), s.description(), s.inputSize(), s.patchSize(), inChannels,
                s.hiddenSize(), s.depth(), s.numHeads(), s.mlpRatio(), s.numClasses(), s.learnSigma(), s.classNames(),
                s.space(), s.guidanceMode(), s.defaults());
    }
}
