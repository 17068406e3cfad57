package io.ditserve.server.security;

import static org.assertj.core.api.Assertions.assertThat;

import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The failure window of {@link AuthGuard} on a clock of the test's own. */
class AuthGuardTest {
    private static final long S = 1_000_000_000L;

    @Test
    void anAddressIsRefusedAfterTheLimitUntilItsOldestFailureLeavesTheWindow() {
        AtomicLong now = new AtomicLong(1000 * S);
        AuthGuard g = new AuthGuard(3, Duration.ofSeconds(60), now::get);
        g.failed("10.0.0.1", "x");
        now.addAndGet(10 * S);
        g.failed("10.0.0.1", "x");
        assertThat(g.refusedForSeconds("10.0.0.1")).isNull();
        g.failed("10.0.0.1", "x");
        assertThat(g.refusedForSeconds("10.0.0.1")).isEqualTo(50); // the first failure leaves the window in 50 s
        assertThat(g.refusedForSeconds("10.0.0.2")).as("another address").isNull();
        now.addAndGet(50 * S);
        assertThat(g.refusedForSeconds("10.0.0.1")).as("two failures left in the window").isNull();
        g.failed("10.0.0.1", "x");
        assertThat(g.refusedForSeconds("10.0.0.1")).isEqualTo(10);
    }

    @Test
    void zeroNeverRefuses() {
        AuthGuard g = new AuthGuard(0, Duration.ofSeconds(60));
        for (int i = 0; i < 100; i++) {
            g.failed("10.0.0.1", "x");
        }
        assertThat(g.refusedForSeconds("10.0.0.1")).isNull();
    }
}
