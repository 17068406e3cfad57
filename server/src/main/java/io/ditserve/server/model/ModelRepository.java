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
        if (!Files.isDirectory(root)) {
            throw new BackendException("model folder " + root + " does not exist or is not a folder");
        }
        registry.get(defaultBackend); // an unknown backend fails before any model is loaded
        List<Path> dirs = new ArrayList<>();
        try (Stream<Path> s = Files.list(root)) {
            // a diffusers decoder folder beside the models (shared by several of them) is not a model
            s.filter(p -> Files.isRegularFile(p.resolve(ModelConfigs.CONFIG_FILE)))
                    .filter(p -> !DecoderConfigs.isDecoderFolder(p)).sorted().forEach(dirs::add);
        } catch (IOException e) {
            throw new BackendException("cannot list model folder " + root + ": " + e.getMessage(), e);
        }
        if (dirs.isEmpty()) {
            throw new BackendException("no models in " + root + " (each model is a subfolder with a config.json)");
        }
        for (String name : perModel.keySet()) {
            if (dirs.stream().noneMatch(d -> d.getFileName().toString().equals(name))) {
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
                    if (!Files.isRegularFile(dir.resolve(f))) {
                        throw new BackendException(dir.resolve(f) + ": missing; backend '" + backendName
                                + "' needs " + provider.requiredFiles() + " in the model folder");
                    }
                }
                ModelDecoders decoders = ModelConfigs.loadDecoders(spec);
                for (DecoderSpec d : java.util.stream.Stream.of(decoders.vae(), decoders.taesd())
                        .flatMap(java.util.Optional::stream).toList()) {
                    for (String f : provider.requiredDecoderFiles()) {
                        if (!Files.isRegularFile(d.directory().resolve(f))) {
                            throw new BackendException(d.directory().resolve(f) + ": missing; backend '"
                                    + backendName + "' needs " + provider.requiredDecoderFiles()
                                    + " in the decoder folder of model " + spec.name());
                        }
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
        } catch (BackendException | RuntimeException e) {
            loaded.values().forEach(LoadedModel::close);
            throw e;
        }
        return new ModelRepository(Map.copyOf(loaded));
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
