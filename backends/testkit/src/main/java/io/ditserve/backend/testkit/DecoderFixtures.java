package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.fail;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.Random;

/**
 * The decoder fixtures of tools/make_decoder_fixtures.py (docs/DECODERS.md, "Fixtures"): small committed folders
 * under tools/fixtures, real-shape ones (sd-vae-ft-ema and TAESD shapes, random weights) generated into
 * target/decoder-fixtures by tools/test.sh.
 */
public final class DecoderFixtures {
    /** The command, run in the repository root, that writes the real-shape fixtures. */
    public static final String REAL_COMMAND =
            "/usr/bin/python3 tools/make_decoder_fixtures.py --real target/decoder-fixtures";
    /** The small committed fixtures: every layer kind, h ≠ w, a batch of 2. */
    public static final String[] SMALL = {"vae-small", "vae-small-legacy", "taesd-small"};
    /** The real-shape fixtures under target/decoder-fixtures. */
    public static final String[] REAL = {"vae", "taesd"};

    private DecoderFixtures() {}

    /** decode.latent and the PyTorch decode.image. */
    public record Case(Tensor latent, Tensor image) {}

    /** A small committed fixture folder under tools/fixtures. */
    public static Path small(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    /** The files of a complete real-shape folder ({@code done} is written last). */
    private static final String[] REAL_FILES = {"config.json", DecoderSpec.WEIGHTS_FILE, "cases.safetensors", "done"};

    /** A real-shape folder ({@code vae} or {@code taesd}); fails, naming the command that writes it, when absent. */
    public static Path real(String name) {
        missingRealFile(name).ifPresent(f -> fail("real-shape decoder fixture missing: " + f
                + " (tools/test.sh writes it; run `" + REAL_COMMAND + "` in the repository root)"));
        return realDir(name);
    }

    /** Where a real-shape folder is, made or not. */
    public static Path realDir(String name) {
        return Fixtures.repoRoot().resolve("target/decoder-fixtures/" + name);
    }

    /** Whether a real-shape folder was made (complete), for programs that skip what is missing. */
    public static boolean hasReal(String name) {
        return missingRealFile(name).isEmpty();
    }

    private static Optional<Path> missingRealFile(String name) {
        Path dir = realDir(name);
        for (String file : REAL_FILES) {
            if (!Files.isRegularFile(dir.resolve(file))) {
                return Optional.of(dir.resolve(file));
            }
        }
        return Optional.empty();
    }

    public static DecoderSpec spec(Path dir) throws BackendException {
        return DecoderConfigs.load(dir);
    }

    /** The case of a fixture folder (its cases.safetensors). */
    public static Case decodeCase(Path dir) throws BackendException {
        return readCase(dir.resolve("cases.safetensors"));
    }

    /** decode.latent and decode.image of a cases file (tools/gpu/make_decoder_cases.py writes several). */
    public static Case readCase(Path casesFile) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile)) {
            return new Case(st.tensor("decode.latent"), st.tensor("decode.image"));
        }
    }

    /** One uncancelled decode into a fresh image tensor of the size the decoder's scale factor gives. */
    public static Tensor decode(Decoder d, Tensor latent) throws BackendException {
        return decode(d, latent, Cancellation.NEVER);
    }

    public static Tensor decode(Decoder d, Tensor latent, Cancellation cancel) throws BackendException {
        DecoderSpec s = d.spec();
        int f = s.scaleFactor();
        Tensor out = Tensor.zeros(latent.dim(0), s.outChannels(), f * latent.dim(2), f * latent.dim(3));
        d.decode(latent, out, cancel);
        return out;
    }

    /** A latent [n, c, h, w] of N(0, 1) values. */
    public static Tensor randomLatent(long seed, int n, int c, int h, int w) {
        Random rnd = new Random(seed);
        Tensor t = Tensor.zeros(n, c, h, w);
        for (int i = 0; i < t.size(); i++) {
            t.data()[i] = (float) rnd.nextGaussian();
        }
        return t;
    }
}
