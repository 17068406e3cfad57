package io.ditserve.server.engine;

import java.util.Objects;

/**
 * Why a generation ended without its images, in the engine's own terms; the transport maps the code to its status
 * (gRPC: the status code of the same name).
 */
public record Failure(Code code, String message) {
    public enum Code { CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL }

    public Failure {
        Objects.requireNonNull(code, "code");
        Objects.requireNonNull(message, "message");
    }

    public static Failure cancelled(String message) {
        return new Failure(Code.CANCELLED, message);
    }

    public static Failure unavailable(String message) {
        return new Failure(Code.UNAVAILABLE, message);
    }

    public static Failure internal(String message) {
        return new Failure(Code.INTERNAL, message);
    }
}
