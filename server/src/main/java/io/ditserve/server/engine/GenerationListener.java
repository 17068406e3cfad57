package io.ditserve.server.engine;

/**
 * Receives a generation's events, on the engine's compute thread. Implementations must not block and must not do
 * expensive work there (no encoding): a slow consumer keeps what it must (accepted, results) and may drop what it
 * may (older progress and preview frames).
 */
public interface GenerationListener {
    /** An event in stream order. Progress, queue updates and previews may be coalesced by the listener. */
    void onEvent(GenerationEvent event);

    /** Whether preview frames are still wanted (false once the stream has ended: nothing to render them for). */
    default boolean wantsPreview() {
        return true;
    }

    /** The generation finished and every result has been passed to {@link #onEvent}. */
    void onCompleted();

    /** The generation ended without its images (cancelled, deadline, backend failure, shutdown). */
    void onFailed(Failure failure);
}
