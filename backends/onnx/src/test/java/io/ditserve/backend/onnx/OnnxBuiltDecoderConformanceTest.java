package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.DecoderConformance;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The shared decoder conformance suite on the AutoencoderKL graph the onnx backend builds at load from a folder's
 * config.json and safetensors ({@link VaeDecoderGraph}), used even where an exported decoder.onnx lies beside them
 * (AutoencoderTiny fixtures run their exported graph, which nothing builds). Parity against tools/dit/vae.py within
 * the suite's 1e-4; and the VAEs of the SD3 pipeline fixtures (16 latent channels, scaling 1.5305, shift 0.0609,
 * without and with post_quant_conv), whose folders have no decoder.onnx at all, against the reference pipeline's
 * decoded images.
 */
class OnnxBuiltDecoderConformanceTest extends DecoderConformance {
    @Override
    protected Decoder create(DecoderSpec spec) throws BackendException {
        return spec.kind() == DecoderSpec.Kind.FULL ? OnnxDecoder.createBuilt(spec, BackendOptions.ofThreads(2))
                : new OnnxBackendProvider().createDecoder(spec, BackendOptions.ofThreads(2));
    }

    @Override
    protected int cancellationLatentSize() {
        return 16;
    }

    /** tools/pipeline-fixtures/{name}/vae with the cases of its cases.safetensors (latent sample → decoded). */
    @ParameterizedTest
    @ValueSource(strings = {"sd3-tiny-full", "sd35-tiny-full"})
    void theSd3PipelineVaesMatchTheReference(String name) throws Exception {
        Path pipeline = Fixtures.repoRoot().resolve("tools/pipeline-fixtures").resolve(name);
        DecoderSpec spec = DecoderConfigs.load(pipeline.resolve("vae"));
        assertThat(spec.latentChannels()).isEqualTo(16);
        assertThat(spec.postQuantConv()).isEqualTo(name.startsWith("sd35"));
        try (Stream<Path> files = Files.list(pipeline.resolve("vae"))) {
            assertThat(files.map(p -> p.getFileName().toString())).noneMatch(f -> f.endsWith(".onnx"));
        }
        // the provider's own path: no decoder.onnx in the folder, so the graph is built
        try (Decoder d = new OnnxBackendProvider().createDecoder(spec, BackendOptions.ofThreads(2));
                Safetensors st = Safetensors.open(pipeline.resolve("cases.safetensors"))) {
            for (int k = 0; st.entries().containsKey("case." + k + ".sample"); k++) {
                Tensor image = DecoderFixtures.decode(d, st.tensor("case." + k + ".sample"));
                double err = Fixtures.relativeError(image, st.tensor("case." + k + ".decoded"));
                System.out.printf("onnx built VAE %s case %d: %.2e (max |error| / max |reference|)%n", name, k, err);
                assertThat(err).as("%s case %d", name, k).isLessThanOrEqualTo(tolerance());
            }
        }
    }

    /** The suite above really runs the built graph: its weights are the safetensors file's, read in place. */
    @Test
    void theBuiltGraphReadsTheWeightsFromTheSafetensors() throws Exception {
        for (String name : new String[] {"vae-small", "vae-small-legacy"}) {
            DecoderSpec spec = DecoderFixtures.spec(DecoderFixtures.small(name));
            assertThat(spec.onnxFile()).exists();
            try (OnnxDecoder built = OnnxDecoder.createBuilt(spec, BackendOptions.ofThreads(1));
                    OnnxDecoder exported = (OnnxDecoder) new OnnxBackendProvider().createDecoder(spec,
                            BackendOptions.ofThreads(1))) {
                assertThat(built.externalData().tensors()).as(name)
                        .isEqualTo(io.ditserve.backend.DecoderCheckpoint.expectedShapes(spec).size());
                assertThat(built.externalData().bytesByFile()).containsOnlyKeys(DecoderSpec.WEIGHTS_FILE);
                assertThat(exported.externalData().isEmpty()).as("the exported graph holds its weights").isTrue();
            }
        }
    }

    @Test
    void aFolderWithoutDecoderOnnxGetsTheBuiltGraphFromTheProvider(@TempDir Path tmp) throws Exception {
        Path src = DecoderFixtures.small("vae-small");
        for (String f : new String[] {"config.json", DecoderSpec.WEIGHTS_FILE, "cases.safetensors"}) {
            Files.copy(src.resolve(f), tmp.resolve(f));
        }
        assertThat(new OnnxBackendProvider().requiredDecoderFiles()).containsExactly(DecoderSpec.WEIGHTS_FILE);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(tmp);
        try (Decoder d = new OnnxBackendProvider().createDecoder(DecoderConfigs.load(tmp),
                BackendOptions.ofThreads(1))) {
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image()))
                    .isLessThanOrEqualTo(tolerance());
        }
    }
}
