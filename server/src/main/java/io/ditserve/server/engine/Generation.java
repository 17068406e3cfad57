package io.ditserve.server.engine;

import com.google.protobuf.ByteString;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.Preview;
import io.ditserve.proto.v1.Progress;
import io.ditserve.proto.v1.Result;
import io.ditserve.proto.v1.Timings;
import io.ditserve.server.image.ImageCodec;
import io.ditserve.server.sampling.NoiseSchedule;
import io.ditserve.server.sampling.Samplers;
import io.grpc.Status;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.SplittableRandom;

/**
 * One request's sampling loop, advanced one denoising step at a time by the {@link Engine}.
 *
 * <p>Noise: image i draws from {@code new SplittableRandom(seeds[i])}: first x_T (C·H·W standard normal values,
 * row-major, {@code nextGaussian}), then, in sampling order, each step's noise where the sampler needs it (DDPM at
 * i > 0, DDIM with eta > 0 at i > 0). With an explicit initial noise, x_T comes from the request instead.
 *
 * <p>All buffers are allocated once, when the generation starts.
 */
final class Generation {
    final String id;
    final GenerationPlan plan;
    final GenerationListener listener;
    final long acceptedNanos;
    private volatile boolean cancelled;
    private volatile Status cancelStatus = Status.CANCELLED.withDescription("cancelled by the client");

    private final ModelSpec spec;
    private final int n;
    private final int batch;
    private final int per;
    private final int hw;
    private NoiseSchedule schedule;
    private SplittableRandom[] rngs;
    private float[] x;
    private float[] xNext;
    private float[] x0;
    private float[] noise;
    private float[] guided;
    private Tensor in;
    private Tensor out;
    private int[] t;
    private int[] y;
    private volatile int done;
    private long startNanos;
    private long forwardNanos;

    private final EngineObserver observer;

    Generation(String id, GenerationPlan plan, GenerationListener listener, EngineObserver observer) {
        this.observer = observer;
        this.id = id;
        this.plan = plan;
        this.listener = listener;
        this.acceptedNanos = System.nanoTime();
        this.spec = plan.model().spec();
        this.n = plan.numImages();
        this.batch = plan.guided() ? 2 * n : n;
        this.hw = spec.inputSize() * spec.inputSize();
        this.per = spec.inChannels() * hw;
    }

    void cancel(Status status) {
        cancelStatus = status;
        cancelled = true;
    }

    boolean isCancelled() {
        return cancelled;
    }

    Status cancelStatus() {
        return cancelStatus;
    }

    int totalSteps() {
        return plan.steps();
    }

    int stepsDone() {
        return done;
    }

