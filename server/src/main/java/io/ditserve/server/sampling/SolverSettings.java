package io.ditserve.server.sampling;

import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import java.util.Objects;

/**
 * What a request chose for its sampling, resolved against the model's defaults and validated.
 *
 * @param interval guidance only at steps whose start time τ lies inside it (flow models), or null for every step
 * @param shift the flow grid's timestep shift (1 = none)
 */
public record SolverSettings(Sampler sampler, int steps, float eta, float guidance, GuidanceMode mode,
        ModelSpec.GuidanceInterval interval, double shift, ModelSpec.Grid grid) {
    /** On the uniform grid. */
    public SolverSettings(Sampler sampler, int steps, float eta, float guidance, GuidanceMode mode,
            ModelSpec.GuidanceInterval interval, double shift) {
        this(sampler, steps, eta, guidance, mode, interval, shift, ModelSpec.Grid.UNIFORM);
    }

    public SolverSettings {
        Objects.requireNonNull(grid, "grid");
        Objects.requireNonNull(sampler, "sampler");
        Objects.requireNonNull(mode, "mode");
        if (steps < 1) {
            throw new IllegalArgumentException("steps must be >= 1, got " + steps);
        }
        if (!(shift > 0)) {
            throw new IllegalArgumentException("shift must be > 0, got " + shift);
        }
    }
}
