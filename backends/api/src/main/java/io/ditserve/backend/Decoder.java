package io.ditserve.backend;

/**
 * One loaded latent decoder on one compute backend: the full VAE decoder ({@link DecoderSpec.Kind#FULL},
 * diffusers' {@code AutoencoderKL}) or the tiny preview decoder ({@link DecoderSpec.Kind#TINY},
 * {@code AutoencoderTiny}). docs/DECODERS.md states the architectures.
 *
 * <p>The contract is the same for both: the input is the latent exactly as the DiT samples it (diffusion space);
 * the output is the image with values nominally in [−1, 1], not clamped. The full decoder divides by its
 * {@code scaling_factor} (and adds {@code shift_factor}) itself; the tiny one takes the latent as it is.
 *
 * <p>Calls are serialised like {@link Backend#forward}; buffers belong to the caller.
 */
public interface Decoder extends AutoCloseable {

    /** The provider name, e.g. {@code java}. */
    String backendName();

    DecoderSpec spec();

    /**
     * Decodes a batch.
     *
     * @param latent [N, C_latent, h, w], any h, w ≥ 1
     * @param out [N, C_out, f·h, f·w] with f = {@link DecoderSpec#scaleFactor()}, written by the decoder
     * @param cancel polled between layers; when it returns true the decoder stops and throws
     *     {@link BackendException.Cancelled}
     */
    void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException;

    /** Releases native memory, sessions and threads. Idempotent. */
    @Override
    void close();
}
