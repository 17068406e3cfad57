package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.within;

import io.ditserve.server.sampling.NoiseSchedule;
import java.util.Arrays;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;

class NoiseScheduleTest {
    @Test
    void alphasCumprodMatchSpecReferenceValues() {
        double[] ac = NoiseSchedule.trainAlphasCumprod();
        assertThat(ac[0]).isCloseTo(0.9999, within(1e-12));
        assertThat(ac[499]).isCloseTo(0.0785872, within(5e-8));
        assertThat(ac[999] / 4.0358e-5).isCloseTo(1.0, within(1e-4));
    }

    @Test
    void respacingMatchesSpecExamples() {
        int[] r50 = NoiseSchedule.respace(50);
        assertThat(Arrays.copyOf(r50, 5)).containsExactly(0, 20, 41, 61, 82);
        assertThat(Arrays.copyOfRange(r50, 47, 50)).containsExactly(958, 979, 999);
        int[] r25 = NoiseSchedule.respace(25);
        assertThat(Arrays.copyOf(r25, 4)).containsExactly(0, 42, 83, 125);
        assertThat(Arrays.copyOfRange(r25, 22, 25)).containsExactly(916, 957, 999);
        int[] r250 = NoiseSchedule.respace(250);
        assertThat(Arrays.copyOf(r250, 3)).containsExactly(0, 4, 8);
        assertThat(Arrays.copyOfRange(r250, 248, 250)).containsExactly(995, 999);
        assertThat(NoiseSchedule.respace(1)).containsExactly(0);
        assertThat(NoiseSchedule.respace(1000)).isEqualTo(IntStream.range(0, 1000).toArray());
    }

    @Test
    void accumulatedRoundingDiffersFromDirectRoundingFor278Counts() {
        long differ = IntStream.rangeClosed(2, 1000).filter(n -> {
            double stride = 999.0 / (n - 1);
            int[] direct = IntStream.range(0, n).map(k -> (int) Math.rint(k * stride)).toArray();
            return !Arrays.equals(direct, NoiseSchedule.respace(n));
        }).count();
        assertThat(differ).isEqualTo(278);
    }
}
