package io.ditserve.server.engine;

import io.ditserve.backend.GuidanceMode;
import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.TestPaths;
import io.ditserve.server.engine.ComputeLoopTest.Collector;
import io.ditserve.server.engine.ComputeLoopTest.Recorder;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.backend.Sampler;
import io.ditserve.server.sampling.Samplers;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * DPM-Solver++(2M) keeps per-generation state (the previous step's data prediction) in the generation's own
 * SamplingStep: a DPM++ generation gives the same bytes alone and in passes shared with other DPM++ generations
 * (other labels, step counts, guidance) and with DDIM and DDPM generations.
 */
class DpmSolverEngineTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void close() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    private static GenerationPlan plan(LoadedModel m, int label, long[] seeds, int steps, Sampler sampler, float eta,
            float guidance, GuidanceMode mode) {
        return new GenerationPlan(m, label, seeds, steps, sampler, eta, guidance, mode, 0, PreviewDecoder.LINEAR,
                Set.of(OutputFormat.TENSOR), null);
    }

    @Test
    void dpmSolverGenerationGivesTheSameBytesAloneAndAmongOthers() throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture("latent-tiny"));
        Recorder r = new Recorder(new BackendRegistry().get("java").create(spec, BackendOptions.ofThreads(2)));
        closers.add(r);
        LoadedModel m = new LoadedModel(r.model(), r, 0);
        Engine e = new Engine(new EngineConfig(16, 8, 5, TiledDecoding.Tiling.NEVER), EngineObserver.NONE, List.of(m));
        closers.add(e);
        e.start();
        GenerationPlan target = plan(m, 3, new long[] {11, 12}, 8, Sampler.DPMPP_2M, 0f, 4f,
                GuidanceMode.FIRST_THREE);
        Collector alone = new Collector();
        e.submit(target, alone);
        assertThat(alone.await()).isNull();

        // the target's twin with another label starts in the same tick as the target below, so the two DPM++
        // states advance through the very same passes; the others are at other steps, samplers and guidance
        List<Collector> others = new ArrayList<>();
        for (int k = 0; k < 8; k++) {
            Collector o = new Collector();
            long[] seeds = java.util.Arrays.copyOf(new long[] {k, k + 50, k + 99}, 1 + k % 3);
            Sampler s = switch (k % 3) {
                case 0 -> Sampler.DPMPP_2M;
                case 1 -> Sampler.DDIM;
                default -> Sampler.DDPM;
            };
            e.submit(plan(m, k, seeds, 20 + k, s, k == 4 ? 0.5f : 0f, k % 4 == 0 ? 1f : 1.5f + k,
                    GuidanceMode.ALL), o);
            others.add(o);
        }
        for (Collector o : others) {
            ComputeLoopTest.awaitStep(o);
        }
        Collector twin = new Collector();
        Collector batched = new Collector();
        e.submit(plan(m, 5, new long[] {11, 12}, 8, Sampler.DPMPP_2M, 0f, 4f, GuidanceMode.FIRST_THREE),
                twin);
        e.submit(target, batched);
        assertThat(batched.await()).isNull();
        assertThat(twin.await()).isNull();
        assertThat(others.stream().filter(o -> o.end.isDone()).count()).as("others still running").isLessThan(8);
        for (int i = 0; i < 2; i++) {
            float[] got = batched.results().get(i).sample().data();
            float[] want = alone.results().get(i).sample().data();
            assertThat(got).as("image " + i + " byte-identical alone and among 10 generations").containsExactly(want);
            assertThat(twin.results().get(i).sample().data()).as("another label gives another image " + i)
                    .isNotEqualTo(want);
        }
        for (Collector o : others) {
            assertThat(o.await()).isNull();
        }
    }
}
