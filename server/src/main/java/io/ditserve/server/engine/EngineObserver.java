package io.ditserve.server.engine;

/** Hooks for metrics; called on compute threads, must be cheap and never throw. */
public interface EngineObserver {
    EngineObserver NONE = new EngineObserver() {};

    /** One denoising step of a generation: wall time from its inputs being gathered to its update. */
    default void onStep(String model, String backend, double stepSeconds) {}

    /** One forward pass over {@code samples} samples (possibly of several generations). */
    default void onForward(String model, String backend, int samples, double seconds) {}

    /** A generation left the queue and started, after waiting this long. */
    default void onQueueWait(String model, double seconds) {}

    /** A generation delivered its images. */
    default void onImages(String model, int images) {}
}
