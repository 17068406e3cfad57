package io.ditserve.server.engine;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TiledDecoding;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * What a {@link Generation} shows: preview frames of its data estimate (linear, or decoded with TAESD or the VAE on
 * the loop's render thread, the newest frame winning) and its results (decoded with the VAE when the plan needs
 * pixels of a latent model). A preview never follows a result in the stream.
 */
final class GenerationOutput {
    private static final Logger log = LoggerFactory.getLogger(GenerationOutput.class);
    private final Generation g;
    private final TiledDecoding.Tiling tiling;
    private double decodeSeconds;

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

    GenerationOutput(Generation g, TiledDecoding.Tiling tiling) {
        this.g = g;
        this.tiling = tiling;
    }

    void previewRunner(PreviewRunner runner) {
        this.previewRunner = runner;
    }

    boolean decodedPreviews() {
        return g.plan.previewInterval() > 0 && g.plan.previewDecoder() != PreviewDecoder.LINEAR;
    }

    private Frame.Space sampleSpace() {
        return g.plan.model().latent() ? Frame.Space.LATENT : Frame.Space.IMAGE;
    }

    /** The previews of the data estimate after {@code step} steps. */
    void emitPreviews(int step) throws BackendException {
        int s = g.spec.inputSize();
        Decoder decoder = switch (g.plan.previewDecoder()) {
            case LINEAR -> null;
            case TINY -> g.plan.model().tinyDecoder();
            case FULL -> g.plan.model().vaeDecoder();
        };
        if (decoder == null) {
            for (int b = 0; b < g.n; b++) {
                g.listener.onEvent(new GenerationEvent.Preview(b, step, PreviewDecoder.LINEAR,
                        Frame.copyOf(g.x0, b * g.per, g.spec.inChannels(), s, s, sampleSpace())));
            }
            return;
        }
        requestDecodedPreview(g.x0.clone(), step);
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
     * results.
     */
    private void renderPreview() {
        float[] latent;
        int step;
        synchronized (previewLock) {
            latent = previewLatent;
            step = previewStep;
            previewLatent = null;
            previewQueued = false;
            if (latent == null || resultsEmitted || g.isCancelled() || !g.listener.wantsPreview()) {
                return;
            }
        }
        Decoder decoder = g.plan.previewDecoder() == PreviewDecoder.TINY ? g.plan.model().tinyDecoder()
                : g.plan.model().vaeDecoder();
        Tensor image;
        try {
            image = decode(decoder, latent, false, () -> g.isCancelled() || resultsEmitted);
        } catch (BackendException e) {
            if (!(e instanceof BackendException.Cancelled)) {
                log.warn("[{}] preview at step {} not decoded: {}", g.id, step, e.getMessage());
            }
            return;
        }
        synchronized (previewLock) {
            if (!resultsEmitted && !g.isCancelled()) {
                emitDecoded(image, (b, frame) -> g.listener.onEvent(
                        new GenerationEvent.Preview(b, step, g.plan.previewDecoder(), frame)));
            }
        }
    }

    /**
     * Decodes all n latents of {@code src} in one call (tiled when large); the result is freshly allocated. Only the
     * final images' decoding counts as the result's decode time (previews are part of sampling).
     */
    private Tensor decode(Decoder decoder, float[] src, boolean finalImages, Cancellation cancel)
            throws BackendException {
        int s = g.spec.inputSize();
        int f = decoder.spec().scaleFactor();
        Tensor latent = new Tensor(src.clone(), g.n, g.spec.inChannels(), s, s);
        Tensor image = Tensor.zeros(g.n, decoder.spec().outChannels(), f * s, f * s);
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

    /** Emits one Result per image (decoding them first when the plan needs pixels of a latent model). */
    void emitResults(Cancellation decodeCancel) throws BackendException {
        int s = g.spec.inputSize();
        Frame[] images = new Frame[g.n];
        if (g.plan.needsDecodedImage()) {
            emitDecoded(decode(g.plan.model().vaeDecoder(), g.x, true, decodeCancel), (b, frame) -> images[b] = frame);
        }
        long now = System.nanoTime();
        GenerationEvent.Timings timings = new GenerationEvent.Timings((g.startNanos - g.acceptedNanos) / 1e9,
                (now - g.startNanos) / 1e9, g.forwardSeconds, decodeSeconds);
        synchronized (previewLock) {
            resultsEmitted = true; // guard: no preview after a result (the render thread's order already ensures it)
        }
        for (int b = 0; b < g.n; b++) {
            g.listener.onEvent(new GenerationEvent.Result(b, g.plan.seeds()[b],
                    Frame.copyOf(g.x, b * g.per, g.spec.inChannels(), s, s, sampleSpace()), images[b], timings));
        }
    }
}
