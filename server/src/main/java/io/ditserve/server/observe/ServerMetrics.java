package io.ditserve.server.observe;

import io.ditserve.server.engine.Engine;
import io.ditserve.server.engine.EngineObserver;
import io.prometheus.metrics.core.metrics.Counter;
import io.prometheus.metrics.core.metrics.GaugeWithCallback;
import io.prometheus.metrics.core.metrics.Histogram;
import io.prometheus.metrics.model.registry.PrometheusRegistry;
import java.time.Duration;
import java.util.function.Supplier;

/**
 * The server's Prometheus metrics, in a registry of its own (no JVM-wide static registry, so that several servers
 * in one process, as in tests, do not collide).
 */
public final class ServerMetrics implements EngineObserver {
    private static final double[] STEP_BUCKETS = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
        10};

    private final PrometheusRegistry registry = new PrometheusRegistry();
    private final Counter requests;
    private final Counter images;
    private final Counter previewsDropped;
    private final Histogram stepSeconds;
    private final Histogram forwardSeconds;
    private final Histogram batchSamples;
    private final Counter samples;
    private final Histogram queueWait;
    private final Counter promptCache;
    private final Counter authFailures;
    private final Counter connectionsRefused;
    private final Counter callsRefused;
    private static final double[] BATCH_BUCKETS = {1, 2, 4, 8, 16, 32, 64, 128, 256};
    private static final double[] WAIT_BUCKETS = {0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120};

    /** Notified when a Generate call is counted ({@link #awaitRequests}). */
    private final Object requestEnded = new Object();

    public ServerMetrics() {
        requests = Counter.builder().name("dit_requests_total")
                .help("Generate calls by final gRPC status code").labelNames("model", "code").register(registry);
        images = Counter.builder().name("dit_images_generated_total").help("Images delivered")
                .labelNames("model").register(registry);
        previewsDropped = Counter.builder().name("dit_preview_frames_dropped_total")
                .help("Preview frames replaced by newer ones or skipped because the client was slow").register(registry);
        stepSeconds = Histogram.builder().name("dit_step_seconds").help("Wall time of one denoising step")
                .labelNames("backend", "model").classicUpperBounds(STEP_BUCKETS).register(registry);
        forwardSeconds = Histogram.builder().name("dit_forward_seconds")
                .help("Wall time of one backend forward pass (over the samples of every generation in it)")
                .labelNames("backend", "model").classicUpperBounds(STEP_BUCKETS).register(registry);
        batchSamples = Histogram.builder().name("dit_forward_batch_samples").help("Samples per forward pass")
                .labelNames("backend", "model").classicUpperBounds(BATCH_BUCKETS).register(registry);
        samples = Counter.builder().name("dit_forward_samples_total")
                .help("Samples computed by forward passes (rate() gives samples per second)")
                .labelNames("backend", "model").register(registry);
        queueWait = Histogram.builder().name("dit_queue_wait_seconds")
                .help("Time from acceptance to the first step").labelNames("model")
                .classicUpperBounds(WAIT_BUCKETS).register(registry);
        promptCache = Counter.builder().name("dit_prompt_cache_lookups_total")
                .help("Prompt embeddings looked up in a text model's cache, by result (a hit skips the encoders)")
                .labelNames("result").register(registry);
        authFailures = Counter.builder().name("dit_auth_failures_total")
                .help("Calls that failed authentication, by reason: missing or invalid token, or refused (the "
                        + "address failed auth_max_failures times within auth_failure_window_seconds)")
                .labelNames("reason").register(registry);
        connectionsRefused = Counter.builder().name("dit_connections_refused_total")
                .help("Connections closed at accept: over max_connections (total) or max_connections_per_address")
                .labelNames("limit").register(registry);
        callsRefused = Counter.builder().name("dit_calls_refused_total")
                .help("Generate calls refused before they were queued because of a per-client limit, by limit")
                .labelNames("limit").register(registry);
    }

    /** The gauge of output held for clients that have not read it (docs: DeliveryLedger). */
    public void undeliveredBytes(java.util.function.LongSupplier total) {
        GaugeWithCallback.builder().name("dit_undelivered_bytes")
                .help("Bytes of finished output held for clients that have not read it (queued events and messages"
                        + " the transport holds for a closed HTTP/2 window)")
                .callback(cb -> cb.call(total.getAsLong())).register(registry);
    }

    /** A call failed authentication (reason: missing, invalid, refused). */
    public void authFailure(String reason) {
        authFailures.labelValues(reason).inc();
    }

    public double authFailures(String reason) {
        return authFailures.labelValues(reason).get();
    }

    /** A connection was closed at accept (limit: total, per_address). */
    public void connectionRefused(String limit) {
        connectionsRefused.labelValues(limit).inc();
    }

    public double connectionsRefused(String limit) {
        return connectionsRefused.labelValues(limit).get();
    }

    /** A Generate call was refused by a per-client limit (e.g. undelivered_bytes_per_client). */
    public void callRefused(String limit) {
        callsRefused.labelValues(limit).inc();
    }

    public double callsRefused(String limit) {
        return callsRefused.labelValues(limit).get();
    }

    /** Prompt-cache lookups so far with this result. */
    public double promptCacheLookups(boolean hit) {
        return promptCache.labelValues(hit ? "hit" : "miss").get();
    }

    /** A text model's prompt cache was asked for a prompt (docs/TEXT_MODELS.md). */
    public void promptCacheLookup(boolean hit) {
        promptCache.labelValues(hit ? "hit" : "miss").inc();
    }

    /** Gauges that read the engine when scraped. */
    public void bindEngine(Engine engine) {
        gauge("dit_queue_depth", "Generations waiting for a slot", () -> engine.snapshot().queued());
        gauge("dit_active_generations", "Generations running", () -> engine.snapshot().running());
    }

    private void gauge(String name, String help, Supplier<Integer> value) {
        GaugeWithCallback.builder().name(name).help(help).callback(cb -> cb.call(value.get())).register(registry);
    }

    public PrometheusRegistry registry() {
        return registry;
    }

    public void request(String model, String code) {
        requests.labelValues(model.isEmpty() ? "-" : model, code).inc();
        synchronized (requestEnded) {
            requestEnded.notifyAll();
        }
    }

    /**
     * Waits until at least {@code n} Generate calls of {@code model} have ended with {@code code} (a call is counted
     * just after its client sees the status), for at most {@code timeout}; returns whether they have.
     */
    public boolean awaitRequests(String model, String code, long n, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        synchronized (requestEnded) {
            while (requests.labelValues(model, code).get() < n) {
                long waitMs = (deadline - System.nanoTime()) / 1_000_000;
                if (waitMs <= 0) {
                    return false;
                }
                requestEnded.wait(waitMs);
            }
            return true;
        }
    }

    public void previewsDropped(long n) {
        previewsDropped.inc(n);
    }

    /** Preview frames dropped so far. */
    public long previewsDropped() {
        return (long) previewsDropped.get();
    }

    @Override
    public void onStep(String model, String backend, double step) {
        stepSeconds.labelValues(backend, model).observe(step);
    }

    @Override
    public void onForward(String model, String backend, int n, double seconds) {
        forwardSeconds.labelValues(backend, model).observe(seconds);
        batchSamples.labelValues(backend, model).observe(n);
        samples.labelValues(backend, model).inc(n);
    }

    /**
     * Forward passes, the samples they held and the seconds they took so far, for one model on one backend
     * (benchmarks read this).
     */
    public double[] passesAndSamples(String backend, String model) {
        return new double[] {batchSamples.labelValues(backend, model).getCount(),
            samples.labelValues(backend, model).get(), forwardSeconds.labelValues(backend, model).getSum()};
    }

    @Override
    public void onQueueWait(String model, double seconds) {
        queueWait.labelValues(model).observe(seconds);
    }

    @Override
    public void onImages(String model, int n) {
        images.labelValues(model).inc(n);
    }
}
