package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;

/**
 * Reads a diffusers text-to-image pipeline folder as it is downloaded (docs/TEXT_MODELS.md): {@code model_index.json}
 * naming the components, each component's folder and config, {@code scheduler/scheduler_config.json}, and our
 * {@code ditserve.json} for what a diffusers folder has no place for (the T5 context length when there is no T5, the
 * default steps and guidance, the default negative prompt, pixel space). Pure data: the server creates the
 * encoders, tokenizers, transformer and VAE from it on the chosen backend.
 */
public final class PipelineConfigs {
    public static final String INDEX_FILE = "model_index.json";
    public static final String SERVE_FILE = "ditserve.json";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final Set<String> PIPELINES = Set.of("StableDiffusion3Pipeline");
    private static final Set<String> COMPONENTS = Set.of("scheduler", "text_encoder", "text_encoder_2",
            "text_encoder_3", "tokenizer", "tokenizer_2", "tokenizer_3", "transformer", "vae", "image_encoder",
            "feature_extractor");
    private static final Set<String> SERVE_KEYS = Set.of("max_sequence_length", "guidance_scale",
            "num_inference_steps", "negative_prompt", "pixel_space", "description",
            // what a training run wrote about itself (tools/shapes/train.py --export): informational
            "trained_steps", "trained_samples", "training_seconds", "last_eval");

    private PipelineConfigs() {}

    /** An encoder and its tokenizer, by role. */
    public record Encoder(String role, Path encoderDir, Path tokenizerDir) {}

    /**
     * @param clips the CLIP encoders (text_encoder, text_encoder_2)
     * @param t5 text_encoder_3 with tokenizer_3, or null
     * @param vae the VAE folder, or null for a pixel-space pipeline
     * @param maxSequenceLength the T5 part of the context (T5 present: its token count; absent: zero rows)
     * @param shift the scheduler's shift
     */
    public record PipelineSpec(Path directory, String name, String description, Path transformerDir,
            List<Encoder> clips, Encoder t5, Path vae, int maxSequenceLength, String negativePrompt, int steps,
            double guidance, double shift) {}

    public static boolean isPipeline(Path dir) {
        return Files.isRegularFile(dir.resolve(INDEX_FILE));
    }

