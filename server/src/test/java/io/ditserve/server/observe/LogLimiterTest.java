package io.ditserve.server.observe;

import static org.assertj.core.api.Assertions.assertThat;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** One line per key per interval, the next one carrying the count of those held back. */
class LogLimiterTest {
    @Test
    void oneLinePerKeyPerIntervalWithTheCountOfTheOthers() {
        AtomicLong now = new AtomicLong(0);
        LogLimiter l = new LogLimiter(Duration.ofSeconds(60), now::get);
        assertThat(l.admit("a")).isEmpty();
        assertThat(l.admit("b")).as("another key").isEmpty();
        for (int i = 0; i < 41; i++) {
            assertThat(l.admit("a")).isNull();
        }
        now.set(61_000_000_000L);
        assertThat(l.admit("a")).isEqualTo("; 41 more like this in the last 61 s not logged");
        assertThat(l.admit("a")).isNull();
    }

    @Test
    void theMapStaysBounded() {
        LogLimiter l = new LogLimiter(Duration.ofSeconds(60));
        for (int i = 0; i < 3 * LogLimiter.MAX_KEYS; i++) {
            assertThat(l.admit("k" + i)).isEmpty();
        }
        // the oldest keys were forgotten: they log again at once
        assertThat(l.admit("k0")).isEmpty();
    }
}
