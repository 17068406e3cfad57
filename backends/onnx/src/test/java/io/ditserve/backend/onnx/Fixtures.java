package io.ditserve.backend.onnx;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Random;
import java.util.ServiceLoader;

/** The reference fixtures of tools/make_fixtures.py, the bundled model, and helpers to run backends on them. */
final class Fixtures {
    /** The two fixture models and the bundled one. */
    static final String[] MODELS = {"pixel-tiny", "latent-tiny", "fashion-dit"};

    private Fixtures() {}

    /** One forward case: inputs and the PyTorch output. */
    record Case(Tensor x, int[] t, int[] y, Tensor out) {}

    /** The repository root: surefire's {@code repo.root}, else the nearest parent of user.dir with tools/fixtures. */
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

    static Path modelDir(String name) {
        Path root = repoRoot();
        return name.equals("fashion-dit") ? root.resolve("models/fashion-dit") : root.resolve("tools/fixtures/" + name);
    }

    static ModelSpec spec(String name) throws BackendException {
        return ModelConfigs.load(modelDir(name));
    }

    /** The PyTorch forward case written next to the model (tools/make_fixtures.py). */
    static Case forwardCase(String name) throws BackendException {
        Path root = repoRoot();
        Path file = name.equals("fashion-dit")
                ? root.resolve("tools/fixtures/fashion-dit.forward.safetensors")
                : root.resolve("tools/fixtures/" + name + "/cases.safetensors");
        try (Safetensors st = Safetensors.open(file)) {
            return new Case(st.tensor("forward.x"), ints(st.longs("forward.t")), ints(st.longs("forward.y")),
                    st.tensor("forward.out"));
        }
    }

    /** A random batch with mixed timesteps and labels (the null class included); {@code out} is zeros. */
    static Case randomCase(ModelSpec spec, int n, long seed) {
        Random rnd = new Random(seed);
        int size = spec.inputSize();
        Tensor x = Tensor.zeros(n, spec.inChannels(), size, size);
        float[] xs = x.data();
        for (int i = 0; i < xs.length; i++) {
            xs[i] = (float) rnd.nextGaussian();
        }
        int[] t = new int[n];
        int[] y = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = rnd.nextInt(1000);
            y[i] = i == 0 ? spec.nullClass() : rnd.nextInt(spec.numClasses() + 1);
        }
        return new Case(x, t, y, Tensor.zeros(n, spec.outChannels(), size, size));
    }

    static Backend onnx(ModelSpec spec, int threads, Map<String, String> options) throws BackendException {
        return provider(OnnxBackendProvider.NAME).create(spec, new BackendOptions(threads, options));
    }

    static Backend onnx(ModelSpec spec) throws BackendException {
        return onnx(spec, 2, Map.of());
    }

    /** A backend found the way the server finds it: by name, through {@link ServiceLoader}. */
    static BackendProvider provider(String name) {
        return ServiceLoader.load(BackendProvider.class).stream()
                .map(ServiceLoader.Provider::get)
                .filter(p -> p.name().equals(name))
                .findFirst()
                .orElseThrow(() -> new IllegalStateException("no backend provider named " + name));
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

    /** {@code spec} with another folder and input channel count (the output channels follow). */
    static ModelSpec with(ModelSpec s, Path directory, int inChannels) {
        return new ModelSpec(directory, s.name(), s.description(), s.inputSize(), s.patchSize(), inChannels,
                s.hiddenSize(), s.depth(), s.numHeads(), s.mlpRatio(), s.numClasses(), s.learnSigma(), s.classNames(),
                s.space(), s.guidanceMode(), s.defaults());
    }

    private static int[] ints(long[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = Math.toIntExact(v[i]);
        }
        return r;
    }
}
