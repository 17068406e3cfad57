package io.ditserve.backend.java;

import java.util.concurrent.ForkJoinPool;
import java.util.concurrent.ForkJoinTask;
import java.util.concurrent.ForkJoinWorkerThread;
import java.util.concurrent.RecursiveAction;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.BooleanSupplier;

/**
 * A dedicated {@link ForkJoinPool} (never the JVM-wide common pool, which other work in the server shares) and a
 * parallel loop over independent items on it.
 *
 * <p>A job ({@link #run}) executes on a pool thread while the caller waits, so exactly {@code threads} threads
 * compute. Its loops ({@link #forEach}) fork helper tasks that were allocated once, here, and hand out items
 * through a shared counter, so a faster thread simply takes more items and a loop allocates nothing. The thread
 * that calls {@code forEach} works as worker 0 and the helpers as 1..n−1; each item sees its worker index, which
 * selects per-thread scratch memory. One job at a time; loops do not nest.
 */
final class Parallel implements AutoCloseable {

    /** The body of a loop: processes one item on one worker. */
    @FunctionalInterface
    interface Body {
        void run(int item, int worker);
    }

    private final ForkJoinPool pool;
    private final Helper[] helpers;
    private final AtomicInteger next = new AtomicInteger();
    // the current loop; written before the helpers are forked, which publishes them to the helpers' threads
    private Body body;
    private int count;

    Parallel(int threads, String name) {
        pool = new ForkJoinPool(threads, p -> {
            ForkJoinWorkerThread t = ForkJoinPool.defaultForkJoinWorkerThreadFactory.newThread(p);
            t.setName(name + "-" + t.getPoolIndex());
            t.setDaemon(true);
            return t;
        }, null, false);
        helpers = new Helper[threads - 1];
        for (int i = 0; i < helpers.length; i++) {
            helpers[i] = new Helper(i + 1);
        }
    }

    int threads() {
        return helpers.length + 1;
    }

    /** Runs {@code job} on a pool thread and waits for its result. */
    boolean run(BooleanSupplier job) {
        return pool.invoke(ForkJoinTask.adapt(job::getAsBoolean));
    }

    /** Calls {@code body} for every item in 0..count−1 on all threads; must be called from inside {@link #run}. */
    void forEach(int count, Body body) {
        int forks = Math.min(helpers.length, count - 1);
        if (forks <= 0) {
            for (int i = 0; i < count; i++) {
                body.run(i, 0);
            }
            return;
        }
        this.body = body;
        this.count = count;
        next.set(0);
        for (int i = 0; i < forks; i++) {
            helpers[i].reinitialize();
            helpers[i].fork();
        }
        try {
            drain(0);
        } finally {
            // wait for every helper even when this thread failed: the next loop reuses them
            for (int i = forks - 1; i >= 0; i--) {
                helpers[i].quietlyJoin();
            }
            this.body = null;
        }
        for (int i = 0; i < forks; i++) {
            Throwable failure = helpers[i].getException();
            if (failure != null) {
                throw new IllegalStateException("parallel loop failed on a worker thread", failure);
            }
        }
    }

    private void drain(int worker) {
        for (int i = next.getAndIncrement(); i < count; i = next.getAndIncrement()) {
            body.run(i, worker);
        }
    }

    private final class Helper extends RecursiveAction {
        private final int worker;

        Helper(int worker) {
            this.worker = worker;
        }

        @Override
        protected void compute() {
            drain(worker);
        }
    }

    /** Stops the threads; a job still running finishes first. */
    @Override
    public void close() {
        pool.shutdown();
        try {
            pool.awaitTermination(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
