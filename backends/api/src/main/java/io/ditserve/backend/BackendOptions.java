package io.ditserve.backend;

import java.util.Map;
import java.util.Objects;

/**
 * Backend settings from the server configuration: a thread count and free-form string options that each backend
 * documents (e.g. {@code onnx.optimization=all}, {@code cuda.precision=tf32}).
 */
public record BackendOptions(int threads, Map<String, String> options) {

    public BackendOptions {
        if (threads < 1) {
            throw new IllegalArgumentException("threads must be >= 1, got " + threads);
        }
        options = Map.copyOf(Objects.requireNonNull(options, "options"));
    }

    public static BackendOptions ofThreads(int threads) {
        return new BackendOptions(threads, Map.of());
    }

    public String get(String key, String fallback) {
        return options.getOrDefault(key, fallback);
    }
}
