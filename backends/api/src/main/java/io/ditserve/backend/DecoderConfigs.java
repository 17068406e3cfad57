package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads a decoder folder's {@code config.json} exactly as diffusers writes it ({@code AutoencoderKL} or
 * {@code AutoencoderTiny}), so that a downloaded folder works as it is. Keys that only the encoder uses are ignored;
 * a key that changes the decoder in a way this server does not implement is rejected with what is supported.
 */
public final class DecoderConfigs {
    private static final ObjectMapper JSON = new ObjectMapper();

    private DecoderConfigs() {}

    /** True when {@code dir/config.json} names a diffusers decoder class (such a folder is not a DiT model). */
    /**
     * Whether {@code dir} holds a component of a pipeline rather than a model of ours: a diffusers class
     * ({@code _class_name}, e.g. a shared VAE, a transformer folder) or a transformers model ({@code architectures},
     * e.g. a text encoder). Such folders beside the models are not served and not warned about.
     */
    public static boolean isComponentFolder(Path dir) {
        try {
            JsonNode root = JSON.readTree(Files.readString(dir.resolve(ModelConfigs.CONFIG_FILE)));
            return root != null && (root.has("_class_name") || root.has("architectures"));
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    public static boolean isDecoderFolder(Path dir) {
        try {
            JsonNode root = JSON.readTree(Files.readString(dir.resolve(ModelConfigs.CONFIG_FILE)));
            String cls = root == null ? "" : root.path("_class_name").asText("");
            for (DecoderSpec.Kind k : DecoderSpec.Kind.values()) {
                if (k.className().equals(cls)) {
                    return true;
                }
            }
            return false;
        } catch (IOException | RuntimeException e) {
            return false;
        }
    }

    public static DecoderSpec load(Path dir) throws BackendException {
        Path file = dir.resolve(ModelConfigs.CONFIG_FILE);
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(file));
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing (a decoder folder holds config.json and "
                    + DecoderSpec.WEIGHTS_FILE + ", as diffusers writes them)");
        } catch (IOException e) {
            throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
        }
        if (root == null || !root.isObject()) {
            throw new BackendException(file + ": expected a JSON object");
        }
        String cls = root.path("_class_name").asText("");
        if (cls.equals(DecoderSpec.Kind.FULL.className())) {
            return full(dir, file, root);
        }
        if (cls.equals(DecoderSpec.Kind.TINY.className())) {
            return tiny(dir, file, root);
        }
        throw new BackendException(file + ": '_class_name' must be AutoencoderKL or AutoencoderTiny, found '"
                + cls + "'");
    }

    private static DecoderSpec full(Path dir, Path file, JsonNode root) throws BackendException {
        Fields r = new Fields(file, root);
        int latent = r.intIn("latent_channels", 4, 1, 64);
        int out = r.intIn("out_channels", 3, 1, 64);
        List<Integer> blocks = r.intList("block_out_channels", List.of(64), 1, 4096);
        int layers = r.intIn("layers_per_block", 1, 0, 64);
        int groups = r.intIn("norm_num_groups", 32, 1, 4096);
        for (int c : blocks) {
            if (c % groups != 0) {
                throw r.bad("block_out_channels " + blocks + " must all be multiples of norm_num_groups " + groups);
            }
        }
        r.expectText("act_fn", "silu");
        JsonNode up = root.get("up_block_types");
        if (up != null) {
            if (!up.isArray() || up.size() != blocks.size()) {
                throw r.bad("'up_block_types' must list one type per block_out_channels entry, found " + up);
            }
            for (JsonNode t : up) {
                if (!t.asText().equals("UpDecoderBlock2D")) {
                    throw r.bad("'up_block_types' supports only UpDecoderBlock2D, found " + up);
                }
            }
        }
        JsonNode shift = root.get("shift_factor");
        double shiftFactor = shift == null || shift.isNull() ? 0.0 : r.finite("shift_factor", 0.0);
        double scaling = r.finite("scaling_factor", 0.18215);
        if (scaling == 0) {
            throw r.bad("'scaling_factor' must not be 0");
        }
        return new DecoderSpec(dir, DecoderSpec.Kind.FULL, latent, out, blocks, layers, List.of(), groups, scaling,
                shiftFactor, r.bool("use_post_quant_conv", true), r.bool("mid_block_add_attention", true), 2, 0);
    }

    private static DecoderSpec tiny(Path dir, Path file, JsonNode root) throws BackendException {
        Fields r = new Fields(file, root);
        int latent = r.intIn("latent_channels", 4, 1, 64);
        int out = r.intIn("out_channels", 3, 1, 64);
        List<Integer> channels = r.intList("decoder_block_out_channels", List.of(64, 64, 64, 64), 1, 4096);
        List<Integer> blocks = r.intList("num_decoder_blocks", List.of(3, 3, 3, 1), 0, 64);
        if (blocks.size() != channels.size()) {
            throw r.bad("'num_decoder_blocks' " + blocks + " and 'decoder_block_out_channels' " + channels
                    + " must have the same length");
        }
        for (int c : channels) {
            if (c != channels.get(0)) {
                // diffusers' DecoderTiny builds every stage as c → c, so only equal widths form a valid network
                throw r.bad("'decoder_block_out_channels' must all be equal (as in diffusers' DecoderTiny), found "
                        + channels);
            }
        }
        r.expectText("act_fn", "relu");
        r.expectText("upsample_fn", "nearest");
        int up = r.intIn("upsampling_scaling_factor", 2, 1, 16);
        double magnitude = r.finite("latent_magnitude", 3.0);
        if (magnitude <= 0) {
            throw r.bad("'latent_magnitude' must be positive, found " + magnitude);
        }
        return new DecoderSpec(dir, DecoderSpec.Kind.TINY, latent, out, channels, 0, blocks, 0, 1.0, 0.0, false,
                false, up, magnitude);
    }

    private record Fields(Path file, JsonNode node) {
        BackendException bad(String msg) {
            return new BackendException(file + ": " + msg);
        }

        int intIn(String key, int fallback, int min, int max) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isIntegralNumber() || !v.canConvertToInt() || v.intValue() < min || v.intValue() > max) {
                throw bad("'" + key + "' must be an integer in " + min + ".." + max + ", found " + v);
            }
            return v.intValue();
        }

        List<Integer> intList(String key, List<Integer> fallback, int min, int max) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isArray() || v.isEmpty() || v.size() > 16) {
                throw bad("'" + key + "' must be a list of 1..16 integers, found " + v);
            }
            List<Integer> out = new ArrayList<>();
            for (JsonNode e : v) {
                if (!e.isIntegralNumber() || !e.canConvertToInt() || e.intValue() < min || e.intValue() > max) {
                    throw bad("'" + key + "' entries must be integers in " + min + ".." + max + ", found " + v);
                }
                out.add(e.intValue());
            }
            return out;
        }

        double finite(String key, double fallback) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isNumber() || !Double.isFinite(v.doubleValue())) {
                throw bad("'" + key + "' must be a finite number, found " + v);
            }
            return v.doubleValue();
        }

        boolean bool(String key, boolean fallback) throws BackendException {
            JsonNode v = node.get(key);
            if (v == null || v.isNull()) {
                return fallback;
            }
            if (!v.isBoolean()) {
                throw bad("'" + key + "' must be true or false, found " + v);
            }
            return v.booleanValue();
        }

        void expectText(String key, String only) throws BackendException {
            JsonNode v = node.get(key);
            if (v != null && !v.isNull() && !v.asText().equals(only)) {
                throw bad("'" + key + "' must be " + only + " (the only value this server implements), found " + v);
            }
        }
    }
}
