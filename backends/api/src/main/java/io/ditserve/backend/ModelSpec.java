package io.ditserve.backend;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * A model folder's {@code config.json} (format documented in docs/MODEL_FORMAT.md), validated.
 *
 * <p>The constructor arguments keep the released DiT names. Settings that config.json names by string (space,
 * guidance mode, default sampler) are enums here, parsed once by {@link ModelConfigs}.
 */
public record ModelSpec(
        Path directory,
        String name,
        String description,
        int inputSize,
        int patchSize,
        int inChannels,
        int hiddenSize,
        int depth,
        int numHeads,
        double mlpRatio,
        int numClasses,
        boolean learnSigma,
        List<String> classNames,
        Space space,
        GuidanceMode guidanceMode,
        Defaults defaults) {

    /** What the model denoises. */
    public enum Space {
        /** The image itself, values in [−1, 1]. */
        PIXEL("pixel"),
        /** An SD-VAE latent (docs/DECODERS.md). */
        LATENT("latent");

        private final String configName;

        Space(String configName) {
            this.configName = configName;
        }

        /** The name in config.json ({@code space}). */
        public String configName() {
            return configName;
        }
    }

    /** Sampling defaults for requests that leave a field unset. */
    public record Defaults(Sampler sampler, int steps, double guidance, double eta) {
        public Defaults {
            java.util.Objects.requireNonNull(sampler, "sampler");
        }
    }

    public ModelSpec {
        Objects.requireNonNull(directory, "directory");
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(space, "space");
        Objects.requireNonNull(guidanceMode, "guidanceMode");
        Objects.requireNonNull(defaults, "defaults");
        classNames = List.copyOf(classNames);
    }

    public int outChannels() {
        return learnSigma ? 2 * inChannels : inChannels;
    }

    public int gridSize() {
        return inputSize / patchSize;
    }

    public int tokens() {
        return gridSize() * gridSize();
    }

    public int headDim() {
        return hiddenSize / numHeads;
    }

    public int mlpHidden() {
        return (int) Math.round(hiddenSize * mlpRatio);
    }

    /** The label id that selects the unconditional ("null") embedding. */
    public int nullClass() {
        return numClasses;
    }

    public Path file(String fileName) {
        return directory.resolve(fileName);
    }

    /** Multiply-accumulates of one forward pass for one sample (matrix products and attention). */
    public long macsPerSample() {
        long t = tokens();
        long d = hiddenSize;
        long perBlock = t * d * 3 * d + t * t * d * 2 + t * d * d + 2 * t * d * mlpHidden() + 6 * d * d;
        long embed = t * d * (long) inChannels * patchSize * patchSize + 256 * d + d * d;
        long fin = 2 * d * d + t * d * (long) patchSize * patchSize * outChannels();
        return embed + depth * perBlock + fin;
    }
}