    public static PipelineSpec load(Path dir) throws BackendException {
        JsonNode index = read(dir.resolve(INDEX_FILE));
        Path indexFile = dir.resolve(INDEX_FILE);
        String cls = index.path("_class_name").asText("");
        if (!PIPELINES.contains(cls)) {
            throw new BackendException(indexFile + ": _class_name '" + cls + "' is not a pipeline this server runs; "
                    + "known: " + new TreeSet<>(PIPELINES));
        }
        var it = index.fieldNames();
        while (it.hasNext()) {
            String k = it.next();
            if (!k.startsWith("_") && !COMPONENTS.contains(k)) {
                throw new BackendException(indexFile + ": unknown component '" + k + "'; known: "
                        + new TreeSet<>(COMPONENTS));
            }
        }
        for (String unsupported : List.of("image_encoder", "feature_extractor")) {
            if (present(index, dir, unsupported)) {
                throw new BackendException(indexFile + ": component '" + unsupported + "' (IP-Adapter) is not "
                        + "supported; remove it from model_index.json to serve the pipeline without it");
            }
        }
        for (String required : List.of("transformer", "scheduler", "text_encoder", "tokenizer", "text_encoder_2",
                "tokenizer_2")) {
            if (!present(index, dir, required)) {
                throw new BackendException(indexFile + ": component '" + required + "' is missing (its folder or "
                        + "its model_index.json entry); an SD3 pipeline needs transformer, scheduler and both CLIP "
                        + "text encoders with their tokenizers");
            }
        }
        List<Encoder> clips = List.of(
                new Encoder("text_encoder", dir.resolve("text_encoder"), dir.resolve("tokenizer")),
                new Encoder("text_encoder_2", dir.resolve("text_encoder_2"), dir.resolve("tokenizer_2")));
        boolean hasT5 = present(index, dir, "text_encoder_3");
        if (hasT5 != present(index, dir, "tokenizer_3")) {
            throw new BackendException(indexFile + ": text_encoder_3 and tokenizer_3 come together");
        }
        Encoder t5 = hasT5 ? new Encoder("text_encoder_3", dir.resolve("text_encoder_3"), dir.resolve("tokenizer_3"))
                : null;
        JsonNode serve = Files.exists(dir.resolve(SERVE_FILE)) ? read(dir.resolve(SERVE_FILE))
                : JSON.createObjectNode();
        Path serveFile = dir.resolve(SERVE_FILE);
        var sit = serve.fieldNames();
        while (sit.hasNext()) {
            String k = sit.next();
            if (!SERVE_KEYS.contains(k)) {
                throw new BackendException(serveFile + ": unknown key '" + k + "'; known keys: "
                        + new TreeSet<>(SERVE_KEYS));
            }
        }
        boolean pixel = serve.path("pixel_space").asBoolean(false);
        boolean hasVae = present(index, dir, "vae");
        if (pixel == hasVae) {
            throw new BackendException(dir + ": " + (pixel ? "ditserve.json says pixel_space but the pipeline has a"
                    + " vae" : "the pipeline has no vae and ditserve.json does not say pixel_space: true"));
        }
        int maxSeq = intIn(serveFile, serve, "max_sequence_length", 256, 0, 512);
        JsonNode scheduler = read(dir.resolve("scheduler/scheduler_config.json"));
        Path schedulerFile = dir.resolve("scheduler/scheduler_config.json");
        if (!scheduler.path("_class_name").asText("FlowMatchEulerDiscreteScheduler")
                .equals("FlowMatchEulerDiscreteScheduler")) {
            throw new BackendException(schedulerFile + ": only FlowMatchEulerDiscreteScheduler is supported, found "
                    + scheduler.get("_class_name"));
        }
        if (scheduler.path("use_dynamic_shifting").asBoolean(false)) {
            throw new BackendException(schedulerFile + ": use_dynamic_shifting is not supported (SD3's pipeline "
                    + "passes no mu)");
        }
        if (scheduler.path("num_train_timesteps").asInt(1000) != 1000) {
            throw new BackendException(schedulerFile + ": num_train_timesteps must be 1000");
        }
        double shift = scheduler.path("shift").asDouble(1.0);
        if (!(shift > 0)) {
            throw new BackendException(schedulerFile + ": shift must be > 0, found " + shift);
        }
        int steps = intIn(serveFile, serve, "num_inference_steps", 28, 1, 1000);
        double guidance = serve.path("guidance_scale").asDouble(7.0);
        String name = dir.getFileName().toString();
        return new PipelineSpec(dir, name, serve.path("description").asText(cls + " " + name),
                dir.resolve("transformer"), clips, t5, hasVae ? dir.resolve("vae") : null, maxSeq,
                serve.path("negative_prompt").asText(""), steps, guidance, shift);
    }

    private static boolean present(JsonNode index, Path dir, String component) {
        JsonNode e = index.get(component);
        return e != null && e.isArray() && e.size() == 2 && !e.get(0).isNull() && Files.isDirectory(dir.resolve(component));
    }

    private static int intIn(Path file, JsonNode n, String key, int fallback, int min, int max)
            throws BackendException {
        JsonNode v = n.get(key);
        if (v == null) {
            return fallback;
        }
        if (!v.isIntegralNumber() || v.asInt() < min || v.asInt() > max) {
            throw new BackendException(file + ": '" + key + "' must be an integer in " + min + ".." + max + ", found "
                    + v);
        }
        return v.asInt();
    }

    private static JsonNode read(Path file) throws BackendException {
        try {
            JsonNode n = JSON.readTree(Files.readString(file));
            if (n == null || !n.isObject()) {
                throw new BackendException(file + ": expected a JSON object");
            }
            return n;
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing");
        } catch (IOException e) {
            throw new BackendException(file + ": not valid JSON: " + e.getMessage(), e);
        }
    }

    /** Strings for error messages. */
    static List<String> names(List<Encoder> encoders) {
        List<String> out = new ArrayList<>();
        encoders.forEach(e -> out.add(e.role()));
        return out;
    }
}
