package io.ditserve.server.engine;

/**
 * What a generation tells its listener, in stream order: {@link Accepted} once, {@link Queued} while it waits,
 * {@link Progress} after each step, {@link Preview} frames, then one {@link Result} per image. Domain values only:
 * the transport turns them into wire messages and encodes images only for what it really sends.
 */
public sealed interface GenerationEvent {

    /**
     * @param times the network time of each step's start in sampling order (first = noisiest); for VP models the
     *     original-schedule timesteps
     * @param evaluations model evaluations per image over all steps
     */
    record Accepted(String requestId, int queuePosition, GenerationPlan plan, float[] times, int evaluations)
            implements GenerationEvent {}

    record Queued(int queuePosition) implements GenerationEvent {}

    /**
     * After a denoising step; {@code step} counts completed steps from 1.
     *
     * @param timestep VP models: the step's original-schedule timestep; −1 for flow models
     * @param time the network time at the step's start
     */
    record Progress(int step, int totalSteps, int timestep, float time, double elapsedSeconds, double stepSeconds)
            implements GenerationEvent {}

    /** The clean-image estimate of one image after {@code step} steps, rendered by {@code decoder}. */
    record Preview(int imageIndex, int step, PreviewDecoder decoder, Frame frame) implements GenerationEvent {}

    /**
     * One final image.
     *
     * @param sample the sampler's output [C, H, W] (the latent for latent models)
     * @param image the decoded image [C_out, f·H, f·W] for latent models with a VAE whose plan asked for pixels;
     *     null otherwise
     */
    record Result(int imageIndex, long seed, Frame sample, Frame image, Timings timings) implements GenerationEvent {}

    record Timings(double queueSeconds, double samplingSeconds, double forwardSeconds, double decodeSeconds) {}
}
