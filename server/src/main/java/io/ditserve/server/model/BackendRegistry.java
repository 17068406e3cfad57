package io.ditserve.server.model;

import io.ditserve.backend.BackendProvider;
import java.util.Map;
import java.util.ServiceLoader;
import java.util.TreeMap;

/**
 * The backend plugins on the class path, found with {@link ServiceLoader}. Discovery only instantiates the
 * providers (cheap by contract); a backend is created only for models that select it.
 */
public final class BackendRegistry {
    private final Map<String, BackendProvider> providers;

    public BackendRegistry() {
        this(ServiceLoader.load(BackendProvider.class));
    }

    BackendRegistry(Iterable<BackendProvider> found) {
        Map<String, BackendProvider> m = new TreeMap<>();
        for (BackendProvider p : found) {
            BackendProvider previous = m.putIfAbsent(p.name(), p);
            if (previous != null) {
                throw new IllegalStateException("two backend plugins are named '" + p.name() + "': "
                        + previous.getClass().getName() + " and " + p.getClass().getName());
            }
        }
        this.providers = Map.copyOf(m);
    }

    /** The provider with this name; fails listing the known ones. */
    public BackendProvider get(String name) {
        BackendProvider p = providers.get(name);
        if (p == null) {
            throw new IllegalArgumentException("Unknown backend '" + name + "'; known backends: " + names());
        }
        return p;
    }

    public java.util.Set<String> names() {
        return new java.util.TreeSet<>(providers.keySet());
    }
}
