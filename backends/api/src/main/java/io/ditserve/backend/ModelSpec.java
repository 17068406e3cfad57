package io.ditserve.backend;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * A model folder's {@code config.json} (format documented in docs/MODEL_FORMAT.md), validated.
 *
 * <p>The constructor arguments keep the released DiT names. {@code guidanceMode} is {@code first3} (the released
 * behaviour: classifier-free guidance on the first three eps channels) or {@code all}.
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
        String space,
        String guidanceMode,
        Defaults defaults) {

    /** Sampling defaults for requests that leave a field unset. */
    public record Defaults(String sampler, int steps, double guidance, double eta) {}

    public ModelSpec {
        Objects.requireNonNull(directory, "directory");
        Objects.requireNonNull(name, "name");
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
