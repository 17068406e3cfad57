package io.ditserve.backend;

import java.nio.file.Path;
import java.util.List;
import java.util.Objects;

/**
 * A model folder's {@code config.json} (format documented in docs/MODEL_FORMAT.md), validated.
 *
 * <p>The constructor arguments keep the released DiT names. Settings that config.json names by string (space,
 * guidance mode, default sampler, the process) are enums here, parsed once by {@link ModelConfigs}. The
 * {@link Process} says what the network computes and how it sees time (docs/MODEL_FAMILIES.md): every solver, the
 * request validation and the backends' time checks read it from here, never from the family's name.
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
        Defaults defaults,
        String family,
        Process process,
        boolean qkNorm,
        TextConditioning text) {

    /** A class-conditional (DiT-architecture) spec of any family. */
    public ModelSpec(Path directory, String name, String description, int inputSize, int patchSize, int inChannels,
            int hiddenSize, int depth, int numHeads, double mlpRatio, int numClasses, boolean learnSigma,
            List<String> classNames, Space space, GuidanceMode guidanceMode, Defaults defaults, String family,
            Process process, boolean qkNorm) {
        this(directory, name, description, inputSize, patchSize, inChannels, hiddenSize, depth, numHeads, mlpRatio,
                numClasses, learnSigma, classNames, space, guidanceMode, defaults, family, process, qkNorm, null);
    }

    /** A DiT (format 1) spec: ε-prediction on the linear-β VP schedule, no qk-norm. */
    public ModelSpec(Path directory, String name, String description, int inputSize, int patchSize, int inChannels,
            int hiddenSize, int depth, int numHeads, double mlpRatio, int numClasses, boolean learnSigma,
            List<String> classNames, Space space, GuidanceMode guidanceMode, Defaults defaults) {
        this(directory, name, description, inputSize, patchSize, inChannels, hiddenSize, depth, numHeads, mlpRatio,
                numClasses, learnSigma, classNames, space, guidanceMode, defaults, "dit", Process.DIT, false);
    }

    /** The transformer's architecture: DiT's blocks with adaLN-Zero on time + class, or SD3's MMDiT. */
    public enum Architecture { DIT, MMDIT }

    /**
     * A text-conditioned transformer (SD3's MMDiT, docs/TEXT_MODELS.md): image patches and prompt tokens attend to
     * each other in joint attention, each stream with its own adaLN-Zero modulation from time + pooled text.
     *
     * @param jointAttentionDim width of the context tokens it takes ({@code joint_attention_dim})
     * @param pooledProjectionDim width of the pooled vector ({@code pooled_projection_dim})
     * @param posEmbedMaxSize side of the stored position table ({@code pos_embed_max_size})
     * @param dualAttentionLayers blocks with SD3.5's second, image-only attention (MMDiT-X)
     * @param rmsQkNorm SD3.5's RMS qk-norm ({@code qk_norm: "rms_norm"})
     * @param contextTokens tokens of the context the pipeline builds (CLIP's 77 + T5's, for SD3)
     */
    public record TextConditioning(int jointAttentionDim, int pooledProjectionDim, int posEmbedMaxSize,
            List<Integer> dualAttentionLayers, boolean rmsQkNorm, int contextTokens) {
        public TextConditioning {
            dualAttentionLayers = List.copyOf(dualAttentionLayers);
        }
    }

    /** DiT or MMDiT. */
    public Architecture architecture() {
        return text == null ? Architecture.DIT : Architecture.MMDIT;
    }

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

    /**
     * Sampling defaults for requests that leave a field unset.
     *
     * @param guidanceInterval the network times at which steps are guided, or null for every step
     * @param timestepShift the flow grid's shift (1 = none)
     */
    public record Defaults(Sampler sampler, int steps, double guidance, double eta, GuidanceInterval guidanceInterval,
            double timestepShift, Grid grid) {
        public Defaults {
            java.util.Objects.requireNonNull(sampler, "sampler");
            java.util.Objects.requireNonNull(grid, "grid");
        }

        public Defaults(Sampler sampler, int steps, double guidance, double eta) {
            this(sampler, steps, guidance, eta, null, 1.0, Grid.UNIFORM);
        }

        public Defaults(Sampler sampler, int steps, double guidance, double eta, GuidanceInterval guidanceInterval,
                double timestepShift) {
            this(sampler, steps, guidance, eta, guidanceInterval, timestepShift, Grid.UNIFORM);
        }
    }

    /**
     * The noise levels a flow model's ODE solvers step through: SiT/REPA's uniform s_i = 1 − i/N, or diffusers'
     * FlowMatchEulerDiscreteScheduler grid that SD3 pipelines use (docs/MODEL_FAMILIES.md, docs/TEXT_MODELS.md).
     */
    public enum Grid { UNIFORM, FLOW_MATCH_EULER }

    /**
     * Guidance only inside a window of the network's own time τ (docs/MODEL_FAMILIES.md): a step whose start time
     * τ(s_i) lies in [low, high] is guided; the others evaluate the conditional half only.
     */
    public record GuidanceInterval(double low, double high) {
        public GuidanceInterval {
            if (!(low <= high) || !Double.isFinite(low) || !Double.isFinite(high)) {
                throw new IllegalArgumentException("guidance interval [" + low + ", " + high + "] needs finite low <= high");
            }
        }

        /**
         * Whether τ lies inside, both bounds included, compared in float32: a request's bounds arrive as proto floats
         * (0.7f is 0.69999998…), so a grid point at exactly 0.7 is inside whether the bound came from a request or
         * from config.json.
         */
        public boolean contains(double tau) {
            float t = (float) tau;
            return (float) low <= t && t <= (float) high;
        }
    }

    /**
     * What the network computes and how it sees time: its family's process (docs/MODEL_FAMILIES.md). Inside the
     * server, flow models use one convention, the noise level s ∈ [0, 1] of x_s = (1 − s)·x_data + s·ε (s = 1 pure
     * noise); VP models keep their timestep index.
     *
     * @param timeScale the network time is {@code timeScale · τ} (1 for SiT and REPA; 1000 for SD3's σ·1000)
     */
    public record Process(Prediction prediction, NoisePath path, TimeInput timeInput, Velocity velocity, double timeScale) {
        /** DiT: ε (with or without learned σ) on the linear-β schedule of 1000 steps, fed the integer timestep. */
        public static final Process DIT = new Process(Prediction.EPSILON, NoisePath.VP_LINEAR, TimeInput.INDEX,
                Velocity.NONE, 1.0);
        /** SiT: velocity dx/dτ = x_data − ε at τ = 1 − s. */
        public static final Process SIT = new Process(Prediction.VELOCITY, NoisePath.LINEAR, TimeInput.ONE_MINUS_S,
                Velocity.DATA_MINUS_NOISE, 1.0);
        /** REPA: velocity dx/dτ = ε − x_data at τ = s. */
        public static final Process REPA = new Process(Prediction.VELOCITY, NoisePath.LINEAR, TimeInput.S,
                Velocity.NOISE_MINUS_DATA, 1.0);

        public Process {
            java.util.Objects.requireNonNull(prediction, "prediction");
            java.util.Objects.requireNonNull(path, "path");
            java.util.Objects.requireNonNull(timeInput, "timeInput");
            java.util.Objects.requireNonNull(velocity, "velocity");
            String why = null;
            if ((prediction == Prediction.EPSILON) != (path == NoisePath.VP_LINEAR)) {
                why = "prediction " + prediction.configName() + " does not go with path " + path.configName()
                        + " (epsilon goes with vp_linear, velocity with linear)";
            } else if ((path == NoisePath.VP_LINEAR) != (timeInput == TimeInput.INDEX)) {
                why = "time_input " + timeInput.configName() + " does not go with path " + path.configName()
                        + " (index goes with vp_linear; s or 1-s with linear)";
            } else if ((prediction == Prediction.VELOCITY) == (velocity == Velocity.NONE)) {
                why = prediction == Prediction.VELOCITY ? "a velocity model must say which velocity it predicts"
                        + " (noise_minus_data or data_minus_noise)" : "an epsilon model has no velocity";
            } else if (!(timeScale > 0) || !Double.isFinite(timeScale)
                    || (path == NoisePath.VP_LINEAR && timeScale != 1.0)) {
                why = "time_scale " + timeScale + " must be a positive number (1 for vp_linear)";
            }
            if (why != null) {
                throw new IllegalArgumentException(why);
            }
        }

        /** Whether the model is a flow (linear path, velocity prediction). */
        public boolean flow() {
            return path == NoisePath.LINEAR;
        }

        /** The network's time input at noise level s (flow models). */
        public double networkTime(double s) {
            return timeScale * (timeInput == TimeInput.ONE_MINUS_S ? 1.0 - s : s);
        }

        /** The network's own time τ (before {@link #timeScale}) at noise level s: what guidance intervals are in. */
        public double tau(double s) {
            return timeInput == TimeInput.ONE_MINUS_S ? 1.0 - s : s;
        }

        /** dx/ds = sign · (network output): +1 for noise − data, −1 for data − noise. */
        public float derivativeSign() {
            return velocity == Velocity.DATA_MINUS_NOISE ? -1f : 1f;
        }

        /** Smallest valid time input. */
        public float minTime() {
            return 0f;
        }

        /** Largest valid time input. */
        public float maxTime() {
            return timeInput == TimeInput.INDEX ? DitConstants.NUM_TIMESTEPS - 1 : (float) timeScale;
        }
    }

    /** What the network's output means. */
    public enum Prediction implements Named {
        EPSILON("epsilon"), VELOCITY("velocity");

        private final String configName;

        Prediction(String n) {
            configName = n;
        }

        @Override
        public String configName() {
            return configName;
        }
    }

    /** The noising path: DiT's variance-preserving linear-β schedule of 1000 steps, or the linear (flow) path. */
    public enum NoisePath implements Named {
        VP_LINEAR("vp_linear"), LINEAR("linear");

        private final String configName;

        NoisePath(String n) {
            configName = n;
        }

        @Override
        public String configName() {
            return configName;
        }
    }

    /** What the timestep embedder is fed: the VP timestep index, s, or 1 − s (times {@code time_scale}). */
    public enum TimeInput implements Named {
        INDEX("index"), S("s"), ONE_MINUS_S("1-s");

        private final String configName;

        TimeInput(String n) {
            configName = n;
        }

        @Override
        public String configName() {
            return configName;
        }
    }

    /** Which velocity a flow network predicts. */
    public enum Velocity implements Named {
        NONE("none"), NOISE_MINUS_DATA("noise_minus_data"), DATA_MINUS_NOISE("data_minus_noise");

        private final String configName;

        Velocity(String n) {
            configName = n;
        }

        @Override
        public String configName() {
            return configName;
        }
    }

    /** An enum value with its config.json spelling. */
    public interface Named {
        String configName();
    }

    public ModelSpec {
        Objects.requireNonNull(directory, "directory");
        Objects.requireNonNull(name, "name");
        Objects.requireNonNull(space, "space");
        Objects.requireNonNull(guidanceMode, "guidanceMode");
        Objects.requireNonNull(defaults, "defaults");
        Objects.requireNonNull(family, "family");
        Objects.requireNonNull(process, "process");
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
        if (text != null) { // MMDiT: image and context streams, joint attention over both
            long c = text.contextTokens();
            long all = t + c;
            long macs = t * d * (long) inChannels * patchSize * patchSize + c * text.jointAttentionDim() * d
                    + 256 * d + d * d + text.pooledProjectionDim() * d + d * d;
            for (int i = 0; i < depth; i++) {
                boolean last = i == depth - 1;
                boolean dual = text.dualAttentionLayers().contains(i);
                macs += t * 12 * d * d + c * (3 * d * d + (last ? 0 : 9 * d * d)) + 2 * all * all * d
                        + d * ((dual ? 9 : 6) * d + (last ? 2 : 6) * d);
                if (dual) {
                    macs += t * 4 * d * d + 2 * t * t * d;
                }
            }
            return macs + 2 * d * d + t * d * (long) patchSize * patchSize * outChannels();
        }
        long perBlock = t * d * 3 * d + t * t * d * 2 + t * d * d + 2 * t * d * mlpHidden() + 6 * d * d;
        // qk-norm adds no multiply-accumulates worth counting (a normalisation over the head dimension)
        long embed = t * d * (long) inChannels * patchSize * patchSize + 256 * d + d * d;
        long fin = 2 * d * d + t * d * (long) patchSize * patchSize * outChannels();
        return embed + depth * perBlock + fin;
    }
}
