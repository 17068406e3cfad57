package io.ditserve.server.engine;

/** The engine did not accept a generation (queue full, shutting down); the failure says why and what to do. */
public final class Rejected extends Exception {
    private final Failure failure;

    public Rejected(Failure failure) {
        super(failure.message(), null, false, false);
        this.failure = failure;
    }

    public Failure failure() {
        return failure;
    }
}
