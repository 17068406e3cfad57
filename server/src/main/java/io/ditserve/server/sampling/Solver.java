package io.ditserve.server.sampling;

/**
 * One generation's sampler, as a sequence of model evaluations: the engine asks for the next {@link Evaluation}
 * (where and when to evaluate the network, and whether with the unconditional half), runs it in a pass shared with
 * other generations' evaluations, and hands the output back to {@link #consume}, which says when a step is done.
 * DDPM, DDIM, DPM-Solver++(2M), Euler and Euler–Maruyama evaluate once per step; Heun twice (except its last step).
 *
 * <p>Batch layout of an evaluation: the n images, then, when guided, their n unconditional twins (the null class)
 * at the same input ({@link Guidance#samples}). Steps run in sampling order, step 0 at the noisiest time. A solver
 * holds its own scratch, allocated once; nothing is shared between instances, so generations with different solvers
 * mix freely in one pass.
 */
public interface Solver {

    /** Where and when the next evaluation happens. */
    record Evaluation(float[] input, float time, boolean guided) {}

    /** Steps of the trajectory. */
    int steps();

    /** Model evaluations of one image over the whole trajectory (each guided one counts once). */
    int evaluations();

    /**
     * The next evaluation of {@code step} (0-based, sampling order), given the current samples x [n, C, H, W].
     * Called before each evaluation; the returned input array belongs to the caller's x or to the solver and must
     * not be changed before {@link #consume}.
     */
    Evaluation next(int step, float[] x);

    /** Whether {@code step} draws fresh noise (read by the step's last {@link #consume}); never the last step. */
    boolean needsNoise(int step);

    /**
     * Consumes the output of the evaluation that {@link #next} described: [samples, C_out, H, W], conditional
     * images first. When this completes the step, writes the data (clean-image) estimate to {@code x0} and the next
     * samples to {@code xNext} and returns true; otherwise (a solver stage) returns false and writes nothing there.
     *
     * @param noise [n, C, H, W] standard normal values, read only when {@link #needsNoise} for this step
     */
    boolean consume(int step, float[] x, float[] out, float[] noise, float[] x0, float[] xNext);

    /** The VP timestep of {@code step}'s start (the original-schedule index), or −1 for a flow model. */
    int timestep(int step);

    /** The network time of {@code step}'s start: what its first evaluation feeds the timestep embedder. */
    float time(int step);
}
