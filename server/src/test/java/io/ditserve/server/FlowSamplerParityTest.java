package io.ditserve.server;

import static io.ditserve.server.SamplerParityTest.assertClose;
import static io.ditserve.server.SamplerParityTest.slice;
import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.EmulatedCuda;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.sampling.Guidance;
import io.ditserve.server.sampling.Solver;
import io.ditserve.server.sampling.SolverSettings;
import io.ditserve.server.sampling.Solvers;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The flow families' trajectories (tools/fixtures/sit-tiny and repa-tiny, made by tools/make_fixtures.py from the
 * PyTorch reference tools/dit/flow.py) reproduced by the engine's own {@link Solver}s on every backend (java, onnx,
 * and cuda's host code on its CPU emulation of the kernels; the GPU run is tools/gpu/run_cuda_checks.sh): each
 * evaluation is one forward pass of the generation's rows (images, then their unconditional twins on guided steps),
 * and each step, started from the reference's x, must give the reference's data estimate and next x within 1e-4
 * (relative); the whole trajectory from x_T alone within 1e-3. Euler, Heun, Euler–Maruyama (its noise given) and
 * DPM-Solver++(2M), with guidance on the first three channels (SiT) and on all (REPA), with a guidance interval and
 * a timestep shift.
 */
class FlowSamplerParityTest {
    static final double STEP_TOL = 1e-4;
    static final double END_TOL = 1e-3;
    /** The cuda backend on its CPU emulation ({@link EmulatedCuda}): host code and the kernels' Java mirror. */
    static final String CUDA_EMULATED = "cuda-emulated";

    static Stream<Arguments> trajectories() throws Exception {
        List<Arguments> out = new ArrayList<>();
        for (String backend : List.of("java", "onnx", CUDA_EMULATED)) {
            for (String model : List.of("sit-tiny", "repa-tiny")) {
                try (Safetensors st = Safetensors.open(TestPaths.fixture(model).resolve("cases.safetensors"))) {
                    JsonNode meta = new ObjectMapper().readTree(st.metadata().get("trajectories"));
                    for (Map.Entry<String, JsonNode> e : meta.properties()) {
                        out.add(Arguments.of(backend, model, e.getKey()));
                    }
                }
            }
        }
        return out.stream();
    }

    static Sampler sampler(String name) {
        return Arrays.stream(Sampler.values()).filter(s -> s.configName().equals(name)).findFirst()
                .orElseThrow(() -> new IllegalArgumentException("unknown sampler " + name));
    }

    static SolverSettings settings(JsonNode m) {
        JsonNode mode = m.has("guidance_mode") ? m.get("guidance_mode") : m.get("mode");
        JsonNode interval = m.get("interval") != null ? m.get("interval") : m.get("guidance_interval");
        ModelSpec.GuidanceInterval gi = interval == null || interval.isNull() ? null
                : new ModelSpec.GuidanceInterval(interval.get(0).asDouble(), interval.get(1).asDouble());
        JsonNode shift = m.has("shift") ? m.get("shift") : m.get("timestep_shift");
        return new SolverSettings(sampler(m.get("sampler").asText()), m.get("steps").asInt(), 0f,
                (float) m.get("guidance").asDouble(),
                mode.asText().equals("all") ? GuidanceMode.ALL : GuidanceMode.FIRST_THREE, gi,
                shift == null || shift.isNull() ? 1.0 : shift.asDouble());
    }

    @ParameterizedTest(name = "{0} {1} {2}")
    @MethodSource("trajectories")
    void solversReproduceTheReferenceTrajectory(String backendName, String modelName, String traj) throws Exception {
        Path dir = TestPaths.fixture(modelName);
        ModelSpec spec = ModelConfigs.load(dir);
        try (Safetensors st = Safetensors.open(dir.resolve("cases.safetensors"));
                Backend backend = backendName.equals(CUDA_EMULATED) ? EmulatedCuda.backend(spec, 4)
                        : new BackendRegistry().get(backendName).create(spec, BackendOptions.ofThreads(2))) {
            JsonNode m = new ObjectMapper().readTree(st.metadata().get("trajectories")).get(traj);
            String p = "traj." + traj + ".";
            Tensor xs = st.tensor(p + "x");
            Tensor x0s = st.tensor(p + "x0");
            Tensor noise = st.tensor(p + "noise");
            long[] labels = st.longs(p + "y");
            long[] guided = st.longs(p + "guided");
            SolverSettings settings = settings(m);
            int steps = settings.steps();
            int n = labels.length;
            int slice = n * (xs.stride0() / n);

            Solver solver = Solvers.create(spec, settings, n);
            float[] x = new float[slice];
            double worst = 0;
            for (int k = 0; k < steps; k++) {
                System.arraycopy(xs.data(), k * slice, x, 0, slice);
                float[][] r = step(backend, spec, solver, k, x, labels, slice(noise, k, slice), guided[k] != 0);
                worst = Math.max(worst, assertClose(r[0], slice(x0s, k, slice), STEP_TOL, traj + " x0 at step " + k));
                worst = Math.max(worst, assertClose(r[1], slice(xs, k + 1, slice), STEP_TOL,
                        traj + " x at step " + (k + 1)));
            }
            solver = Solvers.create(spec, settings, n);
            System.arraycopy(xs.data(), 0, x, 0, slice);
            for (int k = 0; k < steps; k++) {
                x = step(backend, spec, solver, k, x, labels, slice(noise, k, slice), guided[k] != 0)[1];
            }
            double end = assertClose(x, slice(xs, steps, slice), END_TOL, traj + " final sample");
            System.out.printf("flow parity %s %s %s: worst step error %.2e, end-to-end %.2e (relative)%n",
                    backendName, modelName, traj, worst, end);
        }
    }

    /** One step as the engine takes it: each evaluation a pass of the generation's rows, then the solver. */
    static float[][] step(Backend backend, ModelSpec spec, Solver solver, int k, float[] x, long[] labels,
            float[] noise, boolean expectGuided) throws Exception {
        int n = labels.length;
        int s = spec.inputSize();
        int per = x.length / n;
        float[] x0 = new float[x.length];
        float[] next = new float[x.length];
        boolean done = false;
        while (!done) {
            Solver.Evaluation e = solver.next(k, x);
            assertThat(e.guided()).as("step %d guided", k).isEqualTo(expectGuided);
            int rows = Guidance.samples(n, e.guided());
            Tensor in = Tensor.zeros(rows, spec.inChannels(), s, s);
            float[] t = new float[rows];
            int[] y = new int[rows];
            for (int r = 0; r < rows; r++) {
                System.arraycopy(e.input(), (r % n) * per, in.data(), r * per, per);
                t[r] = e.time();
                y[r] = r < n ? (int) labels[r] : spec.nullClass();
            }
            Tensor out = Tensor.zeros(rows, spec.outChannels(), s, s);
            backend.forward(ForwardBatch.ofLabels(in, t, y), out, Cancellation.NEVER);
            done = solver.consume(k, x, out.data(), noise, x0, next);
        }
        return new float[][] {x0, next};
    }
}
