package io.ditserve.server.engine;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.server.model.LoadedModel;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.IdentityHashMap;
import java.util.LinkedList;
import java.util.List;
import java.util.ListIterator;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

/**
 * The compute thread of one model's backend instance. Generations wait in a FIFO queue; up to {@code maxActive} of
 * them are active. Every tick, each active generation advances exactly one denoising step: the loop lays the
 * samples of all of them (images and guidance halves, each with its own t and y) end to end in acceptance order
 * and runs forward passes of up to {@code maxBatch} samples over them, then each generation applies its own
 * sampler update as soon as its last sample is back.
 *
 * <p>Fairness: no active generation is ever skipped; a tick costs ⌈samples / maxBatch⌉ passes, and a generation with
 * more samples than {@code maxBatch} simply spans several passes. New requests join at the next tick; cancelled and
 * finished ones leave at once (a cancelled one is dropped before the tick's passes are gathered). A failure inside a
 * pass (a backend error, any Throwable) fails the generations that had samples in that pass and nothing else.
 *
 * <p>Clients: each generation comes with a client key (opaque; null = anonymous, all anonymous ones count as one
 * client). One client may have at most {@code maxQueuedPerClient} generations waiting, and the queue is ordered by
 * start-time fair queuing: a newcomer's round is one more than the later of the client's previous round and the
 * round of the generation started last, and it waits behind every generation of a lower or equal round. One client
 * alone is served first come, first served; a client with many generations waiting cannot push a newcomer of
 * another client behind all of them.
 *
 * <p>Previews decoded with TAESD or the VAE are rendered on the loop's render thread, newest frame per generation (a
 * waiting frame is replaced by a newer one), so they never delay a step. The same thread, in order, runs the final
 * VAE decodes and emits the results of every generation with decoded previews, so a generation's previews always
 * precede its results.
 *
 * <p>Final VAE decodes run on that second thread of the loop, one at a time, while the loop keeps stepping the other
 * generations; a generation waiting for or in its decode still holds its slot of {@code maxActive}, which bounds
 * the decodes pending (and their memory) when decoding is slower than sampling.
 *
 * <p>Loops of different models never wait for each other: each has its own thread. Batch buffers are allocated once
 * per batch size and reused; the hot path allocates nothing but the events it emits.
 */
final class ComputeLoop {
    private static final Logger log = LoggerFactory.getLogger(ComputeLoop.class);

    final LoadedModel model;
    private final EngineConfig config;
    private final EngineObserver observer;
    private final Runnable onDeath;
    private final Object lock = new Object();
    private final LinkedList<Generation> waiting = new LinkedList<>();
    /** Each admitted generation's client and fairness round (until it leaves the loop). */
    private final Map<Generation, Ticket> tickets = new IdentityHashMap<>();
    /** Clients with generations in this loop. */
    private final Map<String, ClientShare> clients = new HashMap<>();
    /** Round of the generation that started last (start-time fair queuing's virtual time). */
    private long startedRound;
    private final List<Generation> active = new ArrayList<>();
    /** Generations whose sampling is done and whose VAE decode is queued or running on {@link #decodes}. */
    private final List<Generation> decoding = new ArrayList<>();
    /** The render thread: decoded previews and final VAE decodes, in order, beside the stepping. */
    private final java.util.concurrent.ExecutorService decodes;

    private final List<Generation> tick = new ArrayList<>();
    private final Thread thread;
    private boolean accepting = true;
    private boolean stopped;
    private volatile boolean stopping;
    private volatile boolean dead;
    private long stepsComputed;
    private long completed;

    // batch buffers, one set per batch size that occurred (x, out, t, y must have exactly N rows)
    private final Tensor[] xs;
    private final Tensor[] outs;
    private final int[][] ts;
    private final int[][] ys;
    private final Generation[] owner;
    private final int[] ownerSample;
    // step caching: each row's use of the cached span and its residual (docs/STEP_CACHE.md)
    private final StepCache.Use[] rowUse;
    private final float[][] rowResidual;
    // the StepCache of a pass of n rows and the arrays behind it (filled from rowUse/rowResidual for each pass)
    private final StepCache[] stepCaches;
    private final StepCache.Use[][] cacheUses;
    private final float[][][] cacheResiduals;
    private final int per;
    private final int outPer;
    private final int maxBatch;
    private int rows;

