package io.ditserve.server.engine;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import io.ditserve.backend.GuidanceMode;
import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.TestPaths;
import io.ditserve.server.model.BackendRegistry;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.backend.Sampler;
import io.ditserve.server.sampling.Samplers;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The compute loop's batching rules, observed at the backend: what every forward pass holds. The backend is the
 * real java backend behind a recorder (and, for fault tests, a trap that throws on one label).
 */
class ComputeLoopTest {
    static final int POISON = 9;
    private final List<AutoCloseable> closers = new ArrayList<>();

    @AfterEach
    void close() throws Exception {
        for (int i = closers.size() - 1; i >= 0; i--) {
            closers.get(i).close();
        }
    }

    /** One forward call: its labels and timesteps, in row order, and each row's step-cache use (null: plain). */
    record Pass(int[] y, float[] t, StepCache.Use[] uses) {
        Pass(int[] y, float[] t) {
            this(y, t, null);
        }
    }

    /** A real backend behind a test's forward (name, model and close are the real one's). */
    abstract static class Wrapped implements Backend {
        final Backend real;

        Wrapped(Backend real) {
            this.real = real;
        }

        @Override
        public String name() {
            return "java";
        }

        @Override
        public ModelSpec model() {
            return real.model();
        }

        @Override
        public boolean supportsStepCache() {
            return real.supportsStepCache();
        }

        @Override
        public void close() {
            real.close();
        }
    }

    /** The java backend, recording each pass; throws a RuntimeException for passes holding the poison label. */
    static final class Recorder extends Wrapped {
        final List<Pass> passes = Collections.synchronizedList(new ArrayList<>());

        Recorder(Backend real) {
            super(real);
        }

