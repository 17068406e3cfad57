package io.ditserve.server.sampling;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.assertj.core.api.Assertions.within;

import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The flow solvers as parts, on a "network" whose output is known in closed form, so that each rule of
 * docs/MODEL_FAMILIES.md can be checked without a model: evaluation counts, where each evaluation happens, the
 * guidance interval, the last steps, the shifted grid. Trajectory parity with the PyTorch reference on real
 * networks is FlowSamplerParityTest's.
 */
class FlowSolverTest {
    private static final int C = 4;
    private static final int SIZE = 2;
    private static final int PER = C * SIZE * SIZE;

    static ModelSpec spec(ModelSpec.Process process) {
        return new ModelSpec(Path.of("/nowhere"), "flow", "", SIZE, 1, C, 8, 1, 1, 4.0, 10, false, List.of(),
                ModelSpec.Space.LATENT, GuidanceMode.ALL, new ModelSpec.Defaults(Sampler.EULER, 8, 1.0, 0.0),
                "repa", process, false);
    }

    /** Runs a solver to the end with a network output {@code v(input, time)}; returns the evaluations made. */
    static List<Solver.Evaluation> run(Solver solver, float[] x, Network net, float[] noise, float[][] x0s) {
        List<Solver.Evaluation> evals = new ArrayList<>();
        float[] x0 = new float[x.length];
        float[] next = new float[x.length];
        for (int step = 0; step < solver.steps(); step++) {
            boolean done = false;
            while (!done) {
                Solver.Evaluation e = solver.next(step, x);
                evals.add(new Solver.Evaluation(e.input().clone(), e.time(), e.guided()));
                int rows = Guidance.samples(1, e.guided());
                float[] out = new float[rows * PER];
                for (int r = 0; r < rows; r++) {
                    for (int k = 0; k < PER; k++) {
                        out[r * PER + k] = net.v(e.input()[k], e.time(), r == 1);
                    }
                }
                done = solver.consume(step, x, out, noise, x0, next);
            }
            if (x0s != null) {
                x0s[step] = x0.clone();
            }
            System.arraycopy(next, 0, x, 0, x.length);
        }
        return evals;
    }

    interface Network {
        float v(float x, float time, boolean unconditional);
    }

    private static SolverSettings settings(Sampler s, int steps, float guidance, ModelSpec.GuidanceInterval i,
            double shift) {
        return new SolverSettings(s, steps, 0f, guidance, GuidanceMode.ALL, i, shift);
    }

    @Test
    void eulerIsExactWhenTheVelocityIsConstant() {
        // REPA: dx/ds = v; with v = c everywhere, x(0) = x(1) − c whatever the grid
        for (Sampler s : List.of(Sampler.EULER, Sampler.HEUN)) {
            Solver solver = Solvers.create(spec(ModelSpec.Process.REPA), settings(s, 7, 1f, null, 3.0), 1);
            float[] x = new float[PER];
            java.util.Arrays.fill(x, 2f);
            run(solver, x, (v, t, u) -> 0.5f, null, null);
            for (float v : x) {
                assertThat(v).as(s.name()).isCloseTo(1.5f, within(1e-6f));
            }
        }
    }

    @Test
    void eachSamplerMakesItsNumberOfEvaluationsAtTheRightTimes() {
        ModelSpec sit = spec(ModelSpec.Process.SIT);
        int n = 5;
        List<Solver.Evaluation> euler = run(Solvers.create(sit, settings(Sampler.EULER, n, 1f, null, 1.0), 1),
                new float[PER], (v, t, u) -> v, null, null);
        List<Solver.Evaluation> heun = run(Solvers.create(sit, settings(Sampler.HEUN, n, 1f, null, 1.0), 1),
                new float[PER], (v, t, u) -> v, null, null);
        List<Solver.Evaluation> em = run(Solvers.create(sit, settings(Sampler.EULER_MARUYAMA, n, 1f, null, 1.0), 1),
                new float[PER], (v, t, u) -> v, new float[PER], null);
        assertThat(euler).hasSize(n);
        assertThat(heun).hasSize(2 * n - 1);
        assertThat(em).hasSize(n);
        assertThat(Solvers.evaluations(settings(Sampler.HEUN, n, 1f, null, 1.0))).isEqualTo(2 * n - 1);
        // SiT sees τ = 1 − s: Euler at s = 1, 0.8, …, 0.2; Heun adds the next point for each step but the last
        assertThat(euler.stream().map(Solver.Evaluation::time).toList())
                .containsExactly(0f, 0.2f, 0.4f, 0.6f, 0.8f);
        assertThat(heun.stream().map(Solver.Evaluation::time).toList())
                .containsExactly(0f, 0.2f, 0.2f, 0.4f, 0.4f, 0.6f, 0.6f, 0.8f, 0.8f);
        // Euler–Maruyama: linspace(1, 0.04, N) in s
        assertThat(em.getLast().time()).isCloseTo(0.96f, within(1e-6f)); // τ at s = 0.04
    }

    @Test
    void theGuidanceIntervalDecidesPerStepAndUnguidedStepsEvaluateTheConditionalHalfOnly() {
        // REPA (τ = s), interval [0, 0.5]: steps starting at s = 1, 0.75 unguided; 0.5, 0.25 guided
        ModelSpec repa = spec(ModelSpec.Process.REPA);
        Solver heun = Solvers.create(repa, settings(Sampler.HEUN, 4, 3f, new ModelSpec.GuidanceInterval(0, 0.5),
                1.0), 1);
        List<Solver.Evaluation> evals = run(heun, new float[PER], (v, t, u) -> u ? 1f : 2f, null, null);
        assertThat(evals.stream().map(Solver.Evaluation::guided).toList())
                .containsExactly(false, false, false, false, true, true, true);
        // the second evaluation of step 1 (s 0.75 → 0.5) runs at τ = 0.5 yet stays unguided: decided at the start
        assertThat(evals.get(3).time()).isEqualTo(0.5f);
    }

