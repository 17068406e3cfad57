package io.ditserve.server.sampling;

import io.ditserve.backend.Sampler;
import io.ditserve.backend.GuidanceMode;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.server.TestPaths;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/** The DPM-Solver++(2M) step's own rules (its parity with the reference is SamplerParityTest's). */
class DpmSolverStepTest {
    private static float[] gaussian(int len, long seed) {
        SplittableRandom r = new SplittableRandom(seed);
        float[] v = new float[len];
        for (int k = 0; k < len; k++) {
            v[k] = (float) r.nextGaussian();
        }
        return v;
    }

    @Test
    void stepsMustRunInOrderFromTheFirst() throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture("pixel-tiny"));
        NoiseSchedule s = NoiseSchedule.respaced(5);
        SamplingStep step = new SamplingStep(spec, s, Sampler.DPMPP_2M, 0f, 1f, GuidanceMode.ALL, 1);
        int len = spec.inChannels() * spec.inputSize() * spec.inputSize();
        float[] x = gaussian(len, 1);
        float[] out = gaussian(len, 2);
        float[] x0 = new float[len];
        float[] next = new float[len];
        assertThat(step.needsNoise(3)).isFalse();
        assertThatThrownBy(() -> step.apply(3, x, out, null, x0, next)).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("in order");
        step.apply(4, x, out, null, x0, next);
        assertThatThrownBy(() -> step.apply(2, x, out, null, x0, next)).isInstanceOf(IllegalStateException.class);
        step.apply(3, x, out, null, x0, next);
        // a new generation may start over from the first step
        step.apply(4, x, out, null, x0, next);
    }

    @Test
    void firstOrderStepIsDdimAndTheFinalStepIsTheDataPrediction() throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture("pixel-tiny"));
        NoiseSchedule s = NoiseSchedule.respaced(10);
        int len = spec.inChannels() * spec.inputSize() * spec.inputSize();
        float[] x = gaussian(len, 3);
        float[] out = gaussian(len, 4);
        float[] x0 = new float[len];
        float[] dpm = new float[len];
        float[] ddimX0 = new float[len];
        float[] ddim = new float[len];
        // the first step: first-order DPM-Solver++ equals DDIM at eta 0 up to float rounding
        Samplers.dpmpp2mStep(s, 9, x, out, null, 1, 1, 1, len, x0, dpm);
        Samplers.ddimStep(s, 9, 0f, x, out, 1, 1, 1, len, null, ddimX0, ddim);
        assertThat(x0).containsExactly(ddimX0);
        for (int k = 0; k < len; k++) {
            assertThat((double) dpm[k]).isCloseTo(ddim[k], org.assertj.core.data.Offset.offset(1e-5 * (1 + Math.abs(ddim[k]))));
        }
        // the final step to σ = 0 returns the data prediction itself, whatever the previous one was
        Samplers.dpmpp2mStep(s, 0, x, out, gaussian(len, 5), 1, 1, 1, len, x0, dpm);
        assertThat(dpm).containsExactly(x0);
        assertThat(Samplers.dpmpp2mCoefficients(s, 0)).containsExactly(0.0, 1.0, 0.0);
        assertThat(Samplers.dpmpp2mCoefficients(s, 9)[2]).isZero();
        assertThat(Samplers.dpmpp2mCoefficients(s, 5)[2]).isPositive();
    }
}
