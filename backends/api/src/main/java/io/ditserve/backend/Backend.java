package io.ditserve.backend;

/**
 * One loaded model on one compute backend: computes the DiT forward pass.
 *
 * <p>Every backend computes the same function, {@code out = DiT(x, t, y)} per {@code docs/DIT_MODEL.md}; the
 * sampler, guidance and previews live above this interface. Each sample of a batch has its own timestep and label,
 * so a caller may mix requests and classifier-free-guidance halves in one batch.
 *
 * <p>Implementations may serialise calls internally; callers must not assume {@link #forward} runs concurrently.
 * Buffers are owned by the caller; a backend must not keep references to them after {@code forward} returns.
 */
public interface Backend extends AutoCloseable {

    /** The provider name, e.g. {@code java}. */
    String name();

    ModelSpec model();

    /**
     * Runs the model.
     *
     * @param x input batch [N, C_in, H, W]
     * @param t original-schedule timesteps, length N, each in 0..999
     * @param y class ids, length N, each in 0..num_classes (num_classes = the null class)
     * @param out output [N, C_out, H, W], written by the backend
     * @param cancel polled between layers; when it returns true the backend stops and throws
     *     {@link BackendException.Cancelled}
     */
    void forward(Tensor x, int[] t, int[] y, Tensor out, Cancellation cancel) throws BackendException;

    /**
     * Runs the model with step caching (docs/STEP_CACHE.md): per sample, blocks 1..depth−1 run, run and store their
     * residual, or are skipped in favour of a stored residual. A {@code null} or {@link StepCache#plain() plain}
     * cache is the plain forward pass. Backends that cannot skip blocks leave this default, which refuses any other
     * cache; {@link #supportsStepCache()} says which is the case before a request is admitted.
     */
    default void forward(Tensor x, int[] t, int[] y, Tensor out, Cancellation cancel, StepCache cache)
            throws BackendException {
        if (cache != null && !cache.plain()) {
            throw new BackendException("the " + name() + " backend cannot cache steps of model " + model().name());
        }
        forward(x, t, y, out, cancel);
    }

    /** Whether {@link #forward(Tensor, int[], int[], Tensor, Cancellation, StepCache)} takes non-plain caches. */
    default boolean supportsStepCache() {
        return false;
    }

    /** Releases native memory, sessions and threads. Idempotent. */
    @Override
    void close();
}
