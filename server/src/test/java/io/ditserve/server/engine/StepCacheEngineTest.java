package io.ditserve.server.engine;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.TestPaths;
import io.ditserve.server.engine.ComputeLoopTest.Collector;
import io.ditserve.server.engine.ComputeLoopTest.Recorder;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.model.LoadedModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * Step caching in the engine (docs/STEP_CACHE.md): a cached generation follows the PyTorch reference's cached
 * trajectory, keeps its residuals per sample row so that it gives the same bytes alone and in passes shared with
 * plain generations and with generations cached at other intervals, and the passes really do mix rows that run the
 * cached span with rows that skip it.
 */
class StepCacheEngineTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void close() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    private Engine engine(LoadedModel m) {
        Engine e = new Engine(new EngineConfig(16, 8, 5, TiledDecoding.Tiling.NEVER), EngineObserver.NONE, List.of(m));
        closers.add(e);
        e.start();
        return e;
    }

    private LoadedModel model(String name) throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture(name));
        Recorder r = new Recorder(new BackendRegistry().get("java").create(spec, BackendOptions.ofThreads(2)));
        closers.add(r);
        return new LoadedModel(r.model(), r, 0);
    }

    private static GenerationPlan plan(LoadedModel m, int label, long[] seeds, int steps, Sampler sampler,
            float guidance, GuidanceMode mode, float[] noise, int interval) {
        return new GenerationPlan(m, label, seeds, steps, sampler, 0f, guidance, mode, 0, PreviewDecoder.LINEAR,
                Set.of(OutputFormat.TENSOR), noise, interval == 0 ? StepCaching.OFF : new StepCaching(interval));
    }

    /**
     * The two images of each cached fixture trajectory (tools/make_fixtures.py, interval 3 over 8 steps), submitted
     * as two one-image generations from the reference x_T: the final samples match PyTorch's within 1e-3 of their
     * largest magnitude (the sampler parity test's end-to-end tolerance).
     */
    @ParameterizedTest
    @CsvSource({"pixel-tiny, ddim_cache3_cfg_all", "latent-tiny, dpmpp_2m_cache3_cfg_first3"})
    void aCachedGenerationFollowsTheReferenceTrajectory(String name, String traj) throws Exception {
        LoadedModel m = model(name);
        Engine e = engine(m);
        try (Safetensors st = Safetensors.open(TestPaths.fixture(name).resolve("cases.safetensors"))) {
            String p = "traj." + traj + ".";
            Tensor xs = st.tensor(p + "x");
            long[] labels = st.longs(p + "y");
            int per = m.spec().inChannels() * m.spec().inputSize() * m.spec().inputSize();
            int steps = xs.dim(0) - 1;
            Sampler sampler = traj.startsWith("ddim") ? Sampler.DDIM : Sampler.DPMPP_2M;
            GuidanceMode mode = traj.endsWith("all") ? GuidanceMode.ALL : GuidanceMode.FIRST_THREE;
            List<Collector> runs = new ArrayList<>();
            for (int b = 0; b < labels.length; b++) {
                Collector c = new Collector();
                float[] noise = Arrays.copyOfRange(xs.data(), b * per, (b + 1) * per);
                e.submit(plan(m, (int) labels[b], new long[] {b + 1}, steps, sampler, 4f, mode, noise, 3), c);
                runs.add(c);
            }
            for (int b = 0; b < labels.length; b++) {
                assertThat(runs.get(b).await()).isNull();
                float[] got = runs.get(b).results().getFirst().sample().data();
                int off = (steps * labels.length + b) * per;
                float[] want = Arrays.copyOfRange(xs.data(), off, off + per);
                double maxAbs = 0;
                double maxErr = 0;
                for (int i = 0; i < per; i++) {
                    maxAbs = Math.max(maxAbs, Math.abs(want[i]));
                    maxErr = Math.max(maxErr, Math.abs(got[i] - want[i]));
                }
                assertThat(maxErr / maxAbs).as("%s image %d", traj, b).isLessThan(1e-3);
            }
        }
    }

    @Test
    void aCachedGenerationGivesTheSameBytesAloneAndAmongPlainAndOtherCachedOnes() throws Exception {
        LoadedModel m = model("latent-tiny");
        Recorder recorder = (Recorder) m.backend();
        Engine e = engine(m);
        GenerationPlan target = plan(m, 3, new long[] {11, 12}, 9, Sampler.DDIM, 4f, GuidanceMode.FIRST_THREE,
                null, 2);
        Collector alone = new Collector();
        e.submit(target, alone);
        assertThat(alone.await()).isNull();
        recorder.passes.clear();

        List<Collector> others = new ArrayList<>();
        for (int k = 0; k < 6; k++) {
            Collector o = new Collector();
            long[] seeds = Arrays.copyOf(new long[] {k, k + 50}, 1 + k % 2);
            e.submit(plan(m, k, seeds, 12 + k, k % 2 == 0 ? Sampler.DDIM : Sampler.DPMPP_2M, k % 3 == 0 ? 1f : 2f,
                    GuidanceMode.ALL, null, k % 3), o); // intervals 0 (plain), 1 and 2
            others.add(o);
        }
        for (Collector o : others) {
            ComputeLoopTest.awaitStep(o);
        }
        Collector batched = new Collector();
        e.submit(target, batched);
        assertThat(batched.await()).isNull();
        for (int i = 0; i < 2; i++) {
            assertThat(batched.results().get(i).sample().data()).as("image %d", i)
                    .containsExactly(alone.results().get(i).sample().data());
        }
        for (Collector o : others) {
            assertThat(o.await()).isNull();
        }
        List<ComputeLoopTest.Pass> passes;
        synchronized (recorder.passes) {
            passes = new ArrayList<>(recorder.passes);
        }
        assertThat(passes).as("a pass with rows that skip the cached span beside rows that run it")
                .anySatisfy(p -> {
                    assertThat(p.uses()).isNotNull();
                    Set<StepCache.Use> kinds = EnumSet.noneOf(StepCache.Use.class);
                    kinds.addAll(Arrays.asList(p.uses()));
                    assertThat(kinds).contains(StepCache.Use.REUSE).hasSizeGreaterThan(1);
                });
    }

    @Test
    void theScheduleRunsEveryBlockAtTheFirstEveryKthAndTheLastStep() {
        StepCaching k3 = new StepCaching(3);
        StepCache.Use[] uses = new StepCache.Use[8];
        for (int s = 0; s < 8; s++) {
            uses[s] = k3.use(s, 8);
        }
        assertThat(uses).containsExactly(StepCache.Use.STORE, StepCache.Use.REUSE, StepCache.Use.REUSE,
                StepCache.Use.STORE, StepCache.Use.REUSE, StepCache.Use.REUSE, StepCache.Use.STORE,
                StepCache.Use.RUN);
        assertThat(k3.blockEvaluations(8, 6)).isEqualTo(4 * 6 + 4);
        assertThat(StepCaching.OFF.blockEvaluations(8, 6)).isEqualTo(48);
        assertThat(new StepCaching(1).blockEvaluations(8, 6)).isEqualTo(48);
        assertThat(StepCaching.OFF.use(3, 8)).isEqualTo(StepCache.Use.RUN);
    }
}
