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
    private static final ObjectMapper JSON = new ObjectMapper();

    private ModelConfigs() {}

    /** Parses {@code dir/config.json}; the model's name is the folder's name. */
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
        Reader r = new Reader(file, root);
        int inputSize = r.intIn("input_size", 1, 4096);
        int patch = r.intIn("patch_size", 1, 64);
        int inCh = r.intIn("in_channels", 1, 64);
        int hidden = r.intIn("hidden_size", 4, 65536);
        int depth = r.intIn("depth", 0, 1024);
        int heads = r.intIn("num_heads", 1, 1024);
        double mlpRatio = r.dbl("mlp_ratio", 4.0);
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
            cn.forEach(n -> names.add(n.asText()));
        }
        ModelSpec.Space space = r.choice("space", ModelSpec.Space.PIXEL, ModelSpec.Space.values(),
                ModelSpec.Space::configName);
        GuidanceMode mode = r.choice("guidance_mode", GuidanceMode.FIRST_THREE, GuidanceMode.values(),
                GuidanceMode::configName);
        JsonNode d = root.path("defaults");
        Reader dr = new Reader(file, d.isObject() ? d : JSON.createObjectNode());
        ModelSpec.Defaults defaults = new ModelSpec.Defaults(
                dr.choice("sampler", Sampler.DDIM, Sampler.values(), Sampler::configName),
                dr.intOr("steps", 50, 1, 1000),
                dr.dbl("guidance", 1.0),
                dr.dbl("eta", 0.0));
        // the folder name is the model name: it is what clients ask for
        return new ModelSpec(dir, dir.getFileName().toString(),
                root.path("description").asText(""), inputSize, patch, inCh, hidden, depth, heads, mlpRatio,
                numClasses, learnSigma, names, space, mode, defaults);
    }

    /** The default folder names of a model's decoders, and the config.json keys that may point elsewhere. */
    public static final String VAE_KEY = "vae";
    public static final String TAESD_KEY = "taesd";

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

    private record Reader(Path file, JsonNode node) {
        BackendException bad(String msg) {
            return new BackendException(file + ": " + msg);
        }

        int intIn(String key, int min, int max) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.canConvertToInt() || !v.isIntegralNumber()) {
                throw bad("'" + key + "' must be an integer in " + min + ".." + max + ", found " + v);
            }
            int i = v.intValue();
            if (i < min || i > max) {
                throw bad("'" + key + "' must be in " + min + ".." + max + ", found " + i);
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
                throw bad("'" + key + "' must be a finite number, found " + v);
            }
            return v.doubleValue();
        }

        boolean bool(String key) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || !v.isBoolean()) {
                throw bad("'" + key + "' must be true or false, found " + v);
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
            throw bad("'" + key + "' must be one of " + allowed + ", found '" + v.asText() + "'");
        }
    }
}
