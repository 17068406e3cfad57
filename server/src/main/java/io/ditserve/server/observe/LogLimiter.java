package io.ditserve.server.observe;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.LongSupplier;

/**
 * At most one log line per key (a client address, a kind of error) per interval, for lines that clients can cause
 * at will: a flood of bad requests must not become a flood of log lines. A line that is let through carries the
 * count of the ones held back since the previous line of its key ("; 41 more like this in the last 60 s not
 * logged"), so nothing is lost from the totals. Keys are kept for at most {@link #MAX_KEYS}; beyond that the
 * oldest is forgotten (its count then starts again), so a client that rotates addresses cannot grow the map.
 */
public final class LogLimiter {
    /** Distinct keys remembered. */
    public static final int MAX_KEYS = 4096;

    private final long intervalNanos;
    private final LongSupplier clock;
    private final Map<String, long[]> keys = new LinkedHashMap<>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, long[]> eldest) {
            return size() > MAX_KEYS;
        }
    };

    public LogLimiter(Duration interval) {
        this(interval, System::nanoTime);
    }

    LogLimiter(Duration interval, LongSupplier clock) {
        this.intervalNanos = interval.toNanos();
        this.clock = clock;
    }

    /**
     * Whether a line of {@code key} may be logged now. Returns null when it may not (the line is counted as held
     * back), else the suffix to append: empty, or "; N more like this in the last S s not logged".
     */
    public synchronized String admit(String key) {
        long now = clock.getAsLong();
        long[] s = keys.get(key); // {time of the last line, lines held back since}
        if (s != null && now - s[0] < intervalNanos) {
            s[1]++;
            return null;
        }
        String suffix = s == null || s[1] == 0 ? ""
                : "; " + s[1] + " more like this in the last " + Math.round((now - s[0]) / 1e9) + " s not logged";
        keys.put(key, new long[] {now, 0});
        return suffix;
    }
}
