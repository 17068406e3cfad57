package io.ditserve.server.engine;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.sampling.NoiseSchedule;
import io.ditserve.server.sampling.SamplingStep;
import java.util.SplittableRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One request's sampling state, advanced one denoising step per tick by its {@link ComputeLoop}: the loop gathers
 * {@link #inputs} of every active generation into shared forward passes, hands each its slice of the output back
 * ({@link #output}), then calls {@link #finishStep}, which applies this generation's own sampler update and emits
 * its events.
 *
 * <p>Noise: image i draws from {@code new SplittableRandom(seeds[i])}: first x_T (C·H·W standard normal values,
 * row-major, {@code nextGaussian}), then, in sampling order, each step's noise where the sampler needs it (DDPM at
 * i > 0, DDIM with eta > 0 at i > 0). With an explicit initial noise, x_T comes from the request instead. Nothing
 * here depends on which other generations share a pass: the same request gives the same bytes in any company.
 *
 * <p>All buffers are allocated once, when the generation starts.
 */
final class Generation {
    private static final Logger log = LoggerFactory.getLogger(Generation.class);
    final String id;
    final long order;
    final GenerationPlan plan;
    final GenerationListener listener;
    final long acceptedNanos;
    private final EngineObserver observer;
    private final TiledDecoding.Tiling tiling;
    private volatile boolean cancelled;
    private final java.util.List<Runnable> cancelListeners = new java.util.concurrent.CopyOnWriteArrayList<>();
    /** Set by the compute loop once the listener has been told the end (only the loop's thread touches it). */
    boolean ended;
    private volatile boolean awaitingDecode;
    private volatile Failure cancelFailure = Failure.cancelled("cancelled by the client");

    private final ModelSpec spec;
    private final int n;
    private final int samples;
    private final int per;
    private final int outPer;
    private final int hw;
    private SamplingStep stepper;
    private NoiseSchedule schedule;
    private SplittableRandom[] rngs;
    private float[] x;
    private float[] xNext;
    private float[] x0;
    private float[] noise;
    private float[] out;
    private float[][] residuals; // step caching: one per sample row (docs/STEP_CACHE.md), null when off
    private StepCache.Use cacheUse = StepCache.Use.RUN; // this step's
    private int timestep; // this step's original-schedule timestep, shared by all its samples
    private volatile int done;
    private long startNanos;
    private long stepStartNanos;
    private double forwardSeconds;
    private double decodeSeconds;

    Generation(String id, long order, GenerationPlan plan, GenerationListener listener, EngineObserver observer,
            TiledDecoding.Tiling tiling) {
        this.tiling = tiling;
        this.id = id;
        this.order = order;
        this.plan = plan;
        this.listener = listener;
        this.observer = observer;
        this.acceptedNanos = System.nanoTime();
        this.spec = plan.model().spec();
        this.n = plan.numImages();
        this.samples = plan.samples();
        this.hw = spec.inputSize() * spec.inputSize();
        this.per = spec.inChannels() * hw;
        this.outPer = spec.outChannels() * hw;
    }

    void cancel(Failure failure) {
        cancelFailure = failure;
        cancelled = true;
        for (Runnable r : cancelListeners) {
            r.run();
        }
    }

    /** Told (on the cancelling thread) when this generation is cancelled; at once if it already is. */
    Cancellation.Subscription whenCancelled(Runnable action) {
        cancelListeners.add(action);
        if (cancelled) {
            action.run();
        }
        return () -> cancelListeners.remove(action);
    }

    boolean isCancelled() {
        return cancelled;
    }

    Failure cancelFailure() {
        return cancelFailure;
    }

    int totalSteps() {
        return plan.steps();
    }

    int stepsDone() {
        return done;
    }

    /** Samples this generation puts into each step's forward passes. */
    int samples() {
        return samples;
    }

    boolean started() {
        return schedule != null;
    }

    private void start() {
        startNanos = System.nanoTime();
        schedule = NoiseSchedule.respaced(plan.steps());
        stepper = new SamplingStep(spec, schedule, plan.sampler(), plan.eta(), plan.guidance(), plan.guidanceMode(),
                n);
        x = new float[n * per];
        xNext = new float[n * per];
        x0 = new float[n * per];
        noise = new float[n * per];
        out = new float[samples * outPer];
        if (plan.stepCaching().enabled()) {
            residuals = new float[samples][StepCache.residualLength(spec)];
        }
        rngs = new SplittableRandom[n];
        for (int b = 0; b < n; b++) {
            rngs[b] = new SplittableRandom(plan.seeds()[b]);
            if (plan.initialNoise() == null) {
                for (int k = 0; k < per; k++) {
                    x[b * per + k] = (float) rngs[b].nextGaussian();
                }
            }
        }
        if (plan.initialNoise() != null) {
            System.arraycopy(plan.initialNoise(), 0, x, 0, x.length);
        }
    }

    /** Prepares this tick's model inputs (starting the generation on its first tick). */
    void prepareStep() {
        if (schedule == null) {
            start();
        }
        stepStartNanos = System.nanoTime();
        timestep = schedule.timestep(plan.steps() - 1 - done);
        cacheUse = plan.stepCaching().use(done, plan.steps());
    }

    /** What sample row s does with the cached span this step. */
    StepCache.Use cacheUse(int s) {
        return cacheUse;
    }

    /** Sample row s's residual of the cached span, or null when this generation does not cache steps. */
    float[] residual(int s) {
        return residuals == null ? null : residuals[s];
    }

    /** Copies sample s of this step's inputs into a batch: x at {@code dst[off ..]}, its t and y. */
    void inputs(int s, float[] dst, int off, int[] tDst, int[] yDst, int row) {
        // samples n..2n−1 are the unconditional twins of images 0..n−1: the same x, the null label
        boolean twin = s >= n;
        System.arraycopy(x, (twin ? s - n : s) * per, dst, off, per);
        tDst[row] = timestep;
        yDst[row] = twin ? spec.nullClass() : plan.label();
    }

    /** Takes the model output of sample s from a batch, and this sample's share of the pass time. */
    void output(int s, float[] src, int off, double forwardShareSeconds) {
        System.arraycopy(src, off, out, s * outPer, outPer);
        forwardSeconds += forwardShareSeconds;
    }

    /**
     * Applies the sampler update to this step's model output and emits the step's events; after the last step
     * decodes (when the plan needs pixels of a latent model) and emits the results.
     *
     * @return true when the generation has ended (the listener has been told): after its last step, or when the
     *     step gave a NaN or infinity (INTERNAL naming the step; a scan of the new sample, cheap next to the pass)
     */
    boolean finishStep() throws BackendException {
        int i = plan.steps() - 1 - done;
        if (stepper.needsNoise(i)) {
            for (int b = 0; b < n; b++) {
                for (int k = 0; k < per; k++) {
                    noise[b * per + k] = (float) rngs[b].nextGaussian();
                }
            }
        }
        stepper.apply(i, x, out, noise, x0, xNext);
        int bad = firstNonFinite(xNext);
        if (bad >= 0) {
            Failure f = Failure.internal("step " + (done + 1) + " of " + plan.steps() + " (timestep "
                    + schedule.timestep(i) + ") produced a non-finite sample value (" + xNext[bad] + " in image "
                    + bad / per + "): the model's weights or its numerics are broken");
            log.warn("[{}] {}", id, f.message());
            listener.onFailed(f);
            return true;
        }
        float[] swap = x;
        x = xNext;
        xNext = swap;
        done++;
        long now = System.nanoTime();
        double stepSeconds = (now - stepStartNanos) / 1e9;
        observer.onStep(plan.model().name(), plan.model().backend().name(), stepSeconds);
        listener.onEvent(new GenerationEvent.Progress(done, plan.steps(), schedule.timestep(i),
                (now - startNanos) / 1e9, stepSeconds));
        boolean last = done == plan.steps();
        if (plan.previewInterval() > 0 && (done % plan.previewInterval() == 0 || last) && listener.wantsPreview()) {
            emitPreviews();
        }
        if (last) {
            if (plan.needsDecodedImage() || decodedPreviews()) {
                awaitingDecode = true; // the loop hands it to its render thread: decodeAndFinish, after its previews
                return true;
            }
            emitResults(Cancellation.NEVER);
            observer.onImages(plan.model().name(), n);
            listener.onCompleted();
            return true;
        }
        return false;
    }

    private boolean decodedPreviews() {
        return plan.previewInterval() > 0 && plan.previewDecoder() != PreviewDecoder.LINEAR;
    }

    /**
     * Set when sampling is done and the results wait for the render thread ({@link #decodeAndFinish}): to be decoded
     * with the VAE, or to follow the generation's decoded previews.
     */
    boolean awaitingDecode() {
        return awaitingDecode;
    }

    /**
     * Decodes the final latents with the VAE (batched over the images, tiled when large) and emits the results; runs
     * on the loop's decode thread, so that other generations keep stepping meanwhile. Stops when the generation is
     * cancelled or {@code stop} fires.
     */
    void decodeAndFinish(Cancellation stop) throws BackendException {
        emitResults(() -> cancelled || stop.isCancelled());
        observer.onImages(plan.model().name(), n);
        listener.onCompleted();
    }

    /** Index of the first NaN or infinity in v, or −1. */
    private static int firstNonFinite(float[] v) {
        for (int k = 0; k < v.length; k++) {
            if (!Float.isFinite(v[k])) {
                return k;
            }
        }
        return -1;
    }

    private Frame.Space sampleSpace() {
        return plan.model().latent() ? Frame.Space.LATENT : Frame.Space.IMAGE;
    }

    private void emitPreviews() throws BackendException {
        int s = spec.inputSize();
        Decoder decoder = switch (plan.previewDecoder()) {
            case LINEAR -> null;
            case TINY -> plan.model().tinyDecoder();
            case FULL -> plan.model().vaeDecoder();
        };
        if (decoder == null) {
            for (int b = 0; b < n; b++) {
                listener.onEvent(new GenerationEvent.Preview(b, done, PreviewDecoder.LINEAR,
                        Frame.copyOf(x0, b * per, spec.inChannels(), s, s, sampleSpace())));
            }
            return;
        }
        requestDecodedPreview(x0.clone(), done);
    }

    // ---- decoded previews (TAESD or VAE), rendered on the loop's preview thread

    /** Hands decoded-preview work to the loop (set by the loop before the first step). */
    interface PreviewRunner {
        void submit(Runnable job);
    }

    private PreviewRunner previewRunner;
    private final Object previewLock = new Object();
    private float[] previewLatent; // the newest estimate waiting to be decoded, or null
    private int previewStep;
    private boolean previewQueued;
    private boolean resultsEmitted;

    void previewRunner(PreviewRunner runner) {
        this.previewRunner = runner;
    }

    /**
     * Queues the decoding of a preview frame; when one is already waiting, the newer estimate replaces it (the
     * latest frame wins), so a generation has at most one queued decode and one copy of its estimate.
     */
    private void requestDecodedPreview(float[] latent, int step) {
        boolean submit;
        synchronized (previewLock) {
            previewLatent = latent;
            previewStep = step;
            submit = !previewQueued;
            previewQueued = true;
        }
        if (submit) {
            previewRunner.submit(this::renderPreview);
        }
    }

    /**
     * Decodes the newest waiting estimate and emits it, unless the generation has meanwhile ended or emitted its
     * results (a preview never follows a result in the stream).
     */
    private void renderPreview() {
        float[] latent;
        int step;
        synchronized (previewLock) {
            latent = previewLatent;
            step = previewStep;
            previewLatent = null;
            previewQueued = false;
            if (latent == null || resultsEmitted || cancelled || !listener.wantsPreview()) {
                return;
            }
        }
        Decoder decoder = plan.previewDecoder() == PreviewDecoder.TINY ? plan.model().tinyDecoder()
                : plan.model().vaeDecoder();
        Tensor image;
        try {
            image = decode(decoder, latent, false, () -> cancelled || resultsEmitted);
        } catch (BackendException e) {
            if (!(e instanceof BackendException.Cancelled)) {
                log.warn("[{}] preview at step {} not decoded: {}", id, step, e.getMessage());
            }
            return;
        }
        synchronized (previewLock) {
            if (!resultsEmitted && !cancelled) {
                emitDecoded(image, (b, frame) -> listener.onEvent(
                        new GenerationEvent.Preview(b, step, plan.previewDecoder(), frame)));
            }
        }
    }

    /**
     * Decodes all n latents of {@code src} in one call (tiled when large); the result is freshly allocated. Only the
     * final images' decoding counts as the result's decode time (previews are part of sampling).
     */
    private Tensor decode(Decoder decoder, float[] src, boolean finalImages, Cancellation cancel)
            throws BackendException {
        int s = spec.inputSize();
        int f = decoder.spec().scaleFactor();
        Tensor latent = new Tensor(src.clone(), n, spec.inChannels(), s, s);
        Tensor image = Tensor.zeros(n, decoder.spec().outChannels(), f * s, f * s);
        long d0 = System.nanoTime();
        TiledDecoding.decode(decoder, latent, image, tiling, cancel);
        if (finalImages) {
            decodeSeconds += (System.nanoTime() - d0) / 1e9;
        }
        return image;
    }

    private interface FrameSink {
        void accept(int imageIndex, Frame frame);
    }

    private static void emitDecoded(Tensor image, FrameSink sink) {
        int c = image.dim(1);
        int h = image.dim(2);
        int w = image.dim(3);
        for (int b = 0; b < image.dim(0); b++) {
            sink.accept(b, Frame.copyOf(image.data(), b * image.stride0(), c, h, w, Frame.Space.IMAGE));
        }
    }

    private void emitResults(Cancellation decodeCancel) throws BackendException {
        int s = spec.inputSize();
        Frame[] images = new Frame[n];
        if (plan.needsDecodedImage()) {
            emitDecoded(decode(plan.model().vaeDecoder(), x, true, decodeCancel), (b, frame) -> images[b] = frame);
        }
        long now = System.nanoTime();
        GenerationEvent.Timings timings = new GenerationEvent.Timings((startNanos - acceptedNanos) / 1e9,
                (now - startNanos) / 1e9, forwardSeconds, decodeSeconds);
        synchronized (previewLock) {
            resultsEmitted = true; // guard: no preview after a result (the render thread's order already ensures it)
        }
        for (int b = 0; b < n; b++) {
            listener.onEvent(new GenerationEvent.Result(b, plan.seeds()[b],
                    Frame.copyOf(x, b * per, spec.inChannels(), s, s, sampleSpace()), images[b], timings));
        }
    }
}
