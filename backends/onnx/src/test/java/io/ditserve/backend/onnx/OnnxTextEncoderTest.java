package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderCheckpoint;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.TextEncoderConformance;
import io.ditserve.backend.testkit.TextFixtures;
import java.util.Map;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * The text encoders on the onnx backend, their graphs built at load from the transformers folders, in the shared
 * suite ({@link TextEncoderConformance}: parity with the PyTorch references on the fixtures of
 * tools/text/make_encoder_fixtures.py, tolerance 1e-4; the java backend's output; a prompt alone and in any batch;
 * cancellation before the run, wrong ids; pooling, T5 buckets, the weights' validation); and here the 16-bit weights
 * read in place.
 */
class OnnxTextEncoderTest extends TextEncoderConformance {
    @Override
    protected TextEncoder create(TextEncoderSpec spec, int threads) throws BackendException {
        return OnnxBackends.textEncoder(spec, threads);
    }

    @Override
    protected Rules rules() {
        return new Rules((clip, ids) -> ((OnnxTextEncoder) clip).eosPosition(ids), TextEncoderGraphs::bucket);
    }

    /** A Cancellation terminates the run (OnnxRunner): it is checked before the run, not at fixed points in it. */
    @Override
    protected int polls(int layers) {
        return -1;
    }

    /** 16-bit folders are read in place in their stored dtype: F16 shards (CLIP-G's layout) and BF16 (T5). */
    @ParameterizedTest
    @CsvSource({"clip-tiny-g, F16, 4", "t5-tiny, BF16, 1"})
    void sixteenBitWeightsAreReadInPlace(String name, String dtype, int files) throws Exception {
        TextEncoderSpec spec = TextFixtures.encoderSpec(name);
        Map<String, TextEncoderCheckpoint.Located> located = TextEncoderCheckpoint.open(spec);
        assertThat(located.values()).allSatisfy(t -> assertThat(t.entry().dtype()).isEqualTo(dtype));
        try (TextEncoder encoder = create(spec, 1)) {
            assertThat(encoder).isInstanceOf(OnnxTextEncoder.class);
            OnnxTextEncoder enc = (OnnxTextEncoder) encoder;
            ExternalData.Summary data = enc.externalData();
            assertThat(data.bytesByFile()).hasSize(files);
            long bytes = data.bytesByFile().values().stream().mapToLong(Long::longValue).sum();
            long elements = located.values().stream().mapToLong(t -> t.entry().numel()).sum();
            // every tensor but the ones the graph does not read (none for these folders) at 2 bytes a value
            assertThat(bytes).isEqualTo(2 * elements);
            assertThat(data.tensors()).isEqualTo(located.size());
        }
    }
}
