package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Decoder;
import io.ditserve.backend.Tensor;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Both decoder paths against the PyTorch reference (tools/dit/vae.py) on the fixtures of docs/DECODERS.md. */
class DecoderParityTest {

    /**
     * Small committed fixtures: every layer kind, h ≠ w, a batch of 2. Measured max |diff| / max |ref|: vae-small
     * vector 6.2e-7, scalar 1.0e-6 (legacy the same); taesd-small vector 9.8e-7, scalar 1.2e-6 (limit 1e-5).
     */
    @ParameterizedTest
    @CsvSource({
        "vae-small, vector", "vae-small, scalar",
        "vae-small-legacy, vector", "vae-small-legacy, scalar",
        "taesd-small, vector", "taesd-small, scalar"})
    void smallFixturesMatchPyTorch(String name, String path) throws Exception {
        Path dir = DecoderFixtures.small(name);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        try (Decoder d = DecoderFixtures.decoder(dir, path, 2)) {
            double err = Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image());
            System.out.printf("decoder parity %s %s: max|diff|/max|ref| = %.2e%n", name, path, err);
            assertThat(err).as("%s on %s", name, path).isLessThan(1e-5);
        }
    }

    /**
     * sd-vae-ft-ema shapes (random weights), latent [1, 4, 5, 4] → [1, 3, 40, 32]. Measured max |diff| / max |ref|:
     * vector 1.7e-6, scalar 3.3e-6 (limit 1e-4).
     */
    @Test
    void realVaeShapesMatchPyTorch() throws Exception {
        realShapes("vae");
    }

    /** TAESD shapes (random weights), latent [1, 4, 5, 4]. Measured: vector 2.2e-6, scalar 2.8e-6 (limit 1e-4). */
    @Test
    void realTaesdShapesMatchPyTorch() throws Exception {
        realShapes("taesd");
    }

    private static void realShapes(String name) throws Exception {
        Path dir = DecoderFixtures.real(name);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        for (String path : new String[] {"vector", "scalar"}) {
            try (Decoder d = DecoderFixtures.decoder(dir, path, 2)) {
                double err = Fixtures.relativeError(DecoderFixtures.decode(d, c.latent()), c.image());
                System.out.printf("decoder parity %s %s: max|diff|/max|ref| = %.2e%n", name, path, err);
                assertThat(err).as("%s on %s", name, path).isLessThanOrEqualTo(1e-4);
            }
        }
    }
}
