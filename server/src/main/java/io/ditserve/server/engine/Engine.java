package io.ditserve.server.engine;

import io.ditserve.proto.v1.Accepted;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.Queued;
import io.ditserve.server.sampling.NoiseSchedule;
import io.grpc.Status;
import io.grpc.StatusException;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Owns the compute thread. Accepted generations wait in a FIFO queue; up to {@code maxActive} of them run, each
 * advanced one denoising step at a time in round robin, so that a long request does not starve short ones and a
 * cancelled request leaves within one step. Backends are called from this thread only (they parallelise inside a
 * forward pass on their own pools). gRPC threads never compute: they only submit and cancel.
 */
public final class Engine implements AutoCloseable {
    static final Logger log = LoggerFactory.getLogger(Engine.class);

    private final EngineConfig config;
    private final Object lock = new Object();
    private final ArrayDeque<Generation> waiting = new ArrayDeque<>();
    private final ArrayDeque<Generation> active = new ArrayDeque<>();
    private final AtomicLong ids = new AtomicLong();
    private final AtomicLong stepsComputed = new AtomicLong();
    private final AtomicLong completed = new AtomicLong();
    private final Thread thread;
    private Generation current;
    private boolean accepting = true;
    private boolean stopped;

    private final EngineObserver observer;

    public Engine(EngineConfig config) {
        this(config, EngineObserver.NONE);
    }

    public Engine(EngineConfig config, EngineObserver observer) {
        this.config = Objects.requireNonNull(config, "config");
        this.observer = Objects.requireNonNull(observer, "observer");
        this.thread = Thread.ofPlatform().name("dit-engine").daemon(false).unstarted(this::run);
        thread.start();
    }

    /** A submitted generation: cancel it when the client goes away. */
    public interface Handle {
        String id();

        void cancel(Status status);
    }

    /**
     * Queues a generation. Sends its Accepted event before returning.
     *
     * @throws StatusException RESOURCE_EXHAUSTED when the queue is full, UNAVAILABLE when shutting down
     */
    public Handle submit(GenerationPlan plan, GenerationListener listener) throws StatusException {
        Generation g;
        synchronized (lock) {
            if (!accepting) {
                throw Status.UNAVAILABLE.withDescription("server is shutting down; retry on another replica")
                        .asException();
            }
            int running = active.size() + (current != null ? 1 : 0);
            boolean runsNow = running < config.maxActive() && waiting.isEmpty();
            if (!runsNow && waiting.size() >= config.maxQueued()) {
                throw Status.RESOURCE_EXHAUSTED.withDescription("server busy: " + running + " generations running and "
                        + waiting.size() + " queued (limit " + config.maxQueued() + "); retry later").asException();
            }
            g = new Generation("gen-" + ids.incrementAndGet(), plan, listener, observer);
            int position = runsNow ? 0 : waiting.size() + 1;
            listener.onEvent(GenerateEvent.newBuilder().setAccepted(accepted(g, position)).build());
            if (runsNow) {
                active.addLast(g);
            } else {
                waiting.addLast(g);
            }
            lock.notifyAll();
        }
        Generation gen = g;
        return new Handle() {
            @Override
            public String id() {
                return gen.id;
            }

            @Override
            public void cancel(Status status) {
                Engine.this.cancel(gen, status);
            }
        };
    }

    private static Accepted accepted(Generation g, int position) {
        GenerationPlan p = g.plan;
        Accepted.Builder a = Accepted.newBuilder()
                .setRequestId(g.id)
                .setQueuePosition(position)
                .setModel(p.model().name())
                .setBackend(p.model().backend().name())
                .setSteps(p.steps())
                .setSampler(p.sampler() == GenerationPlan.Sampler.DDIM
                        ? io.ditserve.proto.v1.Sampler.SAMPLER_DDIM : io.ditserve.proto.v1.Sampler.SAMPLER_DDPM)
                .setEta(p.eta())
                .setGuidanceScale(p.guidance())
                .setGuidanceMode(p.guidanceMode() == io.ditserve.server.sampling.Samplers.GuidanceMode.ALL
                        ? io.ditserve.proto.v1.GuidanceMode.GUIDANCE_MODE_ALL
                        : io.ditserve.proto.v1.GuidanceMode.GUIDANCE_MODE_FIRST_THREE)
                .setClassId(p.label());
        for (long s : p.seeds()) {
            a.addSeeds(s);
        }
        int[] ts = NoiseSchedule.respace(p.steps());
        for (int k = ts.length - 1; k >= 0; k--) {
            a.addTimesteps(ts[k]);
        }
        return a.build();
    }

