package io.ditserve.server.engine;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.sampling.Guidance;
import io.ditserve.server.sampling.Solver;
import io.ditserve.server.sampling.Solvers;
import java.util.SplittableRandom;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One request's sampling state, advanced one model evaluation per tick by its {@link ComputeLoop}: the loop gathers
 * {@link #inputs} of every active generation's next evaluation into shared forward passes, hands each its slice of
 * the output back ({@link #output}), then calls {@link #finishEvaluation}, which gives the output to this
 * generation's own {@link Solver} and, when that completes a step, emits the step's events. A solver with two
 * evaluations per step (Heun) thus takes two ticks per step, each a pass shared with other generations.
 *
 * <p>Noise: image i draws from {@code new SplittableRandom(seeds[i])}: first x_T (C·H·W standard normal values,
 * row-major, {@code nextGaussian}), then, in sampling order, each step's noise where the solver needs it (DDPM at
 * i > 0, DDIM with eta > 0 at i > 0, Euler–Maruyama before its last step). With an explicit initial noise, x_T comes
 * from the request instead. Nothing here depends on which other generations share a pass: the same request gives
 * the same bytes in any company.
 *
 * <p>All buffers are allocated once, when the generation starts; decoding and previews are {@link GenerationOutput}'s.
 */
final class Generation {
    private static final Logger log = LoggerFactory.getLogger(Generation.class);
    final String id;
    final long order;
    final GenerationPlan plan;
    final GenerationListener listener;
    final long acceptedNanos;
    final EngineObserver observer;
    final GenerationOutput rendering;
    private volatile boolean cancelled;
    private final java.util.List<Runnable> cancelListeners = new java.util.concurrent.CopyOnWriteArrayList<>();
    /** Set by the compute loop once the listener has been told the end (only the loop's thread touches it). */
    boolean ended;
    private volatile boolean awaitingDecode;
    private volatile Failure cancelFailure = Failure.cancelled("cancelled by the client");

    final ModelSpec spec;
    final int n;
    final int per;
    private final int outPer;
    private Solver solver;
    private Solver.Evaluation evaluation;
    private int samples;
    private SplittableRandom[] rngs;
    float[] x;
    private float[] xNext;
    float[] x0;
    private float[] noise;
    private float[] out;
    private float[][] residuals; // step caching: one per sample row (docs/STEP_CACHE.md), null when off
    private StepCache.Use cacheUse = StepCache.Use.RUN; // this evaluation's
    private volatile int done;
    private int evaluationsDone;
    private boolean midStep;
    long startNanos;
    private long stepStartNanos;
    double forwardSeconds;

    Generation(String id, long order, GenerationPlan plan, GenerationListener listener, EngineObserver observer,
            TiledDecoding.Tiling tiling) {
        this.id = id;
        this.order = order;
        this.plan = plan;
        this.listener = listener;
        this.observer = observer;
        this.acceptedNanos = System.nanoTime();
        this.spec = plan.model().spec();
        this.n = plan.numImages();
        int hw = spec.inputSize() * spec.inputSize();
        this.per = spec.inChannels() * hw;
        this.outPer = spec.outChannels() * hw;
        this.rendering = new GenerationOutput(this, tiling);
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

    /** Samples this generation puts into this tick's forward passes (its images, doubled when guided). */
    int samples() {
        return samples;
    }

    boolean started() {
        return solver != null;
    }

    private void start() {
        startNanos = System.nanoTime();
        solver = Solvers.create(spec, plan.solverSettings(), n);
        x = new float[n * per];
        xNext = new float[n * per];
        x0 = new float[n * per];
        noise = new float[n * per];
        out = new float[plan.samples() * outPer];
        if (plan.stepCaching().enabled()) {
            residuals = new float[plan.samples()][StepCache.residualLength(spec)];
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

    /** Prepares this tick's evaluation (starting the generation on its first tick). */
    void prepareStep() {
        if (solver == null) {
            start();
        }
        if (!midStep) {
            stepStartNanos = System.nanoTime();
        }
        evaluation = solver.next(done, x);
        samples = Guidance.samples(n, evaluation.guided());
        cacheUse = plan.stepCaching().use(evaluationsDone, solver.evaluations());
    }

    /** What sample row s does with the cached span this evaluation. */
    StepCache.Use cacheUse(int s) {
        return cacheUse;
    }

    /** Sample row s's residual of the cached span, or null when this generation does not cache steps. */
    float[] residual(int s) {
        return residuals == null ? null : residuals[s];
    }

    /**
     * Copies sample s of this evaluation's inputs into a batch: x at {@code dst[off ..]} and its time. Samples
     * n..2n−1 are the unconditional twins of images 0..n−1: the same input, the unconditional conditioning.
     */
    void inputs(int s, float[] dst, int off, float[] tDst, int row) {
        System.arraycopy(evaluation.input(), (s >= n ? s - n : s) * per, dst, off, per);
        tDst[row] = evaluation.time();
    }

    /** Sample s's class label: the plan's, or the null class for an unconditional twin (class models). */
    int label(int s) {
        return s >= n ? spec.nullClass() : plan.label();
    }

    /** Sample s's text conditioning: the prompt's, or the negative prompt's for an unconditional twin. */
    io.ditserve.server.model.TextPipeline.Embedding text(int s) {
        return s >= n ? plan.negativePrompt() : plan.prompt();
    }

    /** Takes the model output of sample s from a batch, and this sample's share of the pass time. */
    void output(int s, float[] src, int off, double forwardShareSeconds) {
        System.arraycopy(src, off, out, s * outPer, outPer);
        forwardSeconds += forwardShareSeconds;
    }

    /**
     * Gives this evaluation's output to the solver; when that completes a step, emits the step's events and after
     * the last step decodes (when the plan needs pixels of a latent model) and emits the results.
     *
     * @return true when the generation has ended (the listener has been told): after its last step, or when the
     *     step gave a NaN or infinity (INTERNAL naming the step; a scan of the new sample, cheap next to the pass)
     */
    boolean finishStep() throws BackendException {
        int k = done;
        if (!midStep && solver.needsNoise(k)) { // once per step, at its first evaluation, in sampling order
            for (int b = 0; b < n; b++) {
                for (int j = 0; j < per; j++) {
                    noise[b * per + j] = (float) rngs[b].nextGaussian();
                }
            }
        }
        boolean stepDone = solver.consume(k, x, out, noise, x0, xNext);
        evaluationsDone++;
        midStep = !stepDone;
        if (!stepDone) {
            return false;
        }
        int bad = firstNonFinite(xNext);
        if (bad >= 0) {
            Failure f = Failure.internal("step " + (done + 1) + " of " + plan.steps() + " (time " + solver.time(k)
                    + ") produced a non-finite sample value (" + xNext[bad] + " in image " + bad / per
                    + "): the model's weights or its numerics are broken");
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
        listener.onEvent(new GenerationEvent.Progress(done, plan.steps(), solver.timestep(k), solver.time(k),
                (now - startNanos) / 1e9, stepSeconds));
        boolean last = done == plan.steps();
        if (plan.previewInterval() > 0 && (done % plan.previewInterval() == 0 || last) && listener.wantsPreview()) {
            rendering.emitPreviews(done);
        }
        if (last) {
            if (plan.needsDecodedImage() || rendering.decodedPreviews()) {
                awaitingDecode = true; // the loop hands it to its render thread: decodeAndFinish, after its previews
                return true;
            }
            rendering.emitResults(Cancellation.NEVER);
            observer.onImages(plan.model().name(), n);
            listener.onCompleted();
            return true;
        }
        return false;
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
        rendering.emitResults(() -> cancelled || stop.isCancelled());
        observer.onImages(plan.model().name(), n);
        listener.onCompleted();
    }

    /** Hands decoded-preview work to the loop (set by the loop before the first step). */
    void previewRunner(GenerationOutput.PreviewRunner runner) {
        rendering.previewRunner(runner);
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
}
