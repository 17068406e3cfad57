package io.ditserve.server.model;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelDecoders;
import io.ditserve.backend.DitCheckpoint;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.PipelineConfigs;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collection;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.stream.Stream;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The model folder: one subfolder per model ({@code config.json} plus the files its backend needs). All models are
 * loaded at start-up, so that a missing or corrupt file stops the server with the file's name and the reason
 * instead of failing a request later. Model names are the folder names and are looked up in a map: a name in a
 * request never becomes a path.
 */
public final class ModelRepository implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(ModelRepository.class);

    private final Map<String, LoadedModel> models;

    private ModelRepository(Map<String, LoadedModel> models) {
        this.models = models;
    }

    /**
     * Loads every model under {@code root}.
     *
     * @param defaultBackend backend for models without an entry in {@code perModel}
     * @param perModel model name → backend name
     */
    public static ModelRepository load(Path root, BackendRegistry registry, String defaultBackend,
            Map<String, String> perModel, BackendOptions options) throws BackendException {
        return load(root, registry, defaultBackend, perModel, options, hit -> { });
    }

    /**
     * Loads every model under {@code root}: DiT-family folders (config.json) and text-to-image pipeline folders
     * (model_index.json).
     *
     * @param promptCache told of each prompt-cache lookup of the text models (metrics)
     */
    public static ModelRepository load(Path root, BackendRegistry registry, String defaultBackend,
            Map<String, String> perModel, BackendOptions options, TextPipeline.CacheListener promptCache)
            throws BackendException {
        if (!Files.isDirectory(root)) {
            throw new BackendException("model folder " + root + " does not exist or is not a folder");
        }
        registry.get(defaultBackend); // an unknown backend fails before any model is loaded
        List<Path> pipelines = new ArrayList<>();
        List<Path> dirs = modelFolders(root, pipelines);
        if (dirs.isEmpty() && pipelines.isEmpty()) {
            throw new BackendException("no models in " + root + " (each model is a subfolder with a config.json)");
        }
        for (String name : perModel.keySet()) {
            if (java.util.stream.Stream.concat(dirs.stream(), pipelines.stream())
                    .noneMatch(d -> d.getFileName().toString().equals(name))) {
                throw new BackendException("configuration names a backend for model '" + name
                        + "', but " + root + " has no such model folder");
            }
        }
        Map<String, LoadedModel> loaded = new LinkedHashMap<>();
        try {
            for (Path dir : dirs) {
                ModelSpec spec = ModelConfigs.load(dir);
                String backendName = perModel.getOrDefault(spec.name(), defaultBackend);
                BackendProvider provider = registry.get(backendName);
                for (String f : provider.requiredFiles()) {
                    requireFile(dir.resolve(f), "backend '" + backendName + "' needs " + provider.requiredFiles()
                            + " in the model folder");
                }
                ModelDecoders decoders = ModelConfigs.loadDecoders(spec);
                for (DecoderSpec d : java.util.stream.Stream.of(decoders.vae(), decoders.taesd())
                        .flatMap(java.util.Optional::stream).toList()) {
                    for (String f : provider.requiredDecoderFiles()) {
                        requireFile(d.directory().resolve(f), "backend '" + backendName + "' needs "
                                + provider.requiredDecoderFiles() + " in the decoder folder of model " + spec.name());
                    }
                }
                long t0 = System.nanoTime();
                Backend backend = provider.create(spec, options);
                Decoder vae = null;
                Decoder taesd = null;
                try {
                    if (decoders.vaeSpec() != null) {
                        vae = provider.createDecoder(decoders.vaeSpec(), options);
                    }
                    if (decoders.taesdSpec() != null) {
                        taesd = provider.createDecoder(decoders.taesdSpec(), options);
                    }
                } catch (BackendException | RuntimeException e) {
                    if (vae != null) {
                        vae.close();
                    }
                    backend.close();
                    throw e;
                }
                log.info("loaded model {} on backend {} in {} ms{}", spec.name(), backendName,
                        (System.nanoTime() - t0) / 1_000_000, describe(decoders));
                loaded.put(spec.name(), new LoadedModel(spec, backend, DitCheckpoint.parameterCount(spec), vae,
                        taesd));
            }
            for (Path dir : pipelines) {
                PipelineConfigs.PipelineSpec p = PipelineConfigs.load(dir);
                String backendName = perModel.getOrDefault(p.name(), defaultBackend);
                long t0 = System.nanoTime();
                LoadedModel m = PipelineLoader.load(p, registry.get(backendName), options, promptCache);
                log.info("loaded text-to-image model {} on backend {} in {} ms: {} transformer ({} blocks of {}), {}",
                        p.name(), backendName, (System.nanoTime() - t0) / 1_000_000, m.spec().family(),
                        m.spec().depth(), m.spec().hiddenSize(), m.text().encoders().stream()
                                .map(e -> e.spec().summary()).toList());
                loaded.put(p.name(), m);
            }
        } catch (BackendException | RuntimeException e) {
            loaded.values().forEach(LoadedModel::close);
            throw e;
        }
        for (LoadedModel m : loaded.values()) {
            warmUp(m);
        }
        return new ModelRepository(Map.copyOf(loaded));
    }

    /**
     * The model subfolders of {@code root}, sorted. Not models: plain files; hidden folders ({@code .name}: not
     * served, one info line); diffusers and transformers component folders beside the models (a VAE shared by
     * several of them, a text encoder: skipped silently); a folder without {@code config.json} (a warning naming it: it is probably a model with a missing
     * file, but a stray folder must not stop the server).
     */
    static List<Path> modelFolders(Path root) throws BackendException {
        return modelFolders(root, new ArrayList<>());
    }

    /** A diffusers pipeline folder (text-to-image models, docs/TEXT_MODELS.md) has this index of its components. */
    static final String PIPELINE_INDEX = "model_index.json";

    /** The model folders of {@code root}, and the pipeline folders into {@code pipelines}. */
    static List<Path> modelFolders(Path root, List<Path> pipelines) throws BackendException {
        List<Path> dirs = new ArrayList<>();
        try (Stream<Path> s = Files.list(root)) {
            for (Path p : s.sorted().toList()) {
                String name = p.getFileName().toString();
                if (!Files.isDirectory(p)) {
                    continue;
                }
                if (name.startsWith(".")) {
                    log.info("hidden folder {} in the model folder is not served", p);
                } else if (Files.exists(p.resolve(PIPELINE_INDEX))) {
                    pipelines.add(p);
                } else if (!Files.exists(p.resolve(ModelConfigs.CONFIG_FILE))) {
                    if (holdsWeights(p)) { // probably a model with a missing config.json
                        log.warn("folder {} has no {}: not served as a model", p, ModelConfigs.CONFIG_FILE);
                    } else { // e.g. a shared tokenizer or a card waiting for its model: nothing to warn about
                        log.info("folder {} holds no model (no {} and no weights)", p, ModelConfigs.CONFIG_FILE);
                    }
                } else if (!Files.isRegularFile(p.resolve(ModelConfigs.CONFIG_FILE))) {
                    requireFile(p.resolve(ModelConfigs.CONFIG_FILE), "each model folder needs a config.json");
                } else if (!DecoderConfigs.isComponentFolder(p)) {
                    dirs.add(p);
                }
            }
        } catch (IOException e) {
            throw new BackendException("cannot list model folder " + root + ": " + e.getMessage(), e);
        }
        return dirs;
    }

    /**
     * One forward pass of two samples (a guided step's shape) at load, so that a fresh server's first request does
     * not pay for compiling the backend's kernels: on the java backend the first pass of the bundled model ran
     * interpreted for about 5 s, which is what the first preview of a fresh server waited for. The result is
     * discarded; a failure here is logged and left to the first request to report.
     */
    private static void warmUp(LoadedModel m) {
        ModelSpec s = m.spec();
        int n = 2;
        io.ditserve.backend.Tensor x = io.ditserve.backend.Tensor.zeros(n, s.inChannels(), s.inputSize(),
                s.inputSize());
        io.ditserve.backend.Tensor out = io.ditserve.backend.Tensor.zeros(n, s.outChannels(), s.inputSize(),
                s.inputSize());
        float t = s.process().flow() ? s.process().maxTime() / 2 : 500f;
        io.ditserve.backend.Conditioning c = s.text() == null
                ? new io.ditserve.backend.Conditioning.ClassLabels(new int[] {0, s.nullClass()})
                : new io.ditserve.backend.Conditioning.TextEmbeddings(new float[n * s.text().contextTokens()
                        * s.text().jointAttentionDim()], s.text().contextTokens(), s.text().jointAttentionDim(),
                        new float[n * s.text().pooledProjectionDim()], s.text().pooledProjectionDim());
        long t0 = System.nanoTime();
        try {
            m.backend().forward(new io.ditserve.backend.ForwardBatch(x, new float[] {t, t}, c, null), out,
                    io.ditserve.backend.Cancellation.NEVER);
            log.info("warmed up model {} in {} ms", m.name(), (System.nanoTime() - t0) / 1_000_000);
        } catch (BackendException | RuntimeException e) {
            log.warn("warm-up pass of model {} failed: {}", m.name(), e.toString());
        }
    }

    /** Whether {@code dir} holds a weights file (.safetensors, .onnx, .pt, .pth, .ckpt, .bin). */
    private static boolean holdsWeights(Path dir) {
        try (Stream<Path> files = Files.list(dir)) {
            return files.map(f -> f.getFileName().toString())
                    .anyMatch(n -> n.matches(".*\\.(safetensors|onnx|pt|pth|ckpt|bin)$"));
        } catch (IOException e) {
            return true; // unreadable: say so as before
        }
    }

    /** Fails unless {@code file} is a regular file (following links), saying which of the two problems it has. */
    private static void requireFile(Path file, String what) throws BackendException {
        if (Files.isRegularFile(file)) {
            return;
        }
        String problem = Files.exists(file) ? "not a regular file" + (Files.isSymbolicLink(file) ? " (a link to "
                + linkTarget(file) + ")" : "") : "missing";
        throw new BackendException(file + ": " + problem + "; " + what);
    }

    private static String linkTarget(Path link) {
        try {
            return Files.readSymbolicLink(link).toString();
        } catch (IOException | UnsupportedOperationException e) {
            return "?";
        }
    }

    private static String describe(ModelDecoders d) {
        StringBuilder b = new StringBuilder();
        d.vae().ifPresent(v -> b.append("; vae ").append(v.summary()).append(" from ").append(v.directory()));
        d.taesd().ifPresent(v -> b.append("; taesd ").append(v.summary()).append(" from ").append(v.directory()));
        return b.toString();
    }

    public Optional<LoadedModel> find(String name) {
        return Optional.ofNullable(models.get(name));
    }

    public Collection<LoadedModel> all() {
        return models.values().stream().sorted(java.util.Comparator.comparing(LoadedModel::name)).toList();
    }

    public List<String> names() {
        return all().stream().map(LoadedModel::name).toList();
    }

    @Override
    public void close() {
        for (LoadedModel m : models.values()) {
            try {
                m.close();
            } catch (RuntimeException e) {
                log.warn("closing backend of {} failed", m.name(), e);
            }
        }
    }
}
