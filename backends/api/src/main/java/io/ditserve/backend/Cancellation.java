package io.ditserve.backend;

/**
 * Whether the caller wants a computation stopped. Backends poll {@link #isCancelled} between layers; a backend that
 * cannot poll inside a call (ONNX Runtime runs a whole graph) asks to be told instead, with {@link #onCancel}.
 */
@FunctionalInterface
public interface Cancellation {
    Cancellation NEVER = () -> false;

    boolean isCancelled();

    /**
     * Asks to be told when this cancellation fires: {@code action} runs once, on the cancelling thread, or at once
     * when it has already fired. Closing the returned handle withdraws the request.
     *
     * @return the handle, or null when this cancellation cannot notify (then the caller polls)
     */
    default Subscription onCancel(Runnable action) {
        return null;
    }

    /** A request to be told, withdrawn by {@link #close}. */
    interface Subscription extends AutoCloseable {
        @Override
        void close();
    }
}