    ComputeLoop(LoadedModel model, EngineConfig config, EngineObserver observer, Runnable onDeath) {
        this.model = model;
        this.config = config;
        this.observer = observer;
        this.onDeath = onDeath;
        ModelSpec spec = model.spec();
        int hw = spec.inputSize() * spec.inputSize();
        this.per = spec.inChannels() * hw;
        this.outPer = spec.outChannels() * hw;
        this.maxBatch = config.maxBatchFor(model.backend().name());
        int max = maxBatch;
        xs = new Tensor[max + 1];
        outs = new Tensor[max + 1];
        ts = new int[max + 1][];
        ys = new int[max + 1][];
        owner = new Generation[max];
        ownerSample = new int[max];
        rowUse = new StepCache.Use[max];
        rowResidual = new float[max][];
        stepCaches = new StepCache[max + 1];
        cacheUses = new StepCache.Use[max + 1][];
        cacheResiduals = new float[max + 1][][];
        thread = Thread.ofPlatform().name("dit-compute-" + model.name()).daemon(false).unstarted(this::run);
        decodes = java.util.concurrent.Executors.newSingleThreadExecutor(
                Thread.ofPlatform().name("dit-decode-" + model.name()).daemon(true).factory());
    }

    void start() {
        thread.start();
    }

    /**
     * Queues a generation (sending its Accepted event first).
     *
     * @throws Rejected when the queue is full or the loop is shutting down
     */
    void submit(Generation g) throws Rejected {
        submit(g, null);
    }

    private record Ticket(String client, long round) {}

    private static final class ClientShare {
        int active;
        int waiting;
        long lastRound;
    }

    /**
     * Queues a generation of {@code client} (null = anonymous: no per-client limit) behind every waiting generation
     * of a lower or equal round, sending its Accepted event first.
     *
     * @throws Rejected when the queue or the client's share of it is full, or the loop is shutting down
     */
    void submit(Generation g, String client) throws Rejected {
        String key = client == null ? "" : client;
        g.previewRunner(job -> {
            try {
                decodes.execute(job);
            } catch (java.util.concurrent.RejectedExecutionException e) {
                // shutting down: the frame is not rendered
            }
        });
        synchronized (lock) {
            if (!accepting || dead) {
                throw new Rejected(Failure.unavailable(dead
                        ? "model " + model.name() + " cannot compute (its compute loop failed); retry on another replica"
                        : "server is shutting down; retry on another replica"));
            }
            boolean runsNow = slotsTaken() < config.maxActive() && waiting.isEmpty();
            if (!runsNow && waiting.size() >= config.maxQueued()) {
                throw new Rejected(new Failure(Failure.Code.RESOURCE_EXHAUSTED, "server busy: " + active.size()
                        + " generations of model " + model.name() + " running and " + waiting.size()
                        + " queued (limit max_queued = " + config.maxQueued() + "); retry later"));
            }
            ClientShare share = clients.get(key);
            if (!runsNow && client != null && config.maxQueuedPerClient() > 0 && share != null
                    && share.waiting >= config.maxQueuedPerClient()) {
                throw new Rejected(new Failure(Failure.Code.RESOURCE_EXHAUSTED, "server busy: this client already has "
                        + share.waiting + " generations of model " + model.name() + " queued (limit "
                        + "max_queued_per_client = " + config.maxQueuedPerClient() + "); retry later"));
            }
            long round = Math.max(startedRound, share == null ? 0 : share.lastRound) + 1;
            int index = runsNow ? -1 : insertionIndex(round);
            int position = index + 1;
            g.listener.onEvent(new GenerationEvent.Accepted(g.id, position, g.plan, timesteps(g.plan.steps())));
            if (share == null) {
                share = new ClientShare();
                clients.put(key, share);
            }
            share.lastRound = round;
            tickets.put(g, new Ticket(key, round));
            if (runsNow) {
                active.add(g);
                share.active++;
                startedRound = Math.max(startedRound, round);
                observer.onQueueWait(model.name(), 0);
            } else {
                waiting.add(index, g);
                share.waiting++;
                if (index < waiting.size() - 1) {
                    notifyQueuePositions(index + 1); // those it went ahead of moved back by one
                }
            }
            lock.notifyAll();
        }
    }

