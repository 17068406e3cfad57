package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Tensor;
import java.nio.file.Path;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.FieldSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The contract every {@link Decoder} keeps, as a JUnit suite: a backend's test extends it and says how to create the
 * decoder. Parity with the PyTorch decoding (tools/dit/vae.py) on the small and the real-shape fixtures of
 * docs/DECODERS.md, argument checks, cancellation, lifecycle and batch invariance.
 */
public abstract class DecoderConformance {
    /** The decoder under test for {@code spec}. */
    protected abstract Decoder create(DecoderSpec spec) throws BackendException;

    /** Parity tolerance on the real-shape fixtures: max |error| over max |reference image|. */
    protected double tolerance() {
        return 1e-4;
    }

    /** Parity tolerance on the small committed fixtures; {@link #tolerance()} unless the backend promises more. */
    protected double smallTolerance() {
        return tolerance();
    }

    /** How far image k of a batch may be from the same latent decoded alone; 0 demands the same bits. */
    protected double batchTolerance() {
        return 1e-6;
    }

    /**
     * The latent side of the real-shape VAE decode the cancellation test runs: long enough that a decoder which
     * notices the cancellation only while the run is under way (a watcher thread) sees it fire.
     */
    protected int cancellationLatentSize() {
        return 4;
    }

    private Decoder open(Path dir) throws BackendException {
        return create(DecoderFixtures.spec(dir));
    }

    private void matches(Path dir, double tol) throws Exception {
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        try (Decoder d = open(dir)) {
            Tensor image = DecoderFixtures.decode(d, c.latent());
            assertThat(image.shape()).containsExactly(c.image().shape());
            assertThat(c.image().maxAbs()).isPositive();
            double err = Fixtures.relativeError(image, c.image());
            System.out.printf("decoder parity %s (%s): max|diff|/max|ref| = %.2e%n", dir.getFileName(),
                    getClass().getSimpleName(), err);
            assertThat(err).as("%s", dir).isLessThanOrEqualTo(tol);
        }
    }

    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.DecoderFixtures#SMALL")
    void smallFixturesMatchPyTorch(String name) throws Exception {
        matches(DecoderFixtures.small(name), smallTolerance());
    }

    /** sd-vae-ft-ema and TAESD shapes with random weights, latent [1, 4, 5, 4]. */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.DecoderFixtures#REAL")
    void realShapesMatchPyTorch(String name) throws Exception {
        matches(DecoderFixtures.real(name), tolerance());
    }

    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void wrongShapesAreRejected(String name) throws Exception {
        try (Decoder d = open(DecoderFixtures.small(name))) {
            int f = d.spec().scaleFactor();
            int c = d.spec().latentChannels();
            int o = d.spec().outChannels();
            Tensor latent = Tensor.zeros(1, c, 3, 2);
            assertThatThrownBy(() -> d.decode(Tensor.zeros(1, c - 1, 3, 2), Tensor.zeros(1, o, 3 * f, 2 * f),
                            () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("latent")
                    .hasMessageContaining("[N, " + c + ", h, w]");
            assertThatThrownBy(() -> d.decode(Tensor.zeros(c, 3, 2), Tensor.zeros(1, o, 3 * f, 2 * f), () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("latent");
            assertThatThrownBy(() -> d.decode(latent, Tensor.zeros(1, o, 3 * f, 3 * f), () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out")
                    .hasMessageContaining("scale factor " + f);
            assertThatThrownBy(() -> d.decode(latent, Tensor.zeros(2, o, 3 * f, 2 * f), () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out");
            assertThatThrownBy(() -> d.decode(latent, Tensor.zeros(1, o + 1, 3 * f, 2 * f), () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out");
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void anAlreadyCancelledDecodeThrowsCancelled(String name) throws Exception {
        Path dir = DecoderFixtures.small(name);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        try (Decoder d = open(dir)) {
            assertThatThrownBy(() -> DecoderFixtures.decode(d, c.latent(), () -> true))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image()))
                    .isLessThanOrEqualTo(smallTolerance());
        }
    }

    /**
     * A cancellation that is clear when the decode starts and fires on its next poll stops it with
     * {@link BackendException.Cancelled}; the decoder stays usable.
     */
    @Test
    void aCancellationThatFiresDuringTheDecodeStopsIt() throws Exception {
        Path dir = DecoderFixtures.real("vae");
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        int side = cancellationLatentSize();
        Tensor latent = DecoderFixtures.randomLatent(16, 1, c.latent().dim(1), side, side);
        AtomicInteger polls = new AtomicInteger();
        try (Decoder d = open(dir)) {
            assertThatThrownBy(() -> DecoderFixtures.decode(d, latent, () -> polls.incrementAndGet() > 1))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isGreaterThan(1);
            assertThat(Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image()))
                    .isLessThanOrEqualTo(tolerance());
        }
    }

    @Test
    void closeIsIdempotentAndDecodeAfterCloseFails() throws Exception {
        Path dir = DecoderFixtures.small("taesd-small");
        DecoderSpec spec = DecoderFixtures.spec(dir);
        Decoder d = create(spec);
        assertThat(d.backendName()).isNotBlank();
        assertThat(d.spec()).isEqualTo(spec);
        assertThat(d.spec().kind()).isEqualTo(DecoderSpec.Kind.TINY);
        Tensor latent = Tensor.zeros(1, spec.latentChannels(), 2, 2);
        DecoderFixtures.decode(d, latent);
        d.close();
        d.close();
        assertThatThrownBy(() -> DecoderFixtures.decode(d, latent)).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
    }

    /** Image k of a batch equals the same latent decoded alone, within {@link #batchTolerance()}. */
    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void decodingIsBatchInvariant(String name) throws Exception {
        Path dir = DecoderFixtures.small(name);
        try (Decoder d = open(dir)) {
            Tensor batch = DecoderFixtures.randomLatent(5, 3, d.spec().latentChannels(), 5, 4);
            Tensor images = DecoderFixtures.decode(d, batch);
            assertThat(images.maxAbs()).isPositive();
            for (int k = 0; k < batch.dim(0); k++) {
                Tensor alone = DecoderFixtures.decode(d, Fixtures.sample(batch, k));
                Tensor inBatch = Fixtures.sample(images, k);
                if (batchTolerance() == 0) {
                    assertThat(inBatch.data()).as("image %d", k).containsExactly(alone.data());
                } else {
                    assertThat(Fixtures.relativeError(inBatch, alone)).as("image %d", k)
                            .isLessThanOrEqualTo(batchTolerance());
                }
            }
        }
    }
}
