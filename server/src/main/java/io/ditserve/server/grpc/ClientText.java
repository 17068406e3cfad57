package io.ditserve.server.grpc;

/**
 * Client-supplied strings (model names, class names) as they may appear in status descriptions and log lines:
 * quoted, escaped and cut, so that a client can neither forge log lines (a newline in a name) nor blow up a log line
 * or a status trailer (a name of megabytes).
 *
 * <p>Backslash, the quote character and every character that is not printable (controls, line and paragraph
 * separators, formatting characters, unpaired surrogates, unassigned code points) are written as {@code \\uXXXX};
 * after {@value #MAX_CHARS} characters of the original the rest is replaced by {@code …(N chars)}, N being the
 * original length in UTF-16 chars.
 */
public final class ClientText {
    /** Characters of a client string kept in messages and logs. */
    public static final int MAX_CHARS = 64;

    private ClientText() {}

    /** The string escaped, cut and in single quotes: {@code 'name'}. */
    public static String quote(String s) {
        return "'" + escape(s) + "'";
    }

    /** The string escaped and cut (without quotes). */
    public static String escape(String s) {
        if (s == null) {
            return "null";
        }
        int n = Math.min(s.length(), MAX_CHARS);
        StringBuilder b = new StringBuilder(n + 16);
        for (int i = 0; i < n; i++) {
            char c = s.charAt(i);
            if (printable(s, i, c)) {
                b.append(c);
                if (Character.isHighSurrogate(c)) {
                    if (i + 1 < n) {
                        b.append(s.charAt(++i));
                    } else {
                        b.setLength(b.length() - 1); // the pair is split by the cut: escape its first half
                        b.append(String.format("\\u%04X", (int) c));
                    }
                }
            } else {
                b.append(String.format("\\u%04X", (int) c));
            }
        }
        if (s.length() > MAX_CHARS) {
            b.append("…(").append(s.length()).append(" chars)");
        }
        return b.toString();
    }

    private static boolean printable(String s, int i, char c) {
        if (c == '\\' || c == '\'') {
            return false;
        }
        if (c >= 0x20 && c < 0x7f) {
            return true;
        }
        int cp;
        if (Character.isHighSurrogate(c)) {
            if (i + 1 >= s.length() || !Character.isLowSurrogate(s.charAt(i + 1))) {
                return false;
            }
            cp = Character.toCodePoint(c, s.charAt(i + 1));
        } else if (Character.isLowSurrogate(c)) {
            return false;
        } else {
            cp = c;
        }
        return switch (Character.getType(cp)) {
            case Character.CONTROL, Character.FORMAT, Character.UNASSIGNED, Character.LINE_SEPARATOR,
                 Character.PARAGRAPH_SEPARATOR, Character.PRIVATE_USE, Character.SURROGATE -> false;
            default -> true;
        };
    }
}
