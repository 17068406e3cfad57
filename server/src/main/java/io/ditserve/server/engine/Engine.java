package io.ditserve.server.engine;

import io.ditserve.server.model.LoadedModel;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

/**
 * Runs generations: one {@link ComputeLoop} (thread, queue, batched forward passes) per model, so that models on
 * different backends or devices never wait for each other. The engine speaks no wire protocol: plans come in,
 * domain {@link GenerationEvent}s go out to each generation's {@link GenerationListener}.
 *
 * <p>Lifecycle: the constructor only builds; {@link #start} starts the loops; {@link #shutdown} (also when
 * {@code start} never ran) drains with a grace period, then cancels what is left and stops the threads. Backends
 * and decoders belong to the model repository, which closes them after the engine.
 */
public final class Engine implements AutoCloseable {
    private final Map<String, ComputeLoop> loops = new LinkedHashMap<>();
    private final EngineConfig config;
    private final EngineObserver observer;
    private final AtomicLong ids = new AtomicLong();
    private final AtomicReference<Runnable> onLoopDeath = new AtomicReference<>(() -> { });
    private boolean started;
    private boolean stopped;

    public Engine(EngineConfig config, EngineObserver observer, Collection<LoadedModel> models) {
        this.config = Objects.requireNonNull(config, "config");
        this.observer = Objects.requireNonNull(observer, "observer");
        for (LoadedModel m : models) {
            loops.put(m.name(), new ComputeLoop(m, config, observer, () -> onLoopDeath.get().run()));
        }
    }

    public EngineConfig config() {
        return config;
    }

    /** Starts the compute loops. Idempotent. */
    public synchronized Engine start() {
        if (!started && !stopped) {
            started = true;
            loops.values().forEach(ComputeLoop::start);
        }
        return this;
    }

    /** Called (on the dying loop's thread) if a compute loop ever stops by a failure: health should go NOT_SERVING. */
    public void onLoopDeath(Runnable action) {
        onLoopDeath.set(Objects.requireNonNull(action, "action"));
    }

    /** True while every compute loop is alive (or not started yet). */
    public boolean healthy() {
        return loops.values().stream().noneMatch(ComputeLoop::dead);
    }

    /** A submitted generation: cancel it when the client goes away. */
    public interface Handle {
        String id();

        void cancel(Failure failure);
    }

    /** Queues a generation of an anonymous client (no per-client share); see {@link #submit(GenerationPlan, String,
     * GenerationListener)}. */
    public Handle submit(GenerationPlan plan, GenerationListener listener) throws Rejected {
        return submit(plan, null, listener);
    }

    /**
     * Queues a generation on its model's loop. Sends its Accepted event before returning.
     *
     * @param client who asks (an opaque key chosen by the transport layer: a token digest, an address), or null for
     *     none: a client may have at most {@code maxQueuedPerClient} generations of a model waiting, and waiting
     *     generations are ordered fairly by client (ComputeLoop)
     * @throws Rejected RESOURCE_EXHAUSTED when the model's queue or the client's share of it is full, UNAVAILABLE when
     *     shutting down
     */
    public Handle submit(GenerationPlan plan, String client, GenerationListener listener) throws Rejected {
        ComputeLoop loop = loops.get(plan.model().name());
        if (loop == null) {
            throw new IllegalArgumentException("model " + plan.model().name() + " is not served by this engine");
        }
        long n = ids.incrementAndGet();
        Generation g = new Generation("gen-" + n, n, plan, listener, observer, config.tiling());
        loop.submit(g, client);
        // The transport keeps the handle as long as the call is open, and a call whose client never reads can stay
        // open long after its generation ended (its status waits behind unread data). The loop holds a generation
        // strongly while it is queued, running or rendering; the handle only weakly, so an ended generation's
        // buffers (its images × samples floats) are not kept by calls that never finish (NeverReadingClientsTest).
        String id = g.id;
        java.lang.ref.WeakReference<Generation> ref = new java.lang.ref.WeakReference<>(g);
        return new Handle() {
            @Override
            public String id() {
                return id;
            }

            @Override
            public void cancel(Failure failure) {
                Generation live = ref.get();
                if (live != null) {
                    loop.cancel(live, failure);
                }
            }
        };
    }

    /** One generation for status reporting. */
    public record GenerationInfo(String requestId, String model, int numImages, int stepsDone, int totalSteps,
            int queuePosition, double ageSeconds) {
        static GenerationInfo of(Generation g, int position, long now) {
            return new GenerationInfo(g.id, g.plan.model().name(), g.plan.numImages(), g.stepsDone(),
                    g.totalSteps(), position, (now - g.acceptedNanos) / 1e9);
        }
    }

    /** What runs and waits now, for {@code GetServerStatus}. */
    public record Status(boolean serving, List<GenerationInfo> running, List<GenerationInfo> queued, int maxActive,
            int maxQueued, long generationsCompleted, long stepsComputed) {}

    public Status status() {
        List<GenerationInfo> running = new ArrayList<>();
        List<GenerationInfo> queued = new ArrayList<>();
        long now = System.nanoTime();
        long done = 0;
        long steps = 0;
        for (ComputeLoop l : loops.values()) {
            l.describe(running, queued, now);
            done += l.completed();
            steps += l.stepsComputed();
        }
        boolean serving;
        synchronized (this) {
            serving = !stopped && healthy();
        }
        return new Status(serving, running, queued, config.maxActive(), config.maxQueued(), done, steps);
    }

    /** Generation steps run so far, over all models. */
    public long stepsComputed() {
        return loops.values().stream().mapToLong(ComputeLoop::stepsComputed).sum();
    }

    /** Counts for status reporting. */
    public record Snapshot(int running, int queued) {}

    public Snapshot snapshot() {
        int running = 0;
        int queued = 0;
        for (ComputeLoop l : loops.values()) {
            int[] c = l.counts();
            running += c[0];
            queued += c[1];
        }
        return new Snapshot(running, queued);
    }

    /**
     * Waits until no generation runs, waits or decodes on any model (a loop that died counts as idle), for at most
     * {@code timeout}; returns whether that happened. For a drain, and for tests that need the engine quiet.
     */
    public boolean awaitIdle(Duration timeout) throws InterruptedException {
        return awaitIdle(System.nanoTime() + timeout.toNanos());
    }

    private boolean awaitIdle(long deadline) throws InterruptedException {
        for (ComputeLoop l : loops.values()) {
            if (!l.awaitIdle(deadline)) {
                return false;
            }
        }
        return true;
    }

    /**
     * Stops accepting, lets running and queued generations finish for up to {@code grace}, then cancels what is
     * left with UNAVAILABLE and stops the threads. Safe to call when {@link #start} never ran, and more than once.
     */
    public void shutdown(Duration grace) {
        synchronized (this) {
            if (stopped) {
                return;
            }
            stopped = true;
        }
        long deadline = System.nanoTime() + grace.toNanos();
        loops.values().forEach(ComputeLoop::stopAccepting);
        if (started) {
            try {
                awaitIdle(deadline);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        Failure f = Failure.unavailable("server shut down before the generation finished");
        for (ComputeLoop l : loops.values()) {
            l.stop(f, Math.max(1000, grace.toMillis()));
        }
    }

    @Override
    public void close() {
        shutdown(Duration.ZERO);
    }
}
