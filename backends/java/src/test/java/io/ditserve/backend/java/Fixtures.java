package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;

/** The reference fixtures of tools/make_fixtures.py and helpers to run a model on them. */
final class Fixtures {
    private Fixtures() {}

    /** One forward case: inputs and the PyTorch output. */
    record Case(Tensor x, int[] t, int[] y, Tensor out) {}

    /** The repository root: surefire's {@code repo.root}, else the first parent of the working dir with tools/fixtures. */
    static Path repoRoot() {
        String prop = System.getProperty("repo.root");
        if (prop != null && Files.isDirectory(Path.of(prop, "tools", "fixtures"))) {
            return Path.of(prop);
        }
        for (Path p = Path.of("").toAbsolutePath(); p != null; p = p.getParent()) {
            if (Files.isDirectory(p.resolve("tools/fixtures"))) {
                return p;
            }
        }
        throw new IllegalStateException("no tools/fixtures above " + Path.of("").toAbsolutePath()
                + " and repo.root=" + prop);
    }

    /** Model folders by name: the two fixture models and the bundled one. */
    static Path modelDir(String name) {
        Path root = repoRoot();
        return name.equals("fashion-dit") ? root.resolve("models/fashion-dit") : root.resolve("tools/fixtures/" + name);
    }

    static Path casesFile(String name) {
        Path root = repoRoot();
        return name.equals("fashion-dit")
                ? root.resolve("tools/fixtures/fashion-dit.forward.safetensors")
                : root.resolve("tools/fixtures/" + name + "/cases.safetensors");
    }

    static ModelSpec spec(String name) throws BackendException {
        return ModelConfigs.load(modelDir(name));
    }

    static Case forwardCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile(name))) {
            return new Case(st.tensor("forward.x"), ints(st.longs("forward.t")), ints(st.longs("forward.y")),
                    st.tensor("forward.out"));
        }
    }

    static Backend backend(ModelSpec spec, String path, int threads) throws BackendException {
        return new JavaBackendProvider().create(spec, new BackendOptions(threads, Map.of("java.path", path)));
    }

    static Tensor run(Backend b, Tensor x, int[] t, int[] y) throws BackendException {
        ModelSpec s = b.model();
        Tensor out = Tensor.zeros(x.dim(0), s.outChannels(), s.inputSize(), s.inputSize());
        b.forward(x, t, y, out, () -> false);
        return out;
    }

    /** max |actual − expected| / max |expected|. */
    static double relativeError(Tensor actual, Tensor expected) {
        float[] a = actual.data();
        float[] e = expected.data();
        if (a.length != e.length) {
            throw new IllegalArgumentException(actual + " vs " + expected);
        }
        double err = 0;
        for (int i = 0; i < a.length; i++) {
            err = Math.max(err, Math.abs((double) a[i] - e[i]));
        }
        return err / expected.maxAbs();
    }

    private static int[] ints(long[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = Math.toIntExact(v[i]);
        }
        return r;
    }
}
