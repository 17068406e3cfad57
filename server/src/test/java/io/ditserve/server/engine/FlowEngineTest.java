package io.ditserve.server.engine;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.GuidanceMode;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.TestPaths;
import io.ditserve.server.engine.ComputeLoopTest.Collector;
import io.ditserve.server.engine.ComputeLoopTest.Recorder;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.model.LoadedModel;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.EnumSource;

/**
 * The engine batches model evaluations, not steps: each flow solver's generation gives the same bytes as the very
 * first request of a fresh engine and later among other generations with other solvers, step counts, guidance,
 * guidance intervals and shifts (java: byte-identical); and its passes are what the solver says: Heun's second
 * evaluation is a pass of its own, an unguided step evaluates the conditional half only.
 */
class FlowEngineTest {
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void close() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    private static GenerationPlan plan(LoadedModel m, int label, long[] seeds, int steps, Sampler sampler,
            float guidance, ModelSpec.GuidanceInterval interval, double shift) {
        return new GenerationPlan(m, label, seeds, steps, sampler, 0f, guidance, GuidanceMode.ALL, 0,
                PreviewDecoder.LINEAR, Set.of(OutputFormat.TENSOR), null, StepCaching.OFF, interval, shift);
    }

    private record Setup(Recorder recorder, LoadedModel model, Engine engine) {}

    private Setup setup(int maxBatch) throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture("repa-tiny"));
        Recorder r = new Recorder(new BackendRegistry().get("java").create(spec, BackendOptions.ofThreads(2)));
        closers.add(r);
        LoadedModel m = new LoadedModel(r.model(), r, 0);
        Engine e = new Engine(new EngineConfig(16, 8, maxBatch, TiledDecoding.Tiling.NEVER), EngineObserver.NONE,
                List.of(m));
        closers.add(e);
        e.start();
        return new Setup(r, m, e);
    }

    @ParameterizedTest
    @EnumSource(value = Sampler.class, names = {"EULER", "HEUN", "EULER_MARUYAMA", "DPMPP_2M"})
    void aFlowGenerationGivesTheSameBytesFirstAloneAndAmongOthers(Sampler sampler) throws Exception {
        Setup s = setup(5);
        GenerationPlan target = plan(s.model(), 3, new long[] {11, 12}, 6, sampler, 3f,
                new ModelSpec.GuidanceInterval(0.0, 0.7), 2.0);
        Collector alone = new Collector();
        s.engine().submit(target, alone); // the first request of a fresh engine
        assertThat(alone.await()).isNull();
        List<Collector> others = new ArrayList<>();
        Sampler[] kinds = {Sampler.EULER, Sampler.HEUN, Sampler.EULER_MARUYAMA, Sampler.DPMPP_2M};
        for (int k = 0; k < 8; k++) {
            Collector o = new Collector();
            long[] seeds = java.util.Arrays.copyOf(new long[] {k, k + 50, k + 99}, 1 + k % 3);
            s.engine().submit(plan(s.model(), k, seeds, 12 + k, kinds[k % 4], k % 3 == 0 ? 1f : 1.5f + k,
                    k % 2 == 0 ? null : new ModelSpec.GuidanceInterval(0.2, 0.9), k % 4 == 1 ? 3.0 : 1.0), o);
            others.add(o);
        }
        for (Collector o : others) {
            ComputeLoopTest.awaitStep(o);
        }
        Collector batched = new Collector();
        s.engine().submit(target, batched);
        assertThat(batched.await()).isNull();
        assertThat(others.stream().filter(o -> o.end.isDone()).count()).as("others still running").isLessThan(8);
        for (int i = 0; i < 2; i++) {
            assertThat(batched.results().get(i).sample().data())
                    .as("%s image %d byte-identical first alone and among 9 generations", sampler, i)
                    .containsExactly(alone.results().get(i).sample().data());
        }
        for (Collector o : others) {
            assertThat(o.await()).isNull();
        }
    }

    @Test
    void heunsSecondEvaluationIsAPassOfItsOwnAndUnguidedStepsRunTheConditionalHalfOnly() throws Exception {
        Setup s = setup(64);
        // REPA: τ = s; 4 steps at s = 1, 0.75, 0.5, 0.25; interval [0, 0.6] guides the last two steps
        GenerationPlan p = plan(s.model(), 2, new long[] {5}, 4, Sampler.HEUN, 4f,
                new ModelSpec.GuidanceInterval(0.0, 0.6), 1.0);
        Collector c = new Collector();
        s.engine().submit(p, c);
        assertThat(c.await()).isNull();
        List<ComputeLoopTest.Pass> passes = s.recorder().passes;
        assertThat(passes).hasSize(7); // 2·4 − 1 evaluations, one pass each (alone in the engine)
        assertThat(passes.stream().map(x -> x.y().length).toList()).containsExactly(1, 1, 1, 1, 2, 2, 2);
        assertThat(passes.stream().map(x -> x.t()[0]).toList())
                .containsExactly(1f, 0.75f, 0.75f, 0.5f, 0.5f, 0.25f, 0.25f);
        GenerationEvent.Accepted a = c.events.stream().filter(e -> e instanceof GenerationEvent.Accepted)
                .map(e -> (GenerationEvent.Accepted) e).findFirst().orElseThrow();
        assertThat(a.evaluations()).isEqualTo(7);
        assertThat(a.times()).containsExactly(1f, 0.75f, 0.5f, 0.25f);
        List<Float> progressTimes = c.events.stream().filter(e -> e instanceof GenerationEvent.Progress)
                .map(e -> ((GenerationEvent.Progress) e).time()).toList();
        assertThat(progressTimes).containsExactly(1f, 0.75f, 0.5f, 0.25f);
    }
}