    private void cancel(Generation g, Status status) {
        boolean removed;
        synchronized (lock) {
            removed = waiting.remove(g);
            if (removed) {
                notifyQueuePositions();
            }
        }
        if (removed) {
            g.listener.onFailed(status); // never started: nothing else will tell the listener
        } else {
            g.cancel(status); // running: the engine thread stops it within one step (the backend polls the flag)
        }
    }

    private void run() {
        while (true) {
            Generation g;
            synchronized (lock) {
                while (active.isEmpty() && waiting.isEmpty() && !stopped) {
                    try {
                        lock.wait();
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                        return;
                    }
                }
                if (stopped && active.isEmpty() && waiting.isEmpty()) {
                    return;
                }
                promote();
                g = active.pollFirst();
                current = g;
            }
            org.slf4j.MDC.put("rid", g.id);
            boolean finished;
            try {
                finished = g.step();
            } finally {
                org.slf4j.MDC.remove("rid");
            }
            stepsComputed.incrementAndGet();
            synchronized (lock) {
                current = null;
                if (!finished) {
                    active.addLast(g);
                } else {
                    completed.incrementAndGet();
                }
                lock.notifyAll();
            }
        }
    }

    /** Moves waiting generations into free slots and tells the rest their new positions. Holds the lock. */
    private void promote() {
        boolean moved = false;
        while (active.size() + (current != null ? 1 : 0) < config.maxActive() && !waiting.isEmpty()) {
            active.addLast(waiting.pollFirst());
            moved = true;
        }
        if (moved) {
            notifyQueuePositions();
        }
    }

    private void notifyQueuePositions() {
        int pos = 1;
        for (Generation w : waiting) {
            w.listener.onEvent(GenerateEvent.newBuilder()
                    .setQueued(Queued.newBuilder().setQueuePosition(pos++)).build());
        }
    }

    /** Denoising steps run so far (a step that found its generation cancelled counts too). */
    public long stepsComputed() {
        return stepsComputed.get();
    }

    /** The running and waiting generations, for {@code GetServerStatus}. */
    public io.ditserve.proto.v1.ServerStatus status() {
        var b = io.ditserve.proto.v1.ServerStatus.newBuilder()
                .setMaxActive(config.maxActive()).setMaxQueued(config.maxQueued())
                .setGenerationsCompleted(completed.get()).setStepsComputed(stepsComputed.get());
        long now = System.nanoTime();
        synchronized (lock) {
            b.setServing(accepting);
            if (current != null) {
                b.addRunning(describe(current, 0, now));
            }
            active.forEach(g -> b.addRunning(describe(g, 0, now)));
            int pos = 1;
            for (Generation g : waiting) {
                b.addQueued(describe(g, pos++, now));
            }
        }
        return b.build();
    }

    private static io.ditserve.proto.v1.GenerationStatus describe(Generation g, int position, long now) {
        return io.ditserve.proto.v1.GenerationStatus.newBuilder().setRequestId(g.id).setModel(g.plan.model().name())
                .setNumImages(g.plan.numImages()).setStepsDone(g.stepsDone()).setTotalSteps(g.totalSteps())
                .setQueuePosition(position).setAgeSeconds((now - g.acceptedNanos) / 1e9).build();
    }

    /** Counts for status reporting. */
    public record Snapshot(int running, int queued) {}

    public Snapshot snapshot() {
        synchronized (lock) {
            return new Snapshot(active.size() + (current != null ? 1 : 0), waiting.size());
        }
    }

    /**
     * Stops accepting, lets running and queued generations finish for up to {@code grace}, then cancels what is
     * left with UNAVAILABLE and stops the thread.
     */
    public void shutdown(Duration grace) {
        long deadline = System.nanoTime() + grace.toNanos();
        Status st = Status.UNAVAILABLE.withDescription("server shut down before the generation finished");
        List<Generation> neverStarted = new ArrayList<>();
        synchronized (lock) {
            accepting = false;
            while (!(active.isEmpty() && waiting.isEmpty() && current == null)) {
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    break;
                }
                try {
                    lock.wait(waitMs);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
            neverStarted.addAll(waiting);
            waiting.clear();
            // running generations see the flag at their next step (the backend polls it inside a forward pass)
            active.forEach(g -> g.cancel(st));
            if (current != null) {
                current.cancel(st);
            }
            stopped = true;
            lock.notifyAll();
        }
        neverStarted.forEach(g -> g.listener.onFailed(st));
        try {
            thread.join(Math.max(1000, grace.toMillis()));
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    @Override
    public void close() {
        shutdown(Duration.ZERO);
    }
}
