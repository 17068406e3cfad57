package io.ditserve.backend;

import java.util.List;
import java.util.Locale;
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

    // ---- one parser for every backend's options, with the same messages everywhere

    /**
     * Fails when a key of this backend ({@code backend + "."} prefix) is not one of {@code known}: a typo is a
     * start-up error naming the key and the known ones, never a silent default. Keys of other backends are theirs.
     */
    public void checkKeys(String backend, List<String> known) throws BackendException {
        for (String key : options.keySet()) {
            if (key.startsWith(backend + ".") && !known.contains(key)) {
                throw new BackendException("Unknown option [" + key + "] of the " + backend + " backend, known options "
                        + known);
            }
        }
    }

    /** One of {@code allowed} (trimmed, case-insensitive); absent → the first. */
    public String choice(String backend, String key, List<String> allowed) throws BackendException {
        String v = options.getOrDefault(key, allowed.getFirst()).trim().toLowerCase(Locale.ROOT);
        if (!allowed.contains(v)) {
            throw new BackendException("Unknown " + key + " [" + v + "] of the " + backend + " backend, known options "
                    + allowed);
        }
        return v;
    }

    /** An integer ≥ {@code min}; absent → {@code fallback}. */
    public int intAtLeast(String key, int fallback, int min) throws BackendException {
        String v = options.get(key);
        if (v == null) {
            return fallback;
        }
        try {
            int i = Integer.parseInt(v.trim());
            if (i >= min) {
                return i;
            }
        } catch (NumberFormatException e) {
            // reported below
        }
        throw new BackendException(key + " must be an integer >= " + min + ", found '" + v + "'");
    }

    /** true or false; absent → {@code fallback}. */
    public boolean bool(String key, boolean fallback) throws BackendException {
        String v = options.get(key);
        if (v == null) {
            return fallback;
        }
        return switch (v.trim()) {
            case "true" -> true;
            case "false" -> false;
            default -> throw new BackendException(key + " must be true or false, found '" + v + "'");
        };
    }
}
