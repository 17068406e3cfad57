package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/** Reads and validates a model folder's {@code config.json}. */
public final class ModelConfigs {
    public static final String CONFIG_FILE = "config.json";
    /** The default folder names of a model's decoders, and the config.json keys that may point elsewhere. */
    public static final String VAE_KEY = "vae";
    public static final String TAESD_KEY = "taesd";
    private static final ObjectMapper JSON = new ObjectMapper();

    private ModelConfigs() {}

    /** The config.json formats this server reads: 1 (DiT, written before flow families) and 2 (with a process). */
    public static final int FORMAT_MIN = 1;
    public static final int FORMAT_MAX = 2;
    private static final java.util.Set<String> KEYS_V1 = java.util.Set.of("format_version", "name", "description",
            "input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
            "class_dropout_prob", "num_classes", "learn_sigma", "class_names", "schedule", "variance", "space",
            "guidance_mode", "defaults", VAE_KEY, TAESD_KEY);
    private static final java.util.Set<String> KEYS_V2 = union(KEYS_V1, "family", "process", "qk_norm");
    private static final java.util.Set<String> PROCESS_KEYS = java.util.Set.of("prediction", "path", "time_input",
            "velocity", "time_scale");
    private static final java.util.Set<String> DEFAULTS_KEYS = java.util.Set.of("sampler", "steps", "guidance", "eta",
            "guidance_interval", "timestep_shift");
    private static final java.util.Set<String> SCHEDULE_KEYS = java.util.Set.of("type", "beta_start", "beta_end",
            "num_train_timesteps", "respacing");
    private static final java.util.Set<String> FAMILIES = java.util.Set.of("dit", "sit", "repa");