    private void start() {
        startNanos = System.nanoTime();
        schedule = NoiseSchedule.respaced(plan.steps());
        int s = spec.inputSize();
        x = new float[n * per];
        xNext = new float[n * per];
        x0 = new float[n * per];
        noise = new float[n * per];
        guided = new float[n * spec.outChannels() * hw];
        in = Tensor.zeros(batch, spec.inChannels(), s, s);
        out = Tensor.zeros(batch, spec.outChannels(), s, s);
        t = new int[batch];
        y = new int[batch];
        for (int b = 0; b < batch; b++) {
            y[b] = b < n ? plan.label() : spec.nullClass();
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

    /**
     * Runs one denoising step and emits its events. Returns true when the generation has ended (finished,
     * cancelled or failed); the listener has then been told.
     */
    boolean step() {
        if (cancelled) {
            listener.onFailed(cancelStatus);
            return true;
        }
        try {
            if (schedule == null) {
                start();
            }
            int i = plan.steps() - 1 - done;
            long stepStart = System.nanoTime();
            System.arraycopy(x, 0, in.data(), 0, n * per);
            if (plan.guided()) {
                System.arraycopy(x, 0, in.data(), n * per, n * per);
            }
            java.util.Arrays.fill(t, schedule.timestep(i));
            long f0 = System.nanoTime();
            plan.model().backend().forward(in, t, y, out, this::isCancelled);
            long forward = System.nanoTime() - f0;
            forwardNanos += forward;
            float[] modelOut = out.data();
            if (plan.guided()) {
                Samplers.guide(out.data(), n, spec.outChannels(), spec.inChannels(), hw, plan.guidance(),
                        plan.guidanceMode(), guided);
                modelOut = guided;
            }
            boolean needsNoise = i > 0 && (plan.sampler() == GenerationPlan.Sampler.DDPM || plan.eta() > 0);
            if (needsNoise) {
                for (int b = 0; b < n; b++) {
                    for (int k = 0; k < per; k++) {
                        noise[b * per + k] = (float) rngs[b].nextGaussian();
                    }
                }
            }
            if (plan.sampler() == GenerationPlan.Sampler.DDIM) {
                Samplers.ddimStep(schedule, i, plan.eta(), x, modelOut, n, spec.inChannels(), spec.outChannels(),
                        hw, noise, x0, xNext);
            } else {
                Samplers.ddpmStep(schedule, i, spec.learnSigma(), x, modelOut, n, spec.inChannels(),
                        spec.outChannels(), hw, noise, x0, xNext);
            }
            float[] swap = x;
            x = xNext;
            xNext = swap;
            done++;
            long now = System.nanoTime();
            observer.onStep(plan.model().name(), plan.model().backend().name(), (now - stepStart) / 1e9, forward / 1e9);
            listener.onEvent(GenerateEvent.newBuilder().setProgress(Progress.newBuilder()
                    .setStep(done).setTotalSteps(plan.steps()).setTimestep(schedule.timestep(i))
                    .setElapsedSeconds((now - startNanos) / 1e9).setStepSeconds((now - stepStart) / 1e9)).build());
            boolean last = done == plan.steps();
            if (plan.previewInterval() > 0 && (done % plan.previewInterval() == 0 || last) && listener.wantsPreview()) {
                emitPreviews();
            }
            if (last) {
                emitResults();
                observer.onImages(plan.model().name(), n);
                listener.onCompleted();
                return true;
            }
            return false;
        } catch (BackendException.Cancelled e) {
            listener.onFailed(cancelStatus);
            return true;
        } catch (BackendException e) {
            listener.onFailed(Status.INTERNAL.withDescription(
                    "backend '" + plan.model().backend().name() + "' failed: " + e.getMessage()));
            return true;
        } catch (RuntimeException | OutOfMemoryError e) {
            Engine.log.error("[{}] generation failed", id, e);
            listener.onFailed(Status.INTERNAL.withDescription("generation failed: " + e).withCause(e));
            return true;
        }
    }

    private void emitPreviews() {
        int s = spec.inputSize();
        boolean latent = spec.space().equals("latent");
        for (int b = 0; b < n; b++) {
            byte[] png = ImageCodec.png(x0, b * per, spec.inChannels(), s, s, latent);
            listener.onEvent(GenerateEvent.newBuilder().setPreview(Preview.newBuilder()
                    .setImageIndex(b).setStep(done).setPng(ByteString.copyFrom(png))).build());
        }
    }

    private void emitResults() {
        int s = spec.inputSize();
        boolean latent = spec.space().equals("latent");
        long now = System.nanoTime();
        Timings timings = Timings.newBuilder()
                .setQueueSeconds((startNanos - acceptedNanos) / 1e9)
                .setSamplingSeconds((now - startNanos) / 1e9)
                .setForwardSeconds(forwardNanos / 1e9).build();
        for (int b = 0; b < n; b++) {
            Result.Builder r = Result.newBuilder().setImageIndex(b).setSeed(plan.seeds()[b]).setTimings(timings);
            if (plan.wantPng()) {
                r.setPng(ByteString.copyFrom(ImageCodec.png(x, b * per, spec.inChannels(), s, s, latent)));
            }
            if (plan.wantTensor()) {
                ByteBuffer bb = ByteBuffer.allocate(per * 4).order(ByteOrder.LITTLE_ENDIAN);
                bb.asFloatBuffer().put(x, b * per, per);
                r.setTensor(FloatTensor.newBuilder().addShape(spec.inChannels()).addShape(s).addShape(s)
                        .setData(ByteString.copyFrom(bb.array())));
            }
            listener.onEvent(GenerateEvent.newBuilder().setResult(r).build());
        }
    }
}
