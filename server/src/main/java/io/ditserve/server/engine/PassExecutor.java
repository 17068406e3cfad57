package io.ditserve.server.engine;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.server.model.LoadedModel;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

/**
 * Runs packed {@link Pass}es on the model's backend, with failure isolation: a failure inside a pass (a backend
 * error, any Throwable) reruns each generation's rows alone, so that a request whose input breaks the backend fails
 * by itself and does not take its batch companions down. Hands each generation its output rows and, once its last
 * row is back, runs its solver update ({@link #finish}), a failure of which ends that generation alone. Runs on the
 * loop's thread only.
 */
final class PassExecutor {
    private static final Logger log = LoggerFactory.getLogger(PassExecutor.class);
    private final LoadedModel model;
    private final EngineObserver observer;
    private final BooleanSupplier stopping;
    private final PassCancel passCancel = new PassCancel();

    PassExecutor(LoadedModel model, EngineObserver observer, BooleanSupplier stopping) {
        this.model = model;
        this.observer = observer;
        this.stopping = stopping;
    }

    /** Ends a generation with {@code f} unless it has ended. */
    static void end(Generation g, Failure f) {
        if (!g.ended) {
            g.ended = true;
            g.listener.onFailed(f);
        }
    }

    /** The failure of a generation whose pass was cancelled: its own reason, or the shutdown. */
    static Failure cancelledOrShutDown(Generation g) {
        return g.isCancelled() ? g.cancelFailure()
                : Failure.unavailable("server shut down before the generation finished");
    }

    /** The failure a backend error becomes. */
    private Failure backendFailure(BackendException e) {
        return Failure.internal("backend '" + model.backend().name() + "' failed: " + e.getMessage());
    }

    /** Runs the pass's packed rows and hands each generation its outputs. */
    void run(Pass pass) {
        int n = pass.rows;
        int size = pass.capacity;
        pass.rows = 0;
        Backend backend = model.backend();
        ForwardBatch batch = pass.batch(size, 0, n);
        Cancellation cancel = passCancel.of(pass, n);
        long t0 = System.nanoTime();
        try {
            backend.forward(batch, pass.out(n), cancel);
        } catch (BackendException.Cancelled e) {
            failOwners(pass, n, null);
            return;
        } catch (BackendException e) {
            if (!isolate(pass, size, n, e)) {
                failOwners(pass, n, backendFailure(e));
                return;
            }
        } catch (Throwable e) {
            log.error("forward pass of model {} over {} samples failed", model.name(), n, e);
            if (!isolate(pass, size, n, e)) {
                failOwners(pass, n, Failure.internal("forward pass failed: " + e));
                return;
            }
        }
        double seconds = (System.nanoTime() - t0) / 1e9;
        observer.onForward(model.name(), backend.name(), n, seconds);
        double share = seconds / n;
        float[] out = pass.out(n).data();
        for (int r = 0; r < n; r++) {
            Generation g = pass.owner[r];
            int s = pass.ownerSample[r];
            pass.release(r);
            if (g.ended) {
                continue;
            }
            g.output(s, out, r * pass.outPer, share);
            if (s == g.samples() - 1) {
                finish(g);
            }
        }
    }

    /** The generation's evaluation is complete: its solver update, events, and after the last step decoding. */
    private void finish(Generation g) {
        MDC.put("rid", g.id);
        try {
            if (g.finishStep()) {
                g.ended = true;
            }
        } catch (BackendException.Cancelled e) {
            end(g, cancelledOrShutDown(g));
        } catch (BackendException e) {
            end(g, Failure.internal("backend '" + model.backend().name() + "' failed: "
                    + e.getMessage()));
        } catch (Throwable e) {
            log.error("[{}] generation failed", g.id, e);
            end(g, Failure.internal("generation failed: " + e));
        } finally {
            MDC.remove("rid");
        }
    }

    /**
     * After a failed pass shared by several generations: reruns each generation's rows alone, filling the pass's
     * output for those that succeed and ending the others.
     *
     * @return false when the pass had a single generation (nothing to isolate; the caller fails it)
     */
    private boolean isolate(Pass pass, int size, int n, Throwable first) {
        if (pass.owner[0] == pass.owner[n - 1]) {
            return false;
        }
        log.debug("pass of {} rows of model {} failed ({}); rerunning each generation alone", n, model.name(),
                first.toString());
        Backend backend = model.backend();
        float[] all = pass.out(n).data();
        int start = 0;
        while (start < n) {
            Generation g = pass.owner[start];
            int end = start;
            while (end < n && pass.owner[end] == g) {
                end++;
            }
            int len = end - start;
            try {
                ForwardBatch alone = pass.batch(size, start, len);
                backend.forward(alone, pass.out(len), g::isCancelled);
                System.arraycopy(pass.out(len).data(), 0, all, start * pass.outPer, len * pass.outPer);
            } catch (BackendException.Cancelled e) {
                end(g, cancelledOrShutDown(g));
            } catch (BackendException e) {
                end(g, backendFailure(e));
            } catch (Throwable e) {
                log.error("[{}] forward pass failed", g.id, e);
                end(g, Failure.internal("forward pass failed: " + e));
            }
            start = end;
        }
        return true;
    }

    /** Ends every generation with a row in the failed pass; null = cancelled (each with its own reason). */
    private void failOwners(Pass pass, int n, Failure failure) {
        for (int r = 0; r < n; r++) {
            Generation g = pass.owner[r];
            pass.release(r);
            if (!g.ended) {
                end(g, failure != null ? failure : cancelledOrShutDown(g));
            }
        }
    }

    /**
     * The cancellation of the pass being run: it fires when the loop stops or every generation with a row in the
     * pass has been cancelled. Backends poll it (on the loop's thread), or ask to be told ({@link #onCancel}: the
     * generations notify it when they are cancelled, so ONNX Runtime terminates a run without polling).
     */
    private final class PassCancel implements Cancellation {
        private Pass pass;
        private int rows;

        PassCancel of(Pass p, int n) {
            pass = p;
            rows = n;
            return this;
        }

        @Override
        public boolean isCancelled() {
            if (stopping.getAsBoolean()) {
                return true;
            }
            for (int r = 0; r < rows; r++) {
                if (!pass.owner[r].isCancelled()) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public Subscription onCancel(Runnable action) {
            // a snapshot: the callbacks run on other threads, after which the loop reuses the owner array
            List<Generation> owners = new ArrayList<>();
            for (int r = 0; r < rows; r++) {
                if (owners.isEmpty() || owners.getLast() != pass.owner[r]) {
                    owners.add(pass.owner[r]);
                }
            }
            AtomicBoolean fired = new AtomicBoolean();
            Runnable check = () -> {
                if ((stopping.getAsBoolean() || owners.stream().allMatch(Generation::isCancelled))
                        && fired.compareAndSet(false, true)) {
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
}
