package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The PyTorch reference cases of tools/make_fixtures.py (tools/fixtures/README.md), for the GPU parity check and
 * the tests: each model folder with one forward case, a batch of 4 whose samples differ in t and y, and one
 * step-cache case. The tests read them through backends/testkit's Fixtures; this copy is for the GPU check
 * programs, which run without JUnit.
 */
final class FixtureCases {
    /** The models with a reference case: two random-weight fixtures and the bundled model. */
    static final List<String> MODELS = List.of("pixel-tiny", "latent-tiny", "fashion-dit");

    /** One forward case: inputs and the PyTorch output. */
    record Case(Tensor x, int[] t, int[] y, Tensor out) {}

    private final Path root;

    FixtureCases(Path repoRoot) {
        this.root = repoRoot;
    }

    /** The repository root: {@code repo.root} if it holds tools/fixtures, else the first such parent of the cwd. */
    static Path findRepoRoot() {
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

    Path root() {
        return root;
    }

    Path modelDir(String name) {
        return name.equals("fashion-dit") ? root.resolve("models/fashion-dit") : root.resolve("tools/fixtures/" + name);
    }

    Path casesFile(String name) {
        return name.equals("fashion-dit")
                ? root.resolve("tools/fixtures/fashion-dit.forward.safetensors")
                : root.resolve("tools/fixtures/" + name + "/cases.safetensors");
    }

    ModelSpec spec(String name) throws BackendException {
        return ModelConfigs.load(modelDir(name));
    }

    Case forwardCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile(name))) {
            return new Case(st.tensor("forward.x"), ints(st.longs("forward.t")), ints(st.longs("forward.y")),
                    st.tensor("forward.out"));
        }
    }

    /**
     * The step-cache case (docs/STEP_CACHE.md): inputs, the samples that run the cached span and store their
     * residual ({@code run}), the residuals the others reuse, and PyTorch's output and stored residuals.
     */
    record CacheCase(Tensor x, int[] t, int[] y, int[] run, Tensor residual, Tensor out, Tensor residualOut) {}

    CacheCase cacheCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile(name))) {
            return new CacheCase(st.tensor("cache.x"), ints(st.longs("cache.t")), ints(st.longs("cache.y")),
                    ints(st.longs("cache.run")), st.tensor("cache.residual"), st.tensor("cache.out"),
                    st.tensor("cache.residual_out"));
        }
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
            double diff = Math.abs((double) a[i] - e[i]);
            err = Double.isNaN(diff) ? Double.POSITIVE_INFINITY : Math.max(err, diff);
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
