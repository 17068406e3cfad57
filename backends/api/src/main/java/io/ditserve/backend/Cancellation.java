package io.ditserve.backend;

/** Polled by backends between layers so that a cancelled request stops within a fraction of a forward pass. */
@FunctionalInterface
public interface Cancellation {
    Cancellation NEVER = () -> false;

    boolean isCancelled();
}
