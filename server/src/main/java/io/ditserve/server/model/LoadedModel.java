package io.ditserve.server.model;

import io.ditserve.backend.Backend;
import io.ditserve.backend.ModelSpec;
import java.util.Objects;

/** A model served by one backend. */
public record LoadedModel(ModelSpec spec, Backend backend, long parameters) {
    public LoadedModel {
        Objects.requireNonNull(spec, "spec");
        Objects.requireNonNull(backend, "backend");
    }

    public String name() {
        return spec.name();
    }
}
