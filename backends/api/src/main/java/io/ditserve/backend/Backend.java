package io.ditserve.backend;

/**
 * One loaded model on one compute backend: computes the transformer's forward pass.
 *
 * <p>Every backend computes the same function, {@code out = net(x, time, conditioning)} for the model's family
 * (docs/DIT_MODEL.md, docs/MODEL_FAMILIES.md); solvers, schedules, guidance and previews live above this interface.
 * Each sample of a batch has its own time and conditioning, so a caller may mix requests, solver stages and
 * classifier-free-guidance halves in one batch.
 *
 * <p>Implementations may serialise calls internally; callers must not assume {@link #forward} runs concurrently.
 * Buffers are owned by the caller; a backend must not keep references to them after {@code forward} returns.
 */
public interface Backend extends AutoCloseable {

    /** The provider name, e.g. {@code java}. */
    String name();

    ModelSpec model();

    /**
     * Runs the model over {@code batch} ({@link ForwardBatch#check} states what a valid batch is). With a non-plain
     * step cache (docs/STEP_CACHE.md), per sample, blocks 1..depth−1 run, run and store their residual, or are
     * skipped in favour of a stored residual; a backend that cannot skip blocks refuses such a batch, and
     * {@link #supportsStepCache()} says which is the case before a request is admitted.
     *
     * @param out output [N, C_out, H, W], written by the backend
     * @param cancel polled between layers; when it returns true the backend stops and throws
     *     {@link BackendException.Cancelled}
     */
    void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException;

    /** Whether {@link #forward} takes non-plain step caches. */
    default boolean supportsStepCache() {
        return false;
    }

    /**
     * The most samples one pass should hold on this backend: the engine packs at most this many rows into a pass.
     * A trait of the backend object, never of its name.
     */
    default int preferredMaxBatch() {
        return 16;
    }

    /** Refuses a non-plain step cache for backends that cannot skip blocks. */
    default void refuseStepCache(ForwardBatch batch) throws BackendException {
        if (!batch.plain()) {
            throw new BackendException("the " + name() + " backend cannot cache steps of model " + model().name());
        }
    }

    /** Releases native memory, sessions and threads. Idempotent. */
    @Override
    void close();
}
