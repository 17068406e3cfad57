package io.ditserve.server.engine;

import io.ditserve.proto.v1.GenerateEvent;
import io.grpc.Status;

/**
 * Receives a generation's events, on the engine's thread. Implementations must not block: a slow consumer keeps
 * what it must (accepted, results) and may drop what it may (older progress and preview frames).
 */
public interface GenerationListener {
    /** An event in stream order. Progress, queue updates and previews may be coalesced by the listener. */
    void onEvent(GenerateEvent event);

    /** Whether preview frames are still wanted (false once the stream has ended: nothing to encode them for). */
    default boolean wantsPreview() {
        return true;
    }

    /** The generation finished and every result has been passed to {@link #onEvent}. */
    void onCompleted();

    /** The generation ended with this status (cancelled, deadline, backend failure, shutdown). */
    void onFailed(Status status);
}
