package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderSpec;

/** The Java backend's text encoders, by the spec's kind: what {@code JavaBackendProvider.createTextEncoder} returns. */
public final class JavaTextEncoders {
    private JavaTextEncoders() {}

    /** {@link ClipTextEncoder} for CLIPTextModelWithProjection, {@link T5TextEncoder} for T5EncoderModel. */
    public static TextEncoder create(TextEncoderSpec spec, BackendOptions options) throws BackendException {
        return switch (spec.kind()) {
            case CLIP_WITH_PROJECTION -> ClipTextEncoder.create(spec, options);
            case T5_ENCODER -> T5TextEncoder.create(spec, options);
        };
    }
}