        @Override
        public void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
            StepCache cache = batch.cache();
            int[] y = batch.labels();
            float[] t = batch.time();
            StepCache.Use[] uses = null;
            if (cache != null) {
                uses = new StepCache.Use[cache.size()];
                for (int i = 0; i < uses.length; i++) {
                    uses[i] = cache.use(i);
                }
            }
            passes.add(new Pass(y.clone(), t.clone(), uses));
            for (int label : y) {
                if (label == POISON) {
                    throw new IllegalStateException("simulated kernel bug");
                }
            }
            real.forward(batch, out, cancel);
        }

    }

    /** Collects events; completes a future when the generation ends; a test can wait for a number of steps. */
    static final class Collector implements GenerationListener {
        final List<GenerationEvent> events = Collections.synchronizedList(new ArrayList<>());
        final CompletableFuture<Failure> end = new CompletableFuture<>();
        volatile int steps;

        @Override
        public void onEvent(GenerationEvent event) {
            events.add(event);
            if (event instanceof GenerationEvent.Progress p) {
                synchronized (this) {
                    steps = p.step();
                    notifyAll();
                }
            }
        }

        @Override
        public void onCompleted() {
            end.complete(null);
            synchronized (this) {
                notifyAll();
            }
        }

        @Override
        public void onFailed(Failure failure) {
            end.complete(failure);
            synchronized (this) {
                notifyAll();
            }
        }

        /** Waits until the generation has completed {@code n} steps; fails if it ended first or took a minute. */
        synchronized void awaitSteps(int n) throws Exception {
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
            while (steps < n) {
                if (end.isDone()) {
                    throw new AssertionError("ended after " + steps + " of " + n + " steps: " + end.get());
                }
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    throw new AssertionError(steps + " of " + n + " steps within 60 s");
                }
                wait(waitMs);
            }
        }

        Failure await() throws Exception {
            return end.get(60, TimeUnit.SECONDS);
        }

        List<GenerationEvent.Result> results() {
            synchronized (events) {
                return events.stream().filter(e -> e instanceof GenerationEvent.Result)
                        .map(e -> (GenerationEvent.Result) e).toList();
            }
        }
    }

    /** Waits until the generation has completed a step; fails if it ended first or took a minute. */
    static void awaitStep(Collector c) throws Exception {
        c.awaitSteps(1);
    }

    private Recorder recorder(String model) throws Exception {
        return recorder(model, "java");
    }

    private Recorder recorder(String model, String backend) throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture(model));
        Recorder r = new Recorder(new BackendRegistry().get(backend).create(spec, BackendOptions.ofThreads(2)));
        closers.add(r);
        return r;
    }

    private Engine engine(Recorder backend, int maxActive, int maxBatch) {
        LoadedModel m = new LoadedModel(backend.model(), backend, 0);
        Engine e = new Engine(new EngineConfig(maxActive, 8, maxBatch, TiledDecoding.Tiling.NEVER), EngineObserver.NONE,
                List.of(m));
        closers.add(e);
        return e;
    }

    /** A started engine for one model (max_active 4, max_batch 8), closed after the test. */
    private Engine started(LoadedModel m) {
        Engine e = new Engine(new EngineConfig(4, 4, 8, TiledDecoding.Tiling.NEVER), EngineObserver.NONE, List.of(m));
        closers.add(e);
        return e.start();
    }

    private static GenerationPlan plan(LoadedModel m, int label, int images, int steps, float guidance) {
        long[] seeds = new long[images];
        for (int i = 0; i < images; i++) {
            seeds[i] = 100 + label * 10 + i;
        }
        return new GenerationPlan(m, label, seeds, steps, Sampler.DDIM, 0f, guidance, GuidanceMode.ALL, 0,
                PreviewDecoder.LINEAR, Set.of(OutputFormat.TENSOR), null);
    }

    private static LoadedModel model(Engine e, Recorder r) {
        return new LoadedModel(r.model(), r, 0);
    }

    @Test
    void everyActiveGenerationStepsEveryTickInAcceptanceOrderInPassesOfAtMostMaxBatch() throws Exception {
        Recorder r = recorder("pixel-tiny");
        Engine e = engine(r, 8, 4);
        LoadedModel m = model(e, r);
        // labels identify the owners: 1 (2 samples: guided), 2 (1 sample), 3 (6 samples: 3 images guided, more
        // than max_batch), 4 (2 samples); all accepted before the loop starts, so all are active from tick 1
        int steps = 3;
        Collector[] c = new Collector[4];
        GenerationPlan[] plans = {plan(m, 1, 1, steps, 3f), plan(m, 2, 1, steps, 1f), plan(m, 3, 3, steps, 3f),
            plan(m, 4, 1, steps, 3f)};
        for (int i = 0; i < 4; i++) {
            c[i] = new Collector();
            e.submit(plans[i], c[i]);
        }
        e.start();
        for (Collector k : c) {
            assertThat(k.await()).isNull();
        }
        // 11 samples per tick → passes of 4, 4, 3; rows in acceptance order: the cond then uncond half of each
        int null_ = m.spec().nullClass();
        int[] tick = {1, null_, 2, 3, 3, 3, null_, null_, null_, 4, null_};
        assertThat(r.passes).hasSize(3 * steps);
        for (int s = 0; s < steps; s++) {
            List<Integer> rows = new ArrayList<>();
            int[] sizes = new int[3];
            for (int p = 0; p < 3; p++) {
                Pass pass = r.passes.get(3 * s + p);
                sizes[p] = pass.y().length;
                for (int label : pass.y()) {
                    rows.add(label);
                }
                float t0 = pass.t()[0];
                for (float t : pass.t()) {
                    assertThat(t).as("every generation is at the same step here").isEqualTo(t0);
                }
            }
            assertThat(sizes).containsExactly(4, 4, 3);
            assertThat(rows).containsExactly(java.util.Arrays.stream(tick).boxed().toArray(Integer[]::new));
        }
        for (int i = 0; i < 4; i++) {
            assertThat(c[i].results()).hasSize(plans[i].numImages());
        }
    }

    @Test
    void aNewRequestJoinsAtTheNextTickAndSharesPassesWithOthersAtOtherSteps() throws Exception {
        Recorder r = recorder("pixel-tiny");
        Engine e = engine(r, 8, 32);
        LoadedModel m = model(e, r);
        e.start();
        Collector first = new Collector();
        e.submit(plan(m, 1, 1, 200, 1f), first);
        // wait until the first one has stepped, then add a second: their steps differ inside shared passes
        awaitStep(first);
        Collector second = new Collector();
        e.submit(plan(m, 2, 1, 5, 1f), second);
        assertThat(second.await()).isNull();
        List<Pass> passes;
        synchronized (r.passes) { // the first generation is still stepping: copy under the list's lock
            passes = List.copyOf(r.passes);
        }
        boolean mixed = passes.stream().anyMatch(p -> p.y().length == 2 && p.t()[0] != p.t()[1]);
        assertThat(mixed).as("a pass held both generations at different timesteps").isTrue();
        first.end.cancel(false);
    }

    @Test
    void aThrowableInAPassFailsOnlyItsCulpritAndTheLoopGoesOn() throws Exception {
        Recorder r = recorder("pixel-tiny");
        Engine e = engine(r, 8, 32);
        LoadedModel m = model(e, r);
        Collector good = new Collector();
        Collector bad = new Collector();
        e.submit(plan(m, 1, 2, 4, 3f), good);
        e.submit(plan(m, POISON, 1, 4, 1f), bad);
        e.start();
        Failure f = bad.await();
        assertThat(f).isNotNull();
        assertThat(f.code()).isEqualTo(Failure.Code.INTERNAL);
        assertThat(f.message()).contains("simulated kernel bug");
        assertThat(good.await()).as("the companion of the failed pass completes").isNull();
        assertThat(good.results()).hasSize(2);
        Collector later = new Collector();
        e.submit(plan(m, 2, 1, 2, 1f), later);
        assertThat(later.await()).isNull();
        assertThat(e.healthy()).isTrue();
    }

    /** A VAE decoder that decodes nothing: it waits inside decode until its cancellation fires. */
    static final class WaitingDecoder implements io.ditserve.backend.Decoder {
        final io.ditserve.backend.DecoderSpec spec = new io.ditserve.backend.DecoderSpec(java.nio.file.Path.of("/x"),
                io.ditserve.backend.DecoderSpec.Kind.FULL, 4, 3, List.of(8, 8), 1, List.of(), 4, 0.18215, 0, true,
                true, 2, 0);
        final CompletableFuture<Boolean> entered = new CompletableFuture<>();
        /** When completed, decode returns (zeros) instead of waiting for cancellation. */
        final CompletableFuture<Boolean> release = new CompletableFuture<>();
        volatile boolean sawCancel;

        @Override
        public String backendName() {
            return "java";
        }

        @Override
        public io.ditserve.backend.DecoderSpec spec() {
            return spec;
        }

        @Override
        public void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
            entered.complete(true);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
            while (!cancel.isCancelled()) {
                if (release.isDone()) {
                    return;
                }
                if (System.nanoTime() > deadline) {
                    throw new BackendException("never cancelled");
                }
                Thread.onSpinWait();
            }
            sawCancel = true;
            throw new BackendException.Cancelled();
        }

        @Override
        public void close() {}
    }

    @Test
    void cancellingDuringTheFinalDecodeStopsTheDecoder() throws Exception {
        Recorder r = recorder("latent-tiny");
        WaitingDecoder vae = new WaitingDecoder();
        LoadedModel m = new LoadedModel(r.model(), r, 0, vae, null);
        Engine e = started(m);
        Collector c = new Collector();
        Engine.Handle h = e.submit(new GenerationPlan(m, 1, new long[] {3}, 2, Sampler.DDIM, 0f, 1f,
                GuidanceMode.ALL, 0, PreviewDecoder.LINEAR, Set.of(OutputFormat.PNG), null), c);
        assertThat(vae.entered.get(60, TimeUnit.SECONDS)).isTrue();
        h.cancel(Failure.cancelled("client went away"));
        Failure f = c.await();
        assertThat(f.code()).isEqualTo(Failure.Code.CANCELLED);
        assertThat(f.message()).isEqualTo("client went away");
        assertThat(vae.sawCancel).isTrue();
        assertThat(c.results()).isEmpty();
    }

    @Test
    void otherGenerationsKeepSteppingWhileOneDecodes() throws Exception {
        Recorder r = recorder("latent-tiny");
        WaitingDecoder vae = new WaitingDecoder();
        LoadedModel m = new LoadedModel(r.model(), r, 0, vae, null);
        Engine e = started(m);
        Collector decoded = new Collector();
        e.submit(new GenerationPlan(m, 1, new long[] {3}, 2, Sampler.DDIM, 0f, 1f, GuidanceMode.ALL, 0,
                PreviewDecoder.LINEAR, Set.of(OutputFormat.PNG), null), decoded);
        assertThat(vae.entered.get(60, TimeUnit.SECONDS)).isTrue();
        Collector other = new Collector();
        e.submit(new GenerationPlan(m, 2, new long[] {4}, 6, Sampler.DDIM, 0f, 1f, GuidanceMode.ALL, 0,
                PreviewDecoder.LINEAR, Set.of(OutputFormat.TENSOR), null), other);
        assertThat(other.await()).as("a generation sampled to the end while the first one was decoding").isNull();
        assertThat(decoded.end).isNotDone();
        // the decoding one stays listed, all its steps done (the finished one may still be listed until the end of
        // its tick)
        assertThat(e.status().running()).filteredOn(g -> g.totalSteps() == 2)
                .extracting(Engine.GenerationInfo::stepsDone).containsExactly(2);
        vae.release.complete(true);
        assertThat(decoded.await()).isNull();
        assertThat(decoded.results()).hasSize(1);
        assertThat(decoded.results().get(0).image()).isNotNull();
    }

    @Test
    void decodedPreviewsDoNotHoldUpStepsAndAlwaysPrecedeTheResults() throws Exception {
        Recorder r = recorder("latent-tiny");
        WaitingDecoder taesd = new WaitingDecoder();
        LoadedModel m = new LoadedModel(r.model(), r, 0, null, taesd);
        Engine e = started(m);
        Collector c = new Collector();
        e.submit(new GenerationPlan(m, 1, new long[] {3}, 6, Sampler.DDIM, 0f, 1f, GuidanceMode.ALL, 1,
                PreviewDecoder.TINY, Set.of(OutputFormat.TENSOR), null), c);
        assertThat(taesd.entered.get(60, TimeUnit.SECONDS)).isTrue();
        // the first frame is stuck in the decoder, yet the generation samples on to its last step
        c.awaitSteps(6); // all 6 steps while the preview decoder is blocked
        assertThat(c.end).isNotDone();
        taesd.release.complete(true);
        assertThat(c.await()).isNull();
        List<GenerationEvent> events;
        synchronized (c.events) {
            events = List.copyOf(c.events);
        }
        int lastPreview = -1;
        int firstResult = Integer.MAX_VALUE;
        for (int i = 0; i < events.size(); i++) {
            if (events.get(i) instanceof GenerationEvent.Preview) {
                lastPreview = i;
            } else if (events.get(i) instanceof GenerationEvent.Result) {
                firstResult = Math.min(firstResult, i);
            }
        }
        assertThat(lastPreview).as("previews were rendered (the newest waiting frame)").isGreaterThanOrEqualTo(0);
        assertThat(lastPreview).as("no preview after a result").isLessThan(firstResult);
        long frames = events.stream().filter(ev -> ev instanceof GenerationEvent.Preview).count();
        assertThat(frames).as("frames that waited were replaced by newer ones, not queued").isLessThan(6);
    }

    /** A backend that waits inside forward until its cancellation notifies it (it never polls). */
    static final class NotifiedBackend extends Wrapped {
        final CompletableFuture<Boolean> entered = new CompletableFuture<>();
        volatile boolean told;

        NotifiedBackend(Backend real) {
            super(real);
        }

        @Override
        public void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
            java.util.concurrent.CountDownLatch fired = new java.util.concurrent.CountDownLatch(1);
            try (Cancellation.Subscription s = cancel.onCancel(fired::countDown)) {
                assertThat(s).as("the engine's pass cancellation can notify").isNotNull();
                entered.complete(true);
                if (!fired.await(30, TimeUnit.SECONDS)) {
                    throw new BackendException("never told");
                }
                told = true;
                throw new BackendException.Cancelled();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new BackendException("interrupted");
            }
        }

    }

    @Test
    void aPassIsToldWhenEveryGenerationInItIsCancelled() throws Exception {
        ModelSpec spec = ModelConfigs.load(TestPaths.fixture("pixel-tiny"));
        NotifiedBackend b = new NotifiedBackend(new BackendRegistry().get("java").create(spec,
                BackendOptions.ofThreads(1)));
        closers.add(b);
        LoadedModel m = new LoadedModel(spec, b, 0);
        Engine e = new Engine(new EngineConfig(4, 4, 8, TiledDecoding.Tiling.NEVER), EngineObserver.NONE, List.of(m));
        closers.add(e);
        Collector one = new Collector();
        Collector two = new Collector();
        // both accepted before the loop starts: the first pass holds both
        Engine.Handle h1 = e.submit(plan(m, 1, 1, 3, 1f), one);
        Engine.Handle h2 = e.submit(plan(m, 2, 1, 3, 1f), two);
        e.start();
        assertThat(b.entered.get(60, TimeUnit.SECONDS)).isTrue();
        h1.cancel(Failure.cancelled("one went away"));
        assertThat(b.told).as("not told while one generation of the pass still wants it").isFalse();
        h2.cancel(Failure.cancelled("two went away"));
        assertThat(one.await().message()).isEqualTo("one went away");
        assertThat(two.await().message()).isEqualTo("two went away");
        assertThat(b.told).isTrue();
    }

    @Test
    void shutdownWithoutStartTellsEveryListener() throws Exception {
        Recorder r = recorder("pixel-tiny");
        Engine e = engine(r, 1, 4);
        LoadedModel m = model(e, r);
        Collector active = new Collector();
        Collector queued = new Collector();
        e.submit(plan(m, 1, 1, 4, 1f), active);
        e.submit(plan(m, 2, 1, 4, 1f), queued);
        e.shutdown(Duration.ofMillis(10));
        assertThat(active.await().code()).isEqualTo(Failure.Code.UNAVAILABLE);
        assertThat(queued.await().code()).isEqualTo(Failure.Code.UNAVAILABLE);
        assertThat(r.passes).isEmpty();
    }

    /**
     * java: byte-identical. onnx: ONNX Runtime's kernels block by the batch size, so rounding may differ in the last
     * bits; within 1e-5 of the largest magnitude.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"java", "onnx"})
    void sameRequestSameBytesAloneAndInAnyBatch(String backend) throws Exception {
        Recorder r = recorder("latent-tiny", backend);
        Engine e = engine(r, 16, 5);
        LoadedModel m = model(e, r);
        e.start();
        GenerationPlan target = new GenerationPlan(m, 3, new long[] {11, 12}, 8, Sampler.DDIM, 0f, 4f,
                GuidanceMode.FIRST_THREE, 0, PreviewDecoder.LINEAR, Set.of(OutputFormat.TENSOR), null);
        Collector alone = new Collector();
        e.submit(target, alone);
        assertThat(alone.await()).isNull();
        // twelve others at different steps, samplers, guidance and image counts; max_batch 5 splits passes
        List<Collector> others = new ArrayList<>();
        for (int k = 0; k < 12; k++) {
            Collector o = new Collector();
            long[] seeds = java.util.Arrays.copyOf(new long[] {k, k + 50, k + 99}, 1 + k % 3);
            GenerationPlan p = new GenerationPlan(m, k % POISON, seeds, 30 + k,
                    k % 2 == 0 ? Sampler.DDPM : Sampler.DDIM, k % 3 == 0 ? 0.5f : 0f, k % 4 == 0 ? 1f : 1.5f + k,
                    GuidanceMode.ALL, 0, PreviewDecoder.LINEAR, Set.of(OutputFormat.TENSOR), null);
            e.submit(p, o);
            others.add(o);
        }
        for (Collector o : others) {
            awaitStep(o);
        }
        Collector batched = new Collector();
        e.submit(target, batched);
        assertThat(batched.await()).isNull();
        assertThat(others.stream().filter(o -> o.end.isDone()).count()).as("others still running").isLessThan(12);
        for (int i = 0; i < 2; i++) {
            float[] got = batched.results().get(i).sample().data();
            float[] want = alone.results().get(i).sample().data();
            if (backend.equals("java")) {
                assertThat(got).as("image " + i + " byte-identical alone and in a batch of 13 generations")
                        .containsExactly(want);
            } else {
                double maxAbs = 0;
                double maxErr = 0;
                for (int k = 0; k < want.length; k++) {
                    maxAbs = Math.max(maxAbs, Math.abs(want[k]));
                    maxErr = Math.max(maxErr, Math.abs(got[k] - want[k]));
                }
                System.out.printf("onnx batch invariance, image %d: max |diff| / max |x| = %.3g%n", i, maxErr / maxAbs);
                assertThat(maxErr / maxAbs).as("image " + i + " on onnx, alone vs among 13 generations")
                        .isLessThan(1e-5);
            }
        }
        for (Collector o : others) {
            assertThat(o.await()).isNull();
        }
    }
}
