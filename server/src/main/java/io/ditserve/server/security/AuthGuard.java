package io.ditserve.server.security;

import io.ditserve.server.observe.LogLimiter;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.function.LongSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Failed authentications per remote address: counted (by the caller, {@code dit_auth_failures_total}), logged as
 * one line per address per window with the count of those not logged ({@link LogLimiter}), and refused outright
 * once an address has failed {@code auth_max_failures} times within {@code auth_failure_window_seconds}: until its
 * oldest failure in the window ages out, every call from it ends with RESOURCE_EXHAUSTED before its token is even
 * looked at, so guessing tokens from one address runs at that many guesses per window. A client behind a shared
 * address (a proxy, a NAT) shares its budget: raise the limit there, or set it to 0 (never refuse).
 *
 * <p>Bounded memory: at most {@link #MAX_ADDRESSES} addresses with failures are remembered (the least recently
 * failing is forgotten first), each with at most {@code maxFailures} times.
 */
public final class AuthGuard {
    private static final Logger log = LoggerFactory.getLogger(AuthGuard.class);
    static final int MAX_ADDRESSES = 10_000;

    private final int maxFailures;
    private final long windowNanos;
    private final LongSupplier clock;
    private final LogLimiter logLimiter;
    private final Map<String, ArrayDeque<Long>> failures = new LinkedHashMap<>(64, 0.75f, true) {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, ArrayDeque<Long>> eldest) {
            return size() > MAX_ADDRESSES;
        }
    };

    /** @param maxFailures failures per window after which an address is refused; 0 = never refuse */
    public AuthGuard(int maxFailures, Duration window) {
        this(maxFailures, window, System::nanoTime);
    }

    AuthGuard(int maxFailures, Duration window, LongSupplier clock) {
        this.maxFailures = maxFailures;
        this.windowNanos = window.toNanos();
        this.clock = clock;
        this.logLimiter = new LogLimiter(window);
    }

    /**
     * Null when {@code address} may try to authenticate, else the seconds until it may again (it has failed
     * {@code maxFailures} times within the window).
     */
    public synchronized Long refusedForSeconds(String address) {
        if (maxFailures == 0) {
            return null;
        }
        ArrayDeque<Long> times = failures.get(address);
        if (times == null) {
            return null;
        }
        long now = clock.getAsLong();
        expire(times, now);
        if (times.size() < maxFailures) {
            return null;
        }
        return Math.max(1, (times.peekFirst() + windowNanos - now + 999_999_999L) / 1_000_000_000L);
    }

    /** Records a failed authentication from {@code address} and logs it, rate-limited per address. */
    public void failed(String address, String why) {
        synchronized (this) {
            if (maxFailures > 0) {
                ArrayDeque<Long> times = failures.computeIfAbsent(address, a -> new ArrayDeque<>());
                long now = clock.getAsLong();
                expire(times, now);
                times.addLast(now);
                while (times.size() > maxFailures) {
                    times.pollFirst();
                }
            }
        }
        String suffix = logLimiter.admit(address);
        if (suffix != null) {
            log.warn("authentication failed from {}: {}{}", address, why, suffix);
        }
    }

    private void expire(ArrayDeque<Long> times, long now) {
        while (!times.isEmpty() && now - times.peekFirst() >= windowNanos) {
            times.pollFirst();
        }
    }

    public int maxFailures() {
        return maxFailures;
    }

    public long windowSeconds() {
        return windowNanos / 1_000_000_000L;
    }
}
