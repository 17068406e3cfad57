package io.ditserve.server.engine;

/** Hooks for metrics; called on the engine thread, must be cheap and never throw. */
public interface EngineObserver {
    EngineObserver NONE = new EngineObserver() {};

    /** One denoising step of a generation: its wall time and the part spent in the backend's forward pass. */
    default void onStep(String model, String backend, double stepSeconds, double forwardSeconds) {}

    /** A generation delivered its images. */
    default void onImages(String model, int images) {}
}
