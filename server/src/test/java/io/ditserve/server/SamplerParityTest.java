package io.ditserve.server;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import io.ditserve.backend.GuidanceMode;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.server.engine.StepCaching;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.sampling.NoiseSchedule;
import io.ditserve.backend.Sampler;
import io.ditserve.server.sampling.Samplers;
import io.ditserve.server.sampling.SamplingStep;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The Java samplers (on the java backend) reproduce the PyTorch reference trajectories step by step: for every
 * fixture trajectory (DDIM eta 0 and 0.5, DDPM, DPM-Solver++(2M); no guidance, guidance on the first three channels
 * and on all), starting each step from the reference x, the clean-image estimate and the next x match the reference
 * within 1e-4 of the tensor's largest magnitude. Then the whole trajectory, run from x_T alone, ends within 1e-3.
 * Trajectories with a {@code cache_interval} run with step caching (docs/STEP_CACHE.md) as the engine schedules it:
 * each row keeps its residual of blocks 1..depth−1 from the last step that ran them.
 * One {@link SamplingStep} serves each pass over a trajectory, as one serves a generation in the engine, so that a
 * stateful sampler (DPM-Solver++ keeps the previous data prediction) is checked with its state.
 */
class SamplerParityTest {
    static final double STEP_TOL = 1e-4;
    static final double END_TOL = 1e-3;

