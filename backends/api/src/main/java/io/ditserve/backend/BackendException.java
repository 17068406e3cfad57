package io.ditserve.backend;

/** A backend could not load a model or run it. The message says what failed and, for files, which file and why. */
public class BackendException extends Exception {
    public BackendException(String message) {
        super(message);
    }

    public BackendException(String message, Throwable cause) {
        super(message, cause);
    }

    /** The forward pass was stopped because its {@link Cancellation} fired. */
    public static final class Cancelled extends BackendException {
        public Cancelled() {
            super("forward pass cancelled");
        }
    }
}