    @Test
    void guidanceCombinesTheHalvesOnTheGuidedChannels() {
        // v_c = 2, v_u = 1, scale 3: guided v = 1 + 3·(2 − 1) = 4; one Euler step of Δs = −1 moves x by −4
        Solver euler = Solvers.create(spec(ModelSpec.Process.REPA), settings(Sampler.EULER, 1, 3f, null, 1.0), 1);
        float[] x = new float[PER];
        run(euler, x, (v, t, u) -> u ? 1f : 2f, null, null);
        assertThat(x[0]).isEqualTo(-4f);
    }

    @Test
    void eulerMaruyamaDrawsNoNoiseOnItsLastStepAndEndsAtZero() {
        Solver em = Solvers.create(spec(ModelSpec.Process.REPA), settings(Sampler.EULER_MARUYAMA, 3, 1f, null,
                1.0), 1);
        assertThat(em.needsNoise(0)).isTrue();
        assertThat(em.needsNoise(1)).isTrue();
        assertThat(em.needsNoise(2)).isFalse();
        double[] grid = FlowGrid.of(Sampler.EULER_MARUYAMA, 3, 1.0);
        assertThat(grid).containsExactly(1.0, 0.52, 0.04, 0.0);
        // the noise enters with √(2s)·√|Δs| on stochastic steps only
        float[] x = new float[PER];
        float[] noise = new float[PER];
        java.util.Arrays.fill(noise, 1f);
        Solver one = Solvers.create(spec(ModelSpec.Process.REPA), settings(Sampler.EULER_MARUYAMA, 2, 1f, null,
                1.0), 1);
        float[][] x0s = new float[2][];
        run(one, x, (v, t, u) -> 0f, noise, x0s);
        // step 0 (s 1 → 0.04): F = x = 0, noise √2·√0.96; step 1 (0.04 → 0): F = x, x += F·(−0.04)
        float afterFirst = (float) (Math.sqrt(2.0) * Math.sqrt(0.96));
        assertThat(x[0]).isCloseTo(afterFirst * (1f - 0.04f), within(1e-6f));
    }

    @Test
    void theShiftedGridKeepsItsEndsAndMovesTheMiddleTowardNoise() {
        double[] plain = FlowGrid.of(Sampler.EULER, 4, 1.0);
        assertThat(plain).containsExactly(1.0, 0.75, 0.5, 0.25, 0.0);
        double[] shifted = FlowGrid.of(Sampler.EULER, 4, 3.0);
        assertThat(shifted[0]).isEqualTo(1.0);
        assertThat(shifted[4]).isEqualTo(0.0);
        assertThat(shifted[2]).isCloseTo(0.75, within(1e-12)); // 3·0.5 / (1 + 2·0.5)
        for (int i = 1; i < 4; i++) {
            assertThat(shifted[i]).isGreaterThan(plain[i]);
        }
    }

    @Test
    void sd3sFlowMatchGridIsDiffusersSchedulerShiftedTwice() {
        // docs/TEXT_MODELS.md: 28 steps, shift 3 (values computed from diffusers' formulas, tools/sd3/scheduler.py)
        double[] s = FlowGrid.of(Sampler.EULER, 28, 3.0, ModelSpec.Grid.FLOW_MATCH_EULER);
        assertThat(s).hasSize(29);
        assertThat(s[0]).isEqualTo(1.0);
        assertThat(s[1]).isCloseTo(0.98738, within(5e-6));
        assertThat(s[2]).isCloseTo(0.97411, within(5e-6));
        assertThat(s[25]).isCloseTo(0.19983, within(5e-6));
        assertThat(s[26]).isCloseTo(0.11091, within(5e-6));
        assertThat(s[27]).isCloseTo(0.008929, within(5e-7));
        assertThat(s[28]).isEqualTo(0.0);
        for (double v : s) {
            assertThat((double) (float) v).as("a float32 value, as diffusers' tensors hold").isEqualTo(v);
        }
    }

    @Test
    void dpmSolverOnAFlowStartsFirstOrderAndEndsOnTheDataEstimate() {
        // with a network that predicts the data exactly (x_data = 0.25 everywhere: REPA v = ε − x_data), any
        // consistent solver lands on x_data; DPM-Solver++'s data estimate is exact from the first step on
        Solver dpm = Solvers.create(spec(ModelSpec.Process.REPA), settings(Sampler.DPMPP_2M, 6, 1f, null, 1.0), 1);
        float[] x = new float[PER];
        java.util.Arrays.fill(x, 1.3f); // x_1 = ε = 1.3
        float[][] x0s = new float[6][];
        run(dpm, x, (v, t, u) -> {
            double s = t; // τ = s
            double eps = (v - (1 - s) * 0.25) / s;
            return (float) (eps - 0.25);
        }, null, x0s);
        for (float[] est : x0s) {
            assertThat(est[0]).isCloseTo(0.25f, within(1e-5f));
        }
        assertThat(x[0]).isCloseTo(0.25f, within(1e-5f));
    }

    @Test
    void aVpSamplerOnAFlowModelIsRefusedNamingTheSamplersItTakes() {
        assertThatThrownBy(() -> Solvers.create(spec(ModelSpec.Process.REPA), settings(Sampler.DDIM, 4, 1f, null,
                1.0), 1)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("sampler ddim cannot sample model flow")
                .hasMessageContaining("[dpmpp_2m, euler, heun, euler_maruyama]");
    }
}