    /**
     * Parses {@code dir/config.json}; the model's name is the folder's name. Every key is checked: an unknown one is
     * an error naming the known ones, so that a folder declaring something this server does not implement (another
     * schedule, another process) fails at load instead of sampling wrongly.
     */
    public static ModelSpec load(Path dir) throws BackendException {
        Path file = dir.resolve(CONFIG_FILE);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file));
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing (every model folder needs a config.json)");
        } catch (IOException e) {
            throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new BackendException(file + ": expected a JSON object");
        }
        Reader r = new Reader(file, "", root);
        int format = r.intOr("format_version", FORMAT_MIN, Integer.MIN_VALUE, Integer.MAX_VALUE);
        if (format < FORMAT_MIN || format > FORMAT_MAX) {
            throw r.bad("format_version " + format + " is not one this server reads (" + FORMAT_MIN + ".." + FORMAT_MAX
                    + "); convert the model with this version's tools/convert.py");
        }
        r.onlyKeys(format == 1 ? KEYS_V1 : KEYS_V2);
        int inputSize = r.intIn("input_size", 1, 4096);
        int patch = r.intIn("patch_size", 1, 64);
        int inCh = r.intIn("in_channels", 1, 64);
        int hidden = r.intIn("hidden_size", 4, 65536);
        int depth = r.intIn("depth", 0, 1024);
        int heads = r.intIn("num_heads", 1, 1024);
        double mlpRatio = r.dbl("mlp_ratio", 4.0);
        r.dbl("class_dropout_prob", 0.0); // a training setting: checked, not used
        int numClasses = r.intIn("num_classes", 1, 1_000_000);
        boolean learnSigma = r.bool("learn_sigma");
        if (inputSize % patch != 0) {
            throw r.bad("input_size " + inputSize + " is not a multiple of patch_size " + patch);
        }
        if (hidden % heads != 0) {
            throw r.bad("hidden_size " + hidden + " is not a multiple of num_heads " + heads);
        }
        if (hidden % 4 != 0) {
            throw r.bad("hidden_size " + hidden + " must be a multiple of 4 (2-D sin-cos position embedding)");
        }
        List<String> names = new ArrayList<>();
        JsonNode cn = root.get("class_names");
        if (cn == null || cn.isNull()) {
            for (int i = 0; i < numClasses; i++) {
                names.add(Integer.toString(i));
            }
        } else {
            if (!cn.isArray() || cn.size() != numClasses) {
                throw r.bad("class_names must be an array of num_classes (" + numClasses + ") strings");
            }
            for (JsonNode n : cn) {
                if (!n.isTextual()) {
                    throw r.bad("class_names must hold strings, found " + n);
                }
                names.add(n.asText());
            }
        }
        ModelSpec.Space space = r.choice("space", ModelSpec.Space.PIXEL, ModelSpec.Space.values(),
                ModelSpec.Space::configName);
        GuidanceMode mode = r.choice("guidance_mode", GuidanceMode.FIRST_THREE, GuidanceMode.values(),
                GuidanceMode::configName);
        String family = format == 1 ? "dit" : r.text("family", FAMILIES);
        ModelSpec.Process process = format == 1 ? ModelSpec.Process.DIT : process(r.object("process"));
        boolean qkNorm = format > 1 && root.has("qk_norm") && r.bool("qk_norm");
        if (process.flow()) {
            if (learnSigma) {
                throw r.bad("learn_sigma must be false for a flow model (the converter drops the sigma half)");
            }
            for (String vpOnly : List.of("schedule", "variance")) {
                if (root.has(vpOnly)) {
                    throw r.bad("'" + vpOnly + "' belongs to vp_linear models; this model's path is linear");
                }
            }
        } else {
            checkSchedule(r, root, learnSigma);
        }
        JsonNode dn = root.get("defaults");
        if (dn != null && !dn.isObject()) {
            throw r.bad("'defaults' must be an object, found " + dn);
        }
        ModelSpec.Defaults defaults = defaults(new Reader(file, "defaults.", dn == null ? JSON.createObjectNode() : dn),
                process);
        // the folder name is the model name: it is what clients ask for
        return new ModelSpec(dir, dir.getFileName().toString(), root.path("description").asText(""), inputSize, patch,
                inCh, hidden, depth, heads, mlpRatio, numClasses, learnSigma, names, space, mode, defaults, family,
                process, qkNorm);
    }

    /** The keys of diffusers' SD3Transformer2DModel config.json (besides the "_"-prefixed bookkeeping ones). */
    private static final java.util.Set<String> MMDIT_KEYS = java.util.Set.of("sample_size", "patch_size",
            "in_channels", "num_layers", "attention_head_dim", "num_attention_heads", "joint_attention_dim",
            "caption_projection_dim", "pooled_projection_dim", "out_channels", "pos_embed_max_size",
            "dual_attention_layers", "qk_norm");
    /** SD3's process: velocity ε − x₀ on the linear path, fed σ·1000 (docs/TEXT_MODELS.md). */
    public static final ModelSpec.Process SD3_PROCESS = new ModelSpec.Process(ModelSpec.Prediction.VELOCITY,
            ModelSpec.NoisePath.LINEAR, ModelSpec.TimeInput.S, ModelSpec.Velocity.NOISE_MINUS_DATA, 1000.0);

    /**
     * Reads a diffusers {@code transformer/config.json} of an SD3Transformer2DModel (SD3, SD3.5) into a spec: hidden
     * size = heads·head_dim, depth = num_layers, inputSize = sample_size (the latent side the pipeline's default
     * resolution gives), the SD3 process, guidance on all channels.
     *
     * @param name the pipeline's name (its folder)
     * @param space latent with a VAE, pixel without one
     * @param contextTokens the context length the pipeline builds
     */
    public static ModelSpec loadMmdit(Path transformerDir, String name, String description, ModelSpec.Space space,
            int contextTokens, ModelSpec.Defaults defaults) throws BackendException {
        Path file = transformerDir.resolve(CONFIG_FILE);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file));
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing (the transformer folder needs its config.json)");
        } catch (IOException e) {
            throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new BackendException(file + ": expected a JSON object");
        }
        Reader r = new Reader(file, "", root);
        var it = root.fieldNames();
        while (it.hasNext()) {
            String k = it.next();
            if (!k.startsWith("_") && !MMDIT_KEYS.contains(k)) {
                throw r.bad("unknown key '" + k + "'; known keys: " + new java.util.TreeSet<>(MMDIT_KEYS));
            }
        }
        if (!root.path("_class_name").asText("SD3Transformer2DModel").equals("SD3Transformer2DModel")) {
            throw r.bad("_class_name " + root.get("_class_name") + " is not SD3Transformer2DModel");
        }
        int sample = r.intIn("sample_size", 1, 4096);
        int patch = r.intIn("patch_size", 1, 64);
        int inCh = r.intIn("in_channels", 1, 256);
        int layers = r.intIn("num_layers", 1, 1024);
        int headDim = r.intIn("attention_head_dim", 1, 1024);
        int heads = r.intIn("num_attention_heads", 1, 1024);
        int joint = r.intIn("joint_attention_dim", 1, 1 << 20);
        int caption = r.intIn("caption_projection_dim", 1, 1 << 20);
        int pooled = r.intIn("pooled_projection_dim", 1, 1 << 20);
        int outCh = root.hasNonNull("out_channels") ? r.intIn("out_channels", 1, 256) : inCh;
        int posMax = root.hasNonNull("pos_embed_max_size") ? r.intIn("pos_embed_max_size", 1, 4096) : sample / patch;
        int d = heads * headDim;
        if (caption != d) {
            throw r.bad("caption_projection_dim " + caption + " must equal num_attention_heads·attention_head_dim = " + d);
        }
        if (outCh != inCh) {
            throw r.bad("out_channels " + outCh + " differs from in_channels " + inCh + " (not an SD3 layout)");
        }
        if (sample % patch != 0 || sample / patch > posMax) {
            throw r.bad("sample_size " + sample + " must be a multiple of patch_size " + patch + " with at most "
                    + "pos_embed_max_size " + posMax + " patches per side");
        }
        List<Integer> dual = new ArrayList<>();
        JsonNode dl = root.get("dual_attention_layers");
        if (dl != null && !dl.isNull()) {
            if (!dl.isArray()) {
                throw r.bad("'dual_attention_layers' must be an array of block indices, found " + dl);
            }
            for (JsonNode i : dl) {
                if (!i.isInt() || i.asInt() < 0 || i.asInt() >= layers) {
                    throw r.bad("'dual_attention_layers' holds " + i + "; allowed block indices 0.." + (layers - 1));
                }
                dual.add(i.asInt());
            }
        }
        JsonNode qk = root.get("qk_norm");
        boolean rms = qk != null && !qk.isNull();
        if (rms && !qk.asText().equals("rms_norm")) {
            throw r.bad("'qk_norm' " + qk + " is not supported; known: null, \"rms_norm\"");
        }
        return new ModelSpec(transformerDir, name, description, sample, patch, inCh, d, layers, heads, 4.0, 0, false,
                List.of(), space, GuidanceMode.ALL, defaults, "sd3", SD3_PROCESS, false,
                new ModelSpec.TextConditioning(joint, pooled, posMax, dual, rms, contextTokens));
    }

    private static ModelSpec.Process process(Reader p) throws BackendException {
        p.onlyKeys(PROCESS_KEYS);
        ModelSpec.Prediction prediction = p.required("prediction", ModelSpec.Prediction.values());
        ModelSpec.NoisePath path = p.required("path", ModelSpec.NoisePath.values());
        ModelSpec.TimeInput time = p.required("time_input", ModelSpec.TimeInput.values());
        ModelSpec.Velocity velocity = p.choice("velocity", ModelSpec.Velocity.NONE, ModelSpec.Velocity.values(),
                ModelSpec.Velocity::configName);
        double scale = p.dbl("time_scale", 1.0);
        try {
            return new ModelSpec.Process(prediction, path, time, velocity, scale);
        } catch (IllegalArgumentException e) {
            throw p.bad(e.getMessage());
        }
    }

    /** The VP schedule: only DiT's linear betas 1e-4..0.02 over 1000 steps are implemented; say so for any other. */
    private static void checkSchedule(Reader r, JsonNode root, boolean learnSigma) throws BackendException {
        JsonNode sched = root.get("schedule");
        if (sched != null) {
            Reader s = new Reader(r.file(), "schedule.", sched);
            if (!sched.isObject()) {
                throw r.bad("'schedule' must be an object, found " + sched);
            }
            s.onlyKeys(SCHEDULE_KEYS);
            s.text("type", java.util.Set.of("linear"));
            s.text("respacing", java.util.Set.of("dit"));
            if (s.dbl("beta_start", 1e-4) != 1e-4 || s.dbl("beta_end", 0.02) != 0.02
                    || s.intOr("num_train_timesteps", 1000, 1, 1_000_000) != 1000) {
                throw s.bad("only DiT's schedule is implemented: linear betas 0.0001..0.02 over 1000 steps");
            }
        }
        if (root.has("variance")) {
            String expected = learnSigma ? "learned_range" : "fixed_small";
            String v = r.text("variance", java.util.Set.of("learned_range", "fixed_small"));
            if (!v.equals(expected)) {
                throw r.bad("'variance' is " + v + " but learn_sigma is " + learnSigma + " (expected " + expected + ")");
            }
        }
    }

    private static ModelSpec.Defaults defaults(Reader d, ModelSpec.Process process) throws BackendException {
        d.onlyKeys(DEFAULTS_KEYS);
        Sampler fallback = process.flow() ? Sampler.EULER : Sampler.DDIM;
        Sampler sampler = d.choice("sampler", fallback, Sampler.values(), Sampler::configName);
        if (!sampler.samples(process)) {
            throw d.bad("'sampler' " + sampler.configName() + " cannot sample a " + process.path().configName()
                    + " model; it takes " + Sampler.forProcess(process).stream().map(Sampler::configName).toList());
        }
        ModelSpec.GuidanceInterval interval = null;
        JsonNode gi = d.node().get("guidance_interval");
        if (gi != null && !gi.isNull()) {
            if (!gi.isArray() || gi.size() != 2 || !gi.get(0).isNumber() || !gi.get(1).isNumber()
                    || !(gi.get(0).doubleValue() <= gi.get(1).doubleValue())) {
                throw d.bad("'guidance_interval' must be [low, high] with low <= high, found " + gi);
            }
            interval = new ModelSpec.GuidanceInterval(gi.get(0).doubleValue(), gi.get(1).doubleValue());
        }
        double shift = d.dbl("timestep_shift", 1.0);
        if (!(shift > 0)) {
            throw d.bad("'timestep_shift' must be > 0, found " + shift);
        }
        if (!process.flow() && (interval != null || shift != 1.0)) {
            throw d.bad("guidance_interval and timestep_shift are flow-model settings");
        }
        return new ModelSpec.Defaults(sampler, d.intOr("steps", 50, 1, 1000), d.dbl("guidance", 1.0),
                d.dbl("eta", 0.0), interval, shift);
    }

    private static java.util.Set<String> union(java.util.Set<String> a, String... more) {
        java.util.Set<String> s = new java.util.TreeSet<>(a);
        s.addAll(List.of(more));
        return java.util.Set.copyOf(s);
    }


    /**
     * Finds a latent model's decoders. {@code config.json} may name each folder by a path relative to the model
     * folder ({@code "vae": "../sd-vae-ft-ema"}), so several models share one VAE without copying it; without the
     * key, a subfolder {@code vae/} (or {@code taesd/}) is used when present. A named folder that does not exist, a
     * decoder whose latent channels differ from the model's, or a decoder on a pixel model fails with the file.
     */
    public static ModelDecoders loadDecoders(ModelSpec spec) throws BackendException {
        Path file = spec.file(CONFIG_FILE);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file));
        } catch (IOException e) {
            throw new BackendException(file + ": cannot read: " + e.getMessage(), e);
        }
        DecoderSpec vae = decoder(spec, file, root, VAE_KEY, DecoderSpec.Kind.FULL);
        DecoderSpec taesd = decoder(spec, file, root, TAESD_KEY, DecoderSpec.Kind.TINY);
        return new ModelDecoders(vae, taesd);
    }

    private static DecoderSpec decoder(ModelSpec spec, Path file, JsonNode root, String key, DecoderSpec.Kind kind)
            throws BackendException {
        JsonNode v = root.get(key);
        Path dir;
        if (v == null || v.isNull()) {
            dir = spec.directory().resolve(key);
            if (!Files.isDirectory(dir)) {
                return null;
            }
        } else {
            if (!v.isTextual() || v.asText().isBlank()) {
                throw new BackendException(file + ": '" + key + "' must be a folder path (relative to the model"
                        + " folder), found " + v);
            }
            dir = spec.directory().resolve(v.asText()).normalize();
            if (!Files.isDirectory(dir)) {
                throw new BackendException(file + ": '" + key + "' names " + dir + ", which is not a folder");
            }
        }
        if (spec.space() != ModelSpec.Space.LATENT) {
            throw new BackendException(file + ": a decoder (" + dir + ") needs \"space\": \"latent\"; this model is "
                    + spec.space().configName());
        }
        DecoderSpec d = DecoderConfigs.load(dir);
        if (d.kind() != kind) {
            throw new BackendException(dir.resolve(CONFIG_FILE) + ": '" + key + "' must be a " + kind.className()
                    + " folder, found " + d.kind().className());
        }
        if (d.latentChannels() != spec.inChannels()) {
            throw new BackendException(dir.resolve(CONFIG_FILE) + ": latent_channels " + d.latentChannels()
                    + " does not match the model's in_channels " + spec.inChannels());
        }
        return d;
    }

    private record Reader(Path file, String prefix, JsonNode node) {
        BackendException bad(String msg) {
            return new BackendException(file + ": " + msg);
        }

        /** Fails on the first key not in {@code known}, naming the known ones. */
        void onlyKeys(java.util.Set<String> known) throws BackendException {
            var it = node.fieldNames();
            while (it.hasNext()) {
                String k = it.next();
                if (!known.contains(k)) {
                    throw bad("unknown key '" + prefix + k + "'; known keys" + (prefix.isEmpty() ? "" : " of '"
                            + prefix.substring(0, prefix.length() - 1) + "'") + ": " + new java.util.TreeSet<>(known));
                }
            }
        }

        Reader object(String key) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.isObject()) {
                throw bad("'" + prefix + key + "' must be an object, found " + v);
            }
            return new Reader(file, prefix + key + ".", v);
        }

        String text(String key, java.util.Set<String> allowed) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.isTextual() || !allowed.contains(v.asText())) {
                throw bad("'" + prefix + key + "' must be one of " + new java.util.TreeSet<>(allowed) + ", found " + v);
            }
            return v.asText();
        }

        <E extends Enum<E> & ModelSpec.Named> E required(String key, E[] values) throws BackendException {
            if (!node.has(key)) {
                throw bad("'" + prefix + key + "' is missing; one of "
                        + java.util.Arrays.stream(values).map(ModelSpec.Named::configName).toList());
            }
            return choice(key, values[0], values, ModelSpec.Named::configName);
        }

        int intIn(String key, int min, int max) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.canConvertToInt() || !v.isIntegralNumber()) {
                throw bad("'" + prefix + key + "' must be an integer in " + min + ".." + max + ", found " + v);
            }
            int i = v.intValue();
            if (i < min || i > max) {
                throw bad("'" + prefix + key + "' must be in " + min + ".." + max + ", found " + i);
            }
            return i;
        }

        int intOr(String key, int fallback, int min, int max) throws BackendException {
            return node.has(key) ? intIn(key, min, max) : fallback;
        }

        double dbl(String key, double fallback) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null) {
                return fallback;
            }
            if (!v.isNumber() || !Double.isFinite(v.doubleValue())) {
                throw bad("'" + prefix + key + "' must be a finite number, found " + v);
            }
            return v.doubleValue();
        }

        boolean bool(String key) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.isBoolean()) {
                throw bad("'" + prefix + key + "' must be true or false, found " + v);
            }
            return v.booleanValue();
        }

        /** One of {@code values} by its config name; absent → {@code fallback}. */
        <E> E choice(String key, E fallback, E[] values, java.util.function.Function<E, String> name)
                throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            List<String> allowed = new ArrayList<>();
            for (E e : values) {
                if (name.apply(e).equals(v.asText())) {
                    return e;
                }
                allowed.add(name.apply(e));
            }
            throw bad("'" + prefix + key + "' must be one of " + allowed + ", found '" + v.asText() + "'");
        }
    }
}
