package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.testkit.DecoderConformance;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The shared decoder conformance suite on the onnx backend's decoders as the fixtures give them ({@code decoder.onnx}
 * exported by tools/dit/vae.py, which wins over building the graph; parity 1e-4 on the small and the real-shape
 * fixtures), and the check of the graph's contract.
 */
class OnnxDecoderConformanceTest extends DecoderConformance {
    @Override
    protected Decoder create(DecoderSpec spec) throws BackendException {
        return new OnnxBackendProvider().createDecoder(spec, BackendOptions.ofThreads(2));
    }

    /** The cancellation is seen by a watcher thread while the run is under way: a 16 × 16 latent decodes a while. */
    @Override
    protected int cancellationLatentSize() {
        return 16;
    }

    @Test
    void aGraphWithAnotherContractFailsAtLoadNamingIt(@TempDir Path tmp) throws Exception {
        Path src = DecoderFixtures.small("vae-small");
        for (String f : new String[] {"config.json", DecoderSpec.WEIGHTS_FILE}) {
            Files.copy(src.resolve(f), tmp.resolve(f));
        }
        // the DiT graph of a fixture model is a valid ONNX file with the wrong inputs for a decoder
        Files.copy(Fixtures.modelDir("latent-tiny").resolve("model.onnx"), tmp.resolve(DecoderSpec.ONNX_FILE),
                StandardCopyOption.REPLACE_EXISTING);
        assertThatThrownBy(() -> create(DecoderConfigs.load(tmp))).isInstanceOf(BackendException.class)
                .hasMessageContaining("decoder.onnx").hasMessageContaining("expected one input [latent]");
    }

    /** An AutoencoderKL without decoder.onnx gets a built graph (OnnxBuiltDecoderConformanceTest); a TAESD fails. */
    @Test
    void aTinyDecoderWithoutItsGraphFailsAtLoadNamingIt(@TempDir Path tmp) throws Exception {
        Path src = DecoderFixtures.small("taesd-small");
        for (String f : new String[] {"config.json", DecoderSpec.WEIGHTS_FILE}) {
            Files.copy(src.resolve(f), tmp.resolve(f));
        }
        assertThatThrownBy(() -> create(DecoderConfigs.load(tmp))).isInstanceOf(BackendException.class)
                .hasMessageContaining("decoder.onnx: missing");
    }
}
