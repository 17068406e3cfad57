package io.ditserve.server.engine;

import io.ditserve.backend.BackendException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.slf4j.MDC;

/**
 * The render thread of one compute loop: decoded previews (TAESD or the VAE, newest frame per generation) and, in
 * order, the final VAE decodes, so that a generation's previews precede its results and the loop keeps stepping the
 * other generations meanwhile. {@link #decoding} (guarded by the loop's lock) holds the generations whose final
 * decode is queued or running: they still hold their slot of {@code max_active}, which bounds the decodes pending
 * (and their memory) when decoding is slower than sampling.
 */
final class RenderThread {
    private static final Logger log = LoggerFactory.getLogger(RenderThread.class);
    private final String backend;
    private final Object lock;
    private final BooleanSupplier stopping;
    private final Runnable onDone;
    private final ExecutorService decodes;
    /** Guarded by the loop's lock. */
    final List<Generation> decoding = new ArrayList<>();

    /** @param onDone called, holding the lock, after each final decode (its generation has been told the end) */
    RenderThread(String model, String backend, Object lock, BooleanSupplier stopping, Runnable onDone) {
        this.backend = backend;
        this.lock = lock;
        this.stopping = stopping;
        this.onDone = onDone;
        decodes = Executors.newSingleThreadExecutor(
                Thread.ofPlatform().name("dit-decode-" + model).daemon(true).factory());
    }

    /** Where a generation's decoded previews are rendered. */
    GenerationOutput.PreviewRunner previews() {
        return job -> {
            try {
                decodes.execute(job);
            } catch (RejectedExecutionException e) {
                // shutting down: the frame is not rendered
            }
        };
    }

    /** Queues the final decode of a generation whose sampling is done. Holds the loop's lock. */
    void finalDecode(Generation g) {
        decoding.add(g);
        decodes.execute(() -> decode(g));
    }

    private void decode(Generation g) {
        MDC.put("rid", g.id);
        try {
            g.decodeAndFinish(stopping::getAsBoolean);
        } catch (BackendException.Cancelled e) {
            g.listener.onFailed(PassExecutor.cancelledOrShutDown(g));
        } catch (BackendException e) {
            g.listener.onFailed(Failure.internal("decoder of backend '" + backend + "' failed: " + e.getMessage()));
        } catch (Throwable e) {
            log.error("[{}] decoding failed", g.id, e);
            g.listener.onFailed(Failure.internal("decoding failed: " + e));
        } finally {
            MDC.remove("rid");
            synchronized (lock) {
                decoding.remove(g);
                onDone.run();
                lock.notifyAll();
            }
        }
    }

    /** Stops taking work; running decodes see the loop's {@code stopping} and end their generations. */
    void shutdown() {
        decodes.shutdown();
    }

    void await(long millis) throws InterruptedException {
        decodes.awaitTermination(millis, TimeUnit.MILLISECONDS);
    }
}
