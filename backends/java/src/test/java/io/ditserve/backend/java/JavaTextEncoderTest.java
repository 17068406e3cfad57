package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.testkit.TextEncoderConformance;

/**
 * The java backend's SD3 text encoders ({@link ClipTextEncoder}, {@link T5TextEncoder}) in the shared suite
 * ({@link TextEncoderConformance}): parity with tools/sd3/clip_text.py and tools/sd3/t5_encoder.py on the fixtures
 * of tools/text/make_encoder_fixtures.py, a prompt alone and in any batch with the same bits, cancellation between
 * layers, wrong ids, pooling, T5 buckets, the weights' validation. {@link ClipTextEncoderTest} and
 * {@link T5TextEncoderTest} hold the checks of this backend alone.
 */
class JavaTextEncoderTest extends TextEncoderConformance {
    @Override
    protected TextEncoder create(TextEncoderSpec spec, int threads) throws BackendException {
        return JavaTextEncoders.create(spec, BackendOptions.ofThreads(threads));
    }

    @Override
    protected double batchTolerance() {
        return 0;
    }

    @Override
    protected Rules rules() {
        return new Rules((clip, ids) -> ((ClipTextEncoder) clip).eosPosition(ids), T5TextEncoder::bucket);
    }
}
