package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The PyTorch reference cases of the latent decoders (tools/make_decoder_fixtures.py, tools/dit/vae.py): decoder
 * folders in the diffusers layout, each with {@code cases.safetensors} holding {@code decode.latent} and
 * {@code decode.image}. Small ones are committed under tools/fixtures; the real-shape ones (the sd-vae-ft-* and
 * TAESD architectures with random weights, 200 MB) are made on demand under target/decoder-fixtures.
 */
final class DecoderFixtures {
    /** The committed fixtures: the full decoder, the same with legacy attention names, the tiny decoder. */
    static final List<String> SMALL = List.of("vae-small", "vae-small-legacy", "taesd-small");
    /** The real-shape fixtures (made by {@link #REAL_COMMAND}). */
    static final List<String> REAL = List.of("vae", "taesd");
    /** Where the real-shape fixtures are, relative to the repository root. */
    static final String REAL_DIR = "target/decoder-fixtures";
    /** The command that makes them, from the repository root. */
    static final String REAL_COMMAND = "/usr/bin/python3 tools/make_decoder_fixtures.py --real " + REAL_DIR;

    /** One case: the latent and the PyTorch image. */
    record Case(Tensor latent, Tensor image) {}

    private final Path root;

    DecoderFixtures(Path repoRoot) {
        this.root = repoRoot;
    }

    /** The folder of a fixture: a name of {@link #SMALL} or of {@link #REAL}. */
    Path dir(String name) {
        return REAL.contains(name) ? root.resolve(REAL_DIR).resolve(name) : root.resolve("tools/fixtures/" + name);
    }

    /** Whether the fixture's folder holds its cases (the real-shape ones may not have been made). */
    boolean exists(String name) {
        return Files.isRegularFile(dir(name).resolve("cases.safetensors"))
                && Files.isRegularFile(dir(name).resolve(DecoderSpec.WEIGHTS_FILE));
    }

    /** The spec; for a missing real-shape fixture the message names the command that makes it. */
    DecoderSpec spec(String name) throws BackendException {
        requireExists(name);
        return DecoderConfigs.load(dir(name));
    }

    Case decodeCase(String name) throws BackendException {
        requireExists(name);
        return readCase(dir(name).resolve("cases.safetensors"));
    }

    /** A cases file's {@code decode.latent} and {@code decode.image}. */
    static Case readCase(Path file) throws BackendException {
        try (Safetensors st = Safetensors.open(file)) {
            return new Case(st.tensor("decode.latent"), st.tensor("decode.image"));
        }
    }

    private void requireExists(String name) throws BackendException {
        if (REAL.contains(name) && !exists(name)) {
            throw new BackendException("the real-shape decoder fixture " + dir(name) + " is missing: make it with `"
                    + REAL_COMMAND + "` from " + root);
        }
    }
}
