package io.ditserve.server.engine;

import io.ditserve.backend.BackendException;
import io.ditserve.server.model.LoadedModel;
import io.ditserve.server.sampling.Solvers;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The compute thread of one model's backend instance. Generations wait in a fair queue ({@link Admission}); up to
 * {@code maxActive} of them are active. Every tick, each active generation takes exactly one model evaluation: the
 * loop packs the sample rows of all of them (images and guidance halves, each with its own time and label) end to
 * end in acceptance order into passes of up to {@code maxBatch} rows ({@link Pass}), runs them
 * ({@link PassExecutor}, which isolates failures), and each generation gives its output to its own solver as soon as
 * its last row is back. A solver with two evaluations per step (Heun) simply takes two ticks per step.
 *
 * <p>Fairness: no active generation is ever skipped; a tick costs ⌈rows / maxBatch⌉ passes, and a generation with
 * more rows than {@code maxBatch} spans several passes. New requests join at the next tick; cancelled and finished
 * ones leave at once (a cancelled one is dropped before the tick's passes are packed).
 *
 * <p>Beside it, a {@link RenderThread} decodes previews and final images.
 *
 * <p>Loops of different models never wait for each other: each has its own thread.
 */
final class ComputeLoop {
    private static final Logger log = LoggerFactory.getLogger(ComputeLoop.class);

    final LoadedModel model;
    private final EngineConfig config;
    private final Runnable onDeath;
    private final Object lock = new Object();
    private final Admission admission;
    private final List<Generation> active = new ArrayList<>();
    private final RenderThread render;
    private final List<Generation> tick = new ArrayList<>();
    private final Thread thread;
    private final Pass pass;
    private final PassExecutor executor;
    private boolean accepting = true;
    private boolean stopped;
    private volatile boolean stopping;
    private volatile boolean dead;
    private long stepsComputed;
    private long completed;

    ComputeLoop(LoadedModel model, EngineConfig config, EngineObserver observer, Runnable onDeath) {
        this.model = model;
        this.config = config;
        this.onDeath = onDeath;
        this.admission = new Admission(config, model.name(), observer);
        this.pass = new Pass(model.spec(), config.maxBatch() > 0 ? config.maxBatch()
                : model.backend().preferredMaxBatch());
        this.executor = new PassExecutor(model, observer, () -> stopping);
        thread = Thread.ofPlatform().name("dit-compute-" + model.name()).daemon(false).unstarted(this::run);
        render = new RenderThread(model.name(), model.backend().name(), lock, () -> stopping, () -> completed++);
    }

    void start() {
        thread.start();
    }

    /** Queues an anonymous generation (sending its Accepted event first). */
    void submit(Generation g) throws Rejected {
        submit(g, null);
    }

    /**
     * Queues a generation of {@code client} (null = anonymous) at its fair place (sending its Accepted event first).
     *
     * @throws Rejected when the queue or the client's share of it is full, or the loop is shutting down
     */
    void submit(Generation g, String client) throws Rejected {
        g.previewRunner(render.previews());
        float[] times = Solvers.stepTimes(g.spec, g.plan.solverSettings());
        int evaluations = Solvers.evaluations(g.plan.solverSettings());
        synchronized (lock) {
            if (!accepting || dead) {
                throw new Rejected(Failure.unavailable(dead
                        ? "model " + model.name() + " cannot compute (its compute loop failed); retry on another replica"
                        : "server is shutting down; retry on another replica"));
            }
            boolean runsNow = slotsTaken() < config.maxActive() && admission.waiting.isEmpty();
            if (admission.admit(g, client, runsNow, active.size(),
                    position -> new GenerationEvent.Accepted(g.id, position, g.plan, times, evaluations))) {
                active.add(g);
            }
            lock.notifyAll();
        }
    }

    void cancel(Generation g, Failure failure) {
        boolean removed;
        synchronized (lock) {
            removed = admission.cancelWaiting(g);
            if (removed) {
                lock.notifyAll(); // the loop may be idle now (awaitIdle)
            }
        }
        if (removed) {
            g.listener.onFailed(failure); // never started: nothing else will tell the listener
        } else {
            g.cancel(failure); // active: it leaves before the next pass, or the running pass stops if all its owners left
        }
    }

    private void run() {
        try {
            while (true) {
                synchronized (lock) {
                    while (active.isEmpty() && (admission.waiting.isEmpty() || slotsTaken() >= config.maxActive())
                            && !stopped) {
                        lock.wait();
                    }
                    if (stopped && active.isEmpty() && admission.waiting.isEmpty()) {
                        return;
                    }
                    promote();
                    tick.clear();
                    tick.addAll(active);
                }
                runTick();
                synchronized (lock) {
                    for (Generation g : tick) {
                        if (g.ended) {
                            leave(g);
                        }
                    }
                    lock.notifyAll();
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (Throwable t) {
            // runTick contains every failure of a pass or a generation; reaching here is a bug in the loop itself
            log.error("compute loop of model {} died", model.name(), t);
            dead = true;
            failEverything(Failure.internal("the compute loop of model " + model.name() + " failed: " + t));
            onDeath.run();
        }
    }

    /** An ended generation leaves the active set: to the render thread, or done. Holds the lock. */
    private void leave(Generation g) {
        active.remove(g);
        admission.left(g, false);
        if (g.awaitingDecode() && !g.isCancelled() && !stopping) {
            render.finalDecode(g);
            return;
        }
        if (g.awaitingDecode()) { // its listener has not been told yet
            g.listener.onFailed(g.isCancelled() ? g.cancelFailure()
                    : Failure.unavailable("server shut down before the generation finished"));
        }
        completed++;
    }

    private void failEverything(Failure f) {
        List<Generation> all;
        synchronized (lock) {
            all = new ArrayList<>(active);
            all.addAll(admission.clear());
            active.clear();
            lock.notifyAll();
        }
        for (Generation g : all) {
            PassExecutor.end(g, f);
        }
    }

    /** Moves waiting generations into free slots and tells the rest their new positions. Holds the lock. */
    private void promote() {
        boolean moved = false;
        while (slotsTaken() < config.maxActive()) {
            Generation g = admission.startNext();
            if (g == null) {
                break;
            }
            active.add(g);
            moved = true;
        }
        if (moved) {
            admission.notifyQueuePositions(0);
        }
    }

    /** One tick: every generation of {@link #tick} takes one model evaluation (or leaves). */
    private void runTick() {
        for (Generation g : tick) {
            if (g.isCancelled()) {
                PassExecutor.end(g, g.cancelFailure());
                continue;
            }
            try {
                g.prepareStep();
            } catch (RuntimeException | OutOfMemoryError e) {
                log.error("[{}] cannot start the step", g.id, e);
                PassExecutor.end(g, Failure.internal("generation failed: " + e));
            }
        }
        pass.packAndRun(tick, executor);
        synchronized (lock) {
            stepsComputed += tick.size();
        }
    }

    /** Slots of max_active in use: stepping generations and those whose final decode is pending. Holds the lock. */
    private int slotsTaken() {
        return active.size() + render.decoding.size();
    }

    // ---- status and shutdown (any thread)

    void describe(List<Engine.GenerationInfo> running, List<Engine.GenerationInfo> queued, long now) {
        synchronized (lock) {
            for (Generation g : active) {
                running.add(Engine.GenerationInfo.of(g, 0, now));
            }
            for (Generation g : render.decoding) {
                running.add(Engine.GenerationInfo.of(g, 0, now));
            }
            int pos = 1;
            for (Generation g : admission.waiting) {
                queued.add(Engine.GenerationInfo.of(g, pos++, now));
            }
        }
    }

    int[] counts() {
        synchronized (lock) {
            return new int[] {slotsTaken(), admission.waiting.size()};
        }
    }

    long stepsComputed() {
        synchronized (lock) {
            return stepsComputed;
        }
    }

    long completed() {
        synchronized (lock) {
            return completed;
        }
    }

    boolean dead() {
        return dead;
    }

    void stopAccepting() {
        synchronized (lock) {
            accepting = false;
        }
    }

    /** Whether nothing runs or waits. */
    boolean idle() {
        synchronized (lock) {
            return active.isEmpty() && admission.waiting.isEmpty() && render.decoding.isEmpty();
        }
    }

    /**
     * Waits until nothing runs or waits here (or the loop died), at the latest until {@code deadline}
     * ({@link System#nanoTime}). Returns whether the loop is idle. The loop notifies its lock after every tick,
     * decode and cancellation.
     */
    boolean awaitIdle(long deadline) throws InterruptedException {
        synchronized (lock) {
            while (!idle() && !dead) {
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    return false;
                }
                lock.wait(waitMs);
            }
            return idle();
        }
    }

    /** Cancels what is left with {@code f}, stops the thread, and waits for it up to {@code waitMillis}. */
    void stop(Failure f, long waitMillis) {
        List<Generation> neverStarted;
        synchronized (lock) {
            accepting = false;
            neverStarted = new ArrayList<>(admission.waiting);
            neverStarted.forEach(g -> admission.left(g, true));
            admission.waiting.clear();
            active.forEach(g -> g.cancel(f));
            stopping = true;
            stopped = true;
            lock.notifyAll();
        }
        neverStarted.forEach(g -> g.listener.onFailed(f));
        render.shutdown(); // running decodes see `stopping` and end their generations with f's code
        if (thread.isAlive()) {
            try {
                thread.join(waitMillis);
                render.await(waitMillis);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        } else if (thread.getState() == Thread.State.NEW) {
            // never started: no tick will tell the active generations
            failEverything(f);
        }
    }
}
