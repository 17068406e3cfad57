package io.ditserve.server.config;

/**
 * A problem with the configuration, for the operator: its message is one line that names where the problem is (the
 * configuration file with its line, the flag, or the key) and what is wrong. The command line prints the message
 * alone, without a stack trace, and exits with code 2. An {@link IllegalArgumentException}, so code that already
 * treats range errors of {@link ServerConfig#validate()} as bad arguments keeps working.
 */
public final class ConfigException extends IllegalArgumentException {
    public ConfigException(String message) {
        super(oneLine(message));
    }

    public ConfigException(String message, Throwable cause) {
        super(oneLine(message), cause);
    }

    /** Collapses line breaks (YAML parser messages have them) so the message stays one line. */
    static String oneLine(String s) {
        return s == null ? "" : s.strip().replaceAll("\\s*\\R\\s*", " ");
    }
}