    static Stream<Arguments> trajectories() throws Exception {
        List<Arguments> out = new ArrayList<>();
        for (String model : List.of("pixel-tiny", "latent-tiny")) {
            try (Safetensors st = Safetensors.open(TestPaths.fixture(model).resolve("cases.safetensors"))) {
                JsonNode meta = new ObjectMapper().readTree(st.metadata().get("trajectories"));
                for (Map.Entry<String, JsonNode> e : meta.properties()) {
                    out.add(Arguments.of(model, e.getKey()));
                }
            }
        }
        return out.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("trajectories")
    void javaSamplerReproducesReferenceTrajectory(String modelName, String traj) throws Exception {
        Path dir = TestPaths.fixture(modelName);
        ModelSpec spec = ModelConfigs.load(dir);
        try (Safetensors st = Safetensors.open(dir.resolve("cases.safetensors"));
                Backend backend = new BackendRegistry().get("java").create(spec, BackendOptions.ofThreads(2))) {
            JsonNode m = new ObjectMapper().readTree(st.metadata().get("trajectories")).get(traj);
            String p = "traj." + traj + ".";
            Tensor xs = st.tensor(p + "x");       // [S+1, n, C, H, W]
            Tensor x0s = st.tensor(p + "x0");     // [S, n, C, H, W]
            Tensor noise = st.tensor(p + "noise"); // [S, n, C, H, W], sampling order
            long[] labels = st.longs(p + "y");
            long[] ts = st.longs(p + "t");
            int steps = m.get("steps").asInt();
            float eta = (float) m.get("eta").asDouble();
            float guidance = (float) m.get("guidance").asDouble();
            GuidanceMode mode = m.get("guidance_mode").asText().equals("all")
                    ? GuidanceMode.ALL : GuidanceMode.FIRST_THREE;
            Sampler sampler = switch (m.get("sampler").asText()) {
                case "ddim" -> Sampler.DDIM;
                case "ddpm" -> Sampler.DDPM;
                case "dpmpp_2m" -> Sampler.DPMPP_2M;
                default -> throw new IllegalArgumentException("unknown sampler in " + traj + ": " + m.get("sampler"));
            };
            int n = labels.length;
            int per = xs.stride0() / n;
            int hw = spec.inputSize() * spec.inputSize();
            int slice = n * per;
            NoiseSchedule sched = NoiseSchedule.respaced(steps);
            StepCaching caching = m.has("cache_interval") ? new StepCaching(m.get("cache_interval").asInt())
                    : StepCaching.OFF;
            Stepper stepper = new Stepper(backend, spec, sched, labels,
                    new SamplingStep(spec, sched, sampler, eta, guidance, mode, n), caching);

            float[] x = new float[slice];
            double worstStep = 0;
            for (int k = 0; k < steps; k++) {
                int i = steps - 1 - k;
                assertThat(sched.timestep(i)).isEqualTo((int) ts[k]);
                System.arraycopy(xs.data(), k * slice, x, 0, slice);
                float[][] r = stepper.step(x, i, slice(noise, k, slice), hw);
                worstStep = Math.max(worstStep, assertClose(r[0], slice(x0s, k, slice), STEP_TOL,
                        traj + " x0 at step " + k));
                worstStep = Math.max(worstStep, assertClose(r[1], slice(xs, k + 1, slice), STEP_TOL,
                        traj + " x at step " + (k + 1)));
            }
            // the whole trajectory from x_T alone, with a fresh step (and sampler state)
            stepper = new Stepper(backend, spec, sched, labels,
                    new SamplingStep(spec, sched, sampler, eta, guidance, mode, n), caching);
            System.arraycopy(xs.data(), 0, x, 0, slice);
            for (int k = 0; k < steps; k++) {
                x = stepper.step(x, steps - 1 - k, slice(noise, k, slice), hw)[1];
            }
            double end = assertClose(x, slice(xs, steps, slice), END_TOL, traj + " final sample");
            System.out.printf("sampler parity %s %s: worst step error %.2e, end-to-end error %.2e (relative)%n",
                    modelName, traj, worstStep, end);
        }
    }

    /**
     * One step as the engine takes it: the generation's samples (images, then their unconditional twins) in one
     * forward pass, then the engine's own {@link SamplingStep} (guidance and the sampler update).
     */
    record Stepper(Backend backend, ModelSpec spec, NoiseSchedule sched, long[] labels, SamplingStep stepper,
            StepCaching caching, float[][] residuals) {
        Stepper(Backend backend, ModelSpec spec, NoiseSchedule sched, long[] labels, SamplingStep stepper,
                StepCaching caching) {
            this(backend, spec, sched, labels, stepper, caching,
                    new float[stepper.samples()][StepCache.residualLength(spec)]);
        }

        float[][] step(float[] x, int i, float[] noise, int hw) throws Exception {
            int n = labels.length;
            int batch = stepper.samples();
            int s = spec.inputSize();
            Tensor in = Tensor.zeros(batch, spec.inChannels(), s, s);
            System.arraycopy(x, 0, in.data(), 0, x.length);
            if (batch > n) {
                System.arraycopy(x, 0, in.data(), x.length, x.length);
            }
            float[] t = new float[batch];
            int[] y = new int[batch];
            for (int b = 0; b < batch; b++) {
                t[b] = sched.timestep(i);
                y[b] = b < n ? (int) labels[b] : spec.nullClass();
            }
            Tensor out = Tensor.zeros(batch, spec.outChannels(), s, s);
            StepCache.Use[] uses = new StepCache.Use[batch];
            java.util.Arrays.fill(uses, caching.use(sched.size() - 1 - i, sched.size()));
            backend.forward(new ForwardBatch(in, t, new Conditioning.ClassLabels(y), new StepCache(uses, residuals)), out, Cancellation.NEVER);
            float[] x0 = new float[x.length];
            float[] next = new float[x.length];
            stepper.apply(i, x, out.data(), noise, x0, next);
            return new float[][] {x0, next};
        }
    }

    static float[] slice(Tensor t, int k, int len) {
        float[] out = new float[len];
        System.arraycopy(t.data(), k * len, out, 0, len);
        return out;
    }

    /** Asserts the largest error relative to the largest reference magnitude is below tol; returns it. */
    static double assertClose(float[] got, float[] want, double tol, String what) {
        double maxAbs = 0;
        double maxErr = 0;
        for (int i = 0; i < want.length; i++) {
            maxAbs = Math.max(maxAbs, Math.abs(want[i]));
            maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
        }
        double rel = maxErr / Math.max(maxAbs, 1e-12);
        assertThat(rel).as(what + " (max err " + maxErr + ", max |ref| " + maxAbs + ")").isLessThan(tol);
        return rel;
    }
}
