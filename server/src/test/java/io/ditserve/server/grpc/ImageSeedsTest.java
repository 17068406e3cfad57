package io.ditserve.server.grpc;

import static org.assertj.core.api.Assertions.assertThat;

import org.junit.jupiter.api.Test;

/**
 * The seeds of a multi-image request (issue 26 item 4): base + i in the unsigned 64-bit range without 0, which
 * means "random" on the wire; the count wraps from 2⁶⁴ − 1 to 1 (docs: RequestValidator.imageSeeds).
 */
class ImageSeedsTest {
    @Test
    void belowTheWrapTheSeedsAreBasePlusI() {
        assertThat(RequestValidator.imageSeeds(42, 3)).containsExactly(42, 43, 44);
        assertThat(RequestValidator.imageSeeds(Long.MAX_VALUE, 2)).containsExactly(Long.MAX_VALUE, Long.MIN_VALUE);
    }

    @Test
    void theLargestSeedWrapsToOneNeverToZero() {
        long max = -1L; // 2⁶⁴ − 1 as uint64
        assertThat(RequestValidator.imageSeeds(max, 3)).containsExactly(max, 1, 2);
        assertThat(RequestValidator.imageSeeds(max - 1, 3)).containsExactly(max - 1, max, 1);
        for (long base : new long[] {1, -1L, -2L, -16L, Long.MIN_VALUE}) {
            for (long s : RequestValidator.imageSeeds(base, 16)) {
                assertThat(s).as("a seed of base %s", Long.toUnsignedString(base)).isNotZero();
            }
        }
    }
}
