package io.ditserve.server.sampling;

import io.ditserve.backend.ModelSpec;

/**
 * DDPM, DDIM and DPM-Solver++(2M) on DiT's VP process: one evaluation per step at the step's original-schedule
 * timestep, every step guided when guidance is on; the update is {@link SamplingStep}'s, unchanged, so a DiT folder
 * samples the same bytes as before the solvers became parts.
 */
final class VpSolver implements Solver {
    private final NoiseSchedule schedule;
    private final SamplingStep step;
    private final int steps;

    VpSolver(ModelSpec spec, SolverSettings settings, int n) {
        this.steps = settings.steps();
        this.schedule = NoiseSchedule.respaced(steps);
        this.step = new SamplingStep(spec, schedule, settings.sampler(), settings.eta(), settings.guidance(),
                settings.mode(), n);
    }

    /** Sampling index i (ascending timesteps) of step k (sampling order). */
    private int index(int k) {
        return steps - 1 - k;
    }

    @Override
    public int steps() {
        return steps;
    }

    @Override
    public int evaluations() {
        return steps;
    }

    @Override
    public Evaluation next(int k, float[] x) {
        return new Evaluation(x, schedule.timestep(index(k)), step.guided());
    }

    @Override
    public boolean needsNoise(int k) {
        return step.needsNoise(index(k));
    }

    @Override
    public boolean consume(int k, float[] x, float[] out, float[] noise, float[] x0, float[] xNext) {
        step.apply(index(k), x, out, noise, x0, xNext);
        return true;
    }

    @Override
    public int timestep(int k) {
        return schedule.timestep(index(k));
    }

    @Override
    public float time(int k) {
        return schedule.timestep(index(k));
    }
}