    /** Where a newcomer of {@code round} waits: behind every generation of a lower or equal round. Holds the lock. */
    private int insertionIndex(long round) {
        int i = waiting.size();
        ListIterator<Generation> it = waiting.listIterator(waiting.size());
        while (it.hasPrevious() && tickets.get(it.previous()).round() > round) {
            i--;
        }
        return i;
    }

    /** {@code g} leaves the queue ({@code fromWaiting}) or the active set. Holds the lock. */
    private void left(Generation g, boolean fromWaiting) {
        Ticket t = tickets.remove(g);
        if (t == null) {
            return;
        }
        ClientShare share = clients.get(t.client());
        if (fromWaiting) {
            share.waiting--;
        } else {
            share.active--;
        }
        if (share.waiting == 0 && share.active == 0) {
            clients.remove(t.client());
        }
    }

    private static int[] timesteps(int steps) {
        int[] ts = io.ditserve.server.sampling.NoiseSchedule.respace(steps);
        int[] order = new int[ts.length];
        for (int k = 0; k < ts.length; k++) {
            order[k] = ts[ts.length - 1 - k];
        }
        return order;
    }

    void cancel(Generation g, Failure failure) {
        boolean removed;
        synchronized (lock) {
            int index = waiting.indexOf(g);
            removed = index >= 0;
            if (removed) {
                waiting.remove(index);
                left(g, true);
                notifyQueuePositions(index);
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
                    while (active.isEmpty() && (waiting.isEmpty() || slotsTaken() >= config.maxActive())
                            && !stopped) {
                        lock.wait();
                    }
                    if (stopped && active.isEmpty() && waiting.isEmpty()) {
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
                            active.remove(g);
                            left(g, false);
                            if (g.awaitingDecode() && !g.isCancelled() && !stopping) {
                                decoding.add(g);
                                decodes.execute(() -> decode(g));
                            } else {
                                if (g.awaitingDecode()) { // its listener has not been told yet
                                    g.listener.onFailed(g.isCancelled() ? g.cancelFailure()
                                            : Failure.unavailable("server shut down before the generation finished"));
                                }
                                completed++;
                            }
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

    private void failEverything(Failure f) {
        List<Generation> all;
        synchronized (lock) {
            all = new ArrayList<>(active);
            all.addAll(waiting);
            active.clear();
            waiting.clear();
            tickets.clear();
            clients.clear();
            lock.notifyAll();
        }
        for (Generation g : all) {
            if (!g.ended) {
                g.ended = true;
                g.listener.onFailed(f);
            }
        }
    }

    /** Moves waiting generations into free slots and tells the rest their new positions. Holds the lock. */
    private void promote() {
        boolean moved = false;
        while (slotsTaken() < config.maxActive() && !waiting.isEmpty()) {
            Generation g = waiting.pollFirst();
            active.add(g);
            Ticket t = tickets.get(g);
            ClientShare share = clients.get(t.client());
            share.waiting--;
            share.active++;
            startedRound = Math.max(startedRound, t.round());
            observer.onQueueWait(model.name(), (System.nanoTime() - g.acceptedNanos) / 1e9);
            moved = true;
        }
        if (moved) {
            notifyQueuePositions(0);
        }
    }

    /** Tells the waiting generations from index {@code from} on their positions. Holds the lock. */
    private void notifyQueuePositions(int from) {
        ListIterator<Generation> it = waiting.listIterator(from);
        while (it.hasNext()) {
            int pos = it.nextIndex() + 1;
            it.next().listener.onEvent(new GenerationEvent.Queued(pos));
        }
    }

    /** One tick: every generation of {@link #tick} advances one step (or leaves). */
    private void runTick() {
        for (Generation g : tick) {
            if (g.isCancelled()) {
                end(g, g.cancelFailure());
                continue;
            }
            try {
                g.prepareStep();
            } catch (RuntimeException | OutOfMemoryError e) {
                log.error("[{}] cannot start the step", g.id, e);
                end(g, Failure.internal("generation failed: " + e));
            }
        }
        rows = 0;
        for (Generation g : tick) {
            for (int s = 0; s < g.samples() && !g.ended; s++) {
                if (rows == 0) {
                    ensureBuffers(Math.min(maxBatch, remainingSamples(g, s)));
                }
                g.inputs(s, xs[capacityRows].data(), rows * per, ts[capacityRows], ys[capacityRows], rows);
                owner[rows] = g;
                ownerSample[rows] = s;
                rowUse[rows] = g.cacheUse(s);
                rowResidual[rows] = g.residual(s);
                rows++;
                if (rows == capacityRows) {
                    runPass();
                }
            }
        }
        if (rows > 0) {
            runPass();
        }
        synchronized (lock) {
            stepsComputed += tick.size();
        }
    }

    private int capacityRows;

    /** Samples still to gather this tick from generation {@code from}'s sample {@code s} on. */
    private int remainingSamples(Generation from, int s) {
        int left = 0;
        boolean counting = false;
        for (Generation g : tick) {
            if (g == from) {
                counting = true;
                left += g.samples() - s;
            } else if (counting && !g.ended) {
                left += g.samples();
            }
        }
        return left;
    }

    /** Selects (allocating on first use) the buffers for a pass of exactly {@code n} samples. */
    private void ensureBuffers(int n) {
        allocate(n);
        capacityRows = n;
    }

    private void allocate(int n) {
        if (xs[n] == null) {
            ModelSpec s = model.spec();
            xs[n] = Tensor.zeros(n, s.inChannels(), s.inputSize(), s.inputSize());
            outs[n] = Tensor.zeros(n, s.outChannels(), s.inputSize(), s.inputSize());
            ts[n] = new int[n];
            ys[n] = new int[n];
        }
    }

    private final PassCancel passCancel = new PassCancel();

    /**
     * The cancellation of the pass being run: it fires when the loop stops or every generation with a row in the
     * pass has been cancelled. Backends poll it (on the loop's thread), or ask to be told ({@link #onCancel}: the
     * generations notify it when they are cancelled, so ONNX Runtime terminates a run without polling).
     */
    private final class PassCancel implements Cancellation {
        private int rows;

        PassCancel of(int n) {
            rows = n;
            return this;
        }

        @Override
        public boolean isCancelled() {
            if (stopping) {
                return true;
            }
            for (int r = 0; r < rows; r++) {
                if (!owner[r].isCancelled()) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public Subscription onCancel(Runnable action) {
            // a snapshot: the callbacks run on other threads, after which the loop reuses owner[]
            List<Generation> owners = new ArrayList<>();
            for (int r = 0; r < rows; r++) {
                if (owners.isEmpty() || owners.getLast() != owner[r]) {
                    owners.add(owner[r]);
                }
            }
            java.util.concurrent.atomic.AtomicBoolean fired = new java.util.concurrent.atomic.AtomicBoolean();
            Runnable check = () -> {
                if ((stopping || owners.stream().allMatch(Generation::isCancelled)) && fired.compareAndSet(false, true)) {
                    action.run();
                }
            };
            List<Subscription> subs = new ArrayList<>(owners.size());
            for (Generation g : owners) {
                subs.add(g.whenCancelled(check));
            }
            return () -> subs.forEach(Subscription::close);
        }
    }

    /** Runs one forward pass over the gathered rows and hands each generation its outputs. */
    private void runPass() {
        int n = rows;
        rows = 0;
        if (n != capacityRows) {
            // generations ended by a failed pass earlier in this tick left this pass short: move to exact-size buffers
            int cap = capacityRows;
            ensureBuffers(n);
            System.arraycopy(xs[cap].data(), 0, xs[n].data(), 0, n * per);
            System.arraycopy(ts[cap], 0, ts[n], 0, n);
            System.arraycopy(ys[cap], 0, ys[n], 0, n);
        }
        Backend backend = model.backend();
        Cancellation cancel = passCancel.of(n);
        long t0 = System.nanoTime();
        try {
            backend.forward(xs[n], ts[n], ys[n], outs[n], cancel, stepCache(0, n));
        } catch (BackendException.Cancelled e) {
            failOwners(n, null);
            return;
        } catch (BackendException e) {
            if (!isolate(n, cancel)) {
                failOwners(n, Failure.internal("backend '" + backend.name() + "' failed: " + e.getMessage()));
                return;
            }
        } catch (Throwable e) {
            log.error("forward pass of model {} over {} samples failed", model.name(), n, e);
            if (!isolate(n, cancel)) {
                failOwners(n, Failure.internal("forward pass failed: " + e));
                return;
            }
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        observer.onForward(model.name(), backend.name(), n, seconds);
        double share = seconds / n;
        float[] out = outs[n].data();
        for (int r = 0; r < n; r++) {
            Generation g = owner[r];
            owner[r] = null;
            rowResidual[r] = null;
            if (g.ended) {
                continue;
            }
            g.output(ownerSample[r], out, r * outPer, share);
            if (ownerSample[r] == g.samples() - 1) {
                finish(g);
            }
        }
    }

    /**
     * After a failed pass shared by several generations: reruns each generation's rows alone, so that a request
     * whose input breaks the backend fails by itself and does not take its batch companions down. Fills
     * {@code outs[n]} for the generations that succeed and ends the others.
     *
     * @return false when the pass had a single generation (nothing to isolate; the caller fails it)
     */
    private boolean isolate(int n, Cancellation cancel) {
        if (owner[0] == owner[n - 1]) {
            return false;
        }
        Backend backend = model.backend();
        int start = 0;
        while (start < n) {
            Generation g = owner[start];
            int end = start;
            while (end < n && owner[end] == g) {
                end++;
            }
            int len = end - start;
            allocate(len);
            System.arraycopy(xs[n].data(), start * per, xs[len].data(), 0, len * per);
            System.arraycopy(ts[n], start, ts[len], 0, len);
            System.arraycopy(ys[n], start, ys[len], 0, len);
            try {
                backend.forward(xs[len], ts[len], ys[len], outs[len], g::isCancelled, stepCache(start, len));
                System.arraycopy(outs[len].data(), 0, outs[n].data(), start * outPer, len * outPer);
            } catch (BackendException.Cancelled e) {
                end(g, g.isCancelled() ? g.cancelFailure()
                        : Failure.unavailable("server shut down before the generation finished"));
            } catch (BackendException e) {
                end(g, Failure.internal("backend '" + backend.name() + "' failed: " + e.getMessage()));
            } catch (Throwable e) {
                log.error("[{}] forward pass failed", g.id, e);
                end(g, Failure.internal("forward pass failed: " + e));
            }
            start = end;
        }
        return true;
    }

    /** The step cache of rows [start, start + n), or null when they all run every block plainly. */
    private StepCache stepCache(int start, int n) {
        boolean plain = true;
        for (int r = start; r < start + n && plain; r++) {
            plain = rowUse[r] == StepCache.Use.RUN;
        }
        if (plain) {
            return null;
        }
        if (stepCaches[n] == null) { // one per pass size, like the batch buffers: no allocation per pass
            cacheUses[n] = new StepCache.Use[n];
            cacheResiduals[n] = new float[n][];
            stepCaches[n] = new StepCache(cacheUses[n], cacheResiduals[n]);
        }
        System.arraycopy(rowUse, start, cacheUses[n], 0, n);
        System.arraycopy(rowResidual, start, cacheResiduals[n], 0, n);
        return stepCaches[n];
    }

    /** Ends every generation with a sample in the failed pass; null = cancelled (each with its own reason). */
    private void failOwners(int n, Failure failure) {
        for (int r = 0; r < n; r++) {
            Generation g = owner[r];
            owner[r] = null;
            rowResidual[r] = null;
            if (!g.ended) {
                Failure f = failure != null ? failure
                        : g.isCancelled() ? g.cancelFailure()
                        : Failure.unavailable("server shut down before the generation finished");
                end(g, f);
            }
        }
    }

    /** Slots of max_active in use: stepping generations and those whose final decode is pending. Holds the lock. */
    private int slotsTaken() {
        return active.size() + decoding.size();
    }

    /** The final VAE decode of a generation whose sampling is done, on the decode thread. */
    private void decode(Generation g) {
        MDC.put("rid", g.id);
        try {
            g.decodeAndFinish(() -> stopping);
        } catch (BackendException.Cancelled e) {
            g.listener.onFailed(g.isCancelled() ? g.cancelFailure()
                    : Failure.unavailable("server shut down before the generation finished"));
        } catch (BackendException e) {
            g.listener.onFailed(Failure.internal("decoder of backend '" + model.backend().name() + "' failed: "
                    + e.getMessage()));
        } catch (Throwable e) {
            log.error("[{}] decoding failed", g.id, e);
            g.listener.onFailed(Failure.internal("decoding failed: " + e));
        } finally {
            MDC.remove("rid");
            synchronized (lock) {
                decoding.remove(g);
                completed++;
                lock.notifyAll();
            }
        }
    }

    /** The generation's step is complete: its sampler update, events, and after the last step decoding. */
    private void finish(Generation g) {
        MDC.put("rid", g.id);
        try {
            if (g.finishStep()) {
                g.ended = true;
            }
        } catch (BackendException.Cancelled e) {
            end(g, g.isCancelled() ? g.cancelFailure()
                    : Failure.unavailable("server shut down before the generation finished"));
        } catch (BackendException e) {
            end(g, Failure.internal("backend '" + model.backend().name() + "' failed: " + e.getMessage()));
        } catch (Throwable e) {
            log.error("[{}] generation failed", g.id, e);
            end(g, Failure.internal("generation failed: " + e));
        } finally {
            MDC.remove("rid");
        }
    }

    private static void end(Generation g, Failure f) {
        if (!g.ended) {
            g.ended = true;
            g.listener.onFailed(f);
        }
    }

    // ---- status and shutdown (any thread)

    void describe(List<Engine.GenerationInfo> running, List<Engine.GenerationInfo> queued, long now) {
        synchronized (lock) {
            for (Generation g : active) {
                running.add(Engine.GenerationInfo.of(g, 0, now));
            }
            for (Generation g : decoding) {
                running.add(Engine.GenerationInfo.of(g, 0, now));
            }
            int pos = 1;
            for (Generation g : waiting) {
                queued.add(Engine.GenerationInfo.of(g, pos++, now));
            }
        }
    }

    int[] counts() {
        synchronized (lock) {
            return new int[] {active.size() + decoding.size(), waiting.size()};
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
            return active.isEmpty() && waiting.isEmpty() && decoding.isEmpty();
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
            neverStarted = new ArrayList<>(waiting);
            neverStarted.forEach(g -> left(g, true));
            waiting.clear();
            active.forEach(g -> g.cancel(f));
            stopping = true;
            stopped = true;
            lock.notifyAll();
        }
        neverStarted.forEach(g -> g.listener.onFailed(f));
        decodes.shutdown(); // running decodes see `stopping` and end their generations with f's code
        if (thread.isAlive()) {
            try {
                thread.join(waitMillis);
                decodes.awaitTermination(waitMillis, java.util.concurrent.TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        } else if (thread.getState() == Thread.State.NEW) {
            // never started: no tick will tell the active generations
            failEverything(f);
        }
    }
}
