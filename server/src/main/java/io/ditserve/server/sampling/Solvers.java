package io.ditserve.server.sampling;

import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;

/** Chooses a generation's {@link Solver} from the model's process and the request's settings. */
public final class Solvers {
    private Solvers() {}

    /**
     * A solver for {@code n} images of {@code spec}.
     *
     * @throws IllegalArgumentException when the sampler cannot sample the model's process (the request validator
     *     refuses such requests first, naming the samplers the model takes)
     */
    public static Solver create(ModelSpec spec, SolverSettings settings, int n) {
        ModelSpec.Process p = spec.process();
        if (!settings.sampler().samples(p)) {
            throw new IllegalArgumentException("sampler " + settings.sampler().configName() + " cannot sample model "
                    + spec.name() + "; it takes " + Sampler.forProcess(p).stream().map(Sampler::configName).toList());
        }
        return p.flow() ? new FlowSolver(spec, settings, n) : new VpSolver(spec, settings, n);
    }

    /** Model evaluations per image over the trajectory (each guided one counts once): Heun 2N − 1, the others N. */
    public static int evaluations(SolverSettings settings) {
        return settings.sampler() == Sampler.HEUN ? 2 * settings.steps() - 1 : settings.steps();
    }

    /** Network times of each step's start, in sampling order: what Accepted reports. */
    public static float[] stepTimes(ModelSpec spec, SolverSettings settings) {
        float[] t = new float[settings.steps()];
        if (spec.process().flow()) {
            double[] s = FlowGrid.of(settings.sampler(), settings.steps(), settings.shift(), settings.grid());
            for (int k = 0; k < t.length; k++) {
                t[k] = (float) spec.process().networkTime(s[k]);
            }
        } else {
            int[] ts = NoiseSchedule.respace(settings.steps());
            for (int k = 0; k < t.length; k++) {
                t[k] = ts[ts.length - 1 - k];
            }
        }
        return t;
    }
}
