package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderRules;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.TextEncoderConformance;
import io.ditserve.backend.testkit.TextFixtures;
import io.ditserve.backend.testkit.TextFixtures.EncoderCases;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * SD3's text encoders on the cuda backend ({@link CudaTextEncoder}, {@link TextEncoderForward}) run on
 * {@link EmulatedDevice}, in the shared suite ({@link TextEncoderConformance}: parity with the PyTorch references on
 * the fixtures of tools/text/make_encoder_fixtures.py with the java backend's measure and tolerance, the java
 * backend's output, a prompt alone and in any batch with the same bytes, cancellation before the run, before each
 * layer and after the last, wrong ids, pooling, T5 buckets, the weights' validation); and here attention in chunks and
 * CLIP's other hidden layers (the provider's dispatch to it: {@link CudaBackendProviderTest}).
 */
class CudaTextEncoderTest extends TextEncoderConformance {
    /** The emulation has no threads of its own: {@code threads} is not used. */
    @Override
    protected TextEncoder create(TextEncoderSpec spec, int threads) throws BackendException {
        return Emulation.textEncoder(spec, ActivationLayout.SCORES_BUDGET);
    }

    @Override
    protected double batchTolerance() {
        return 0;
    }

    /**
     * The host computes both: the row each sequence pools ({@link TextEncoderRules#clipPoolPosition}) at every
     * encode, T5's position bias ({@link TextEncoderRules#t5Bucket}) at load.
     */
    @Override
    protected Rules rules() {
        return new Rules((clip, ids) -> TextEncoderRules.clipPoolPosition(clip.spec(), ids),
                TextEncoderRules::t5Bucket);
    }

    /** Before the run, before each layer and after the last. */
    @Override
    protected int polls(int layers) {
        return layers + 2;
    }

    /** Attention in chunks of one sequence (a scores budget of one float) gives the bytes of attention in one go. */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#ENCODERS")
    void attentionInChunksGivesTheSameBytes(String name) throws Exception {
        EncoderCases c = TextFixtures.encoderCases(name);
        TextEncoderSpec spec = TextFixtures.encoderSpec(name);
        try (TextEncoder whole = create(spec, 1); TextEncoder chunked = Emulation.textEncoder(spec, 1)) {
            TextEncoder.Output a = whole.encode(c.ids(), Cancellation.NEVER);
            TextEncoder.Output b = chunked.encode(c.ids(), Cancellation.NEVER);
            assertThat(b.hidden()).isEqualTo(a.hidden());
            if (a.pooled() != null) {
                assertThat(b.pooled()).isEqualTo(a.pooled());
            }
        }
    }

    /**
     * CLIP's other hidden layers, as the java backend returns them: the embeddings (k = 0) and the last layer's raw
     * output (k = layers, before final_layer_norm); the pooled output does not depend on k.
     */
    @ParameterizedTest
    @ValueSource(ints = {0, 3})
    void otherHiddenLayersAreTheJavaBackends(int layer) throws Exception {
        EncoderCases c = TextFixtures.encoderCases("clip-tiny");
        TextEncoderSpec s = TextFixtures.encoderSpec("clip-tiny");
        TextEncoderSpec other = new TextEncoderSpec(s.directory(), s.role(), s.kind(), s.hiddenSize(), s.layers(),
                s.heads(), s.headDim(), s.intermediate(), s.vocab(), s.maxTokens(), s.projectionDim(), s.activation(),
                s.eps(), layer, s.eosTokenId(), s.relativeBuckets(), s.relativeMaxDistance());
        try (TextEncoder cuda = create(other, 1);
                TextEncoder java = new JavaBackendProvider().createTextEncoder(other, BackendOptions.ofThreads(1))) {
            TextEncoder.Output out = cuda.encode(c.ids(), Cancellation.NEVER);
            assertThat(Fixtures.relativeError(out.hidden(), java.encode(c.ids(), Cancellation.NEVER).hidden()))
                    .isLessThan(tolerance());
            assertThat(Fixtures.relativeError(out.pooled(), c.pooled())).isLessThan(tolerance());
        }
    }
}
