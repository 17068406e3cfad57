package io.ditserve.backend.testkit;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.ServiceLoader;

/**
 * The DiT reference fixtures of tools/make_fixtures.py (the two fixture models under tools/fixtures and the bundled
 * models/fashion-dit), the repository root they live in, and the helpers every backend's tests share to run a model
 * on them and measure the error.
 */
public final class Fixtures {
    /** The fixture models (DiT and flow families) and the bundled one: every backend must match PyTorch on each. */
    public static final String[] MODELS = {"pixel-tiny", "latent-tiny", "fashion-dit", "sit-tiny", "repa-tiny"};

    private Fixtures() {}

    /** One forward case: inputs and the PyTorch output ({@code out} is zeros for a random case). */
    public record Case(Tensor x, float[] t, int[] y, Tensor out) {
        /** The case's inputs as a plain class-conditional pass. */
        public ForwardBatch batch() {
            return ForwardBatch.ofLabels(x, t, y);
        }
    }

    /** The repository root: surefire's {@code repo.root}, else the nearest parent of the working dir with tools/fixtures. */
    public static Path repoRoot() {
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

    /** A model folder by name: {@code fashion-dit} is models/fashion-dit, the others are under tools/fixtures. */
    public static Path modelDir(String name) {
        Path root = repoRoot();
        return name.equals("fashion-dit") ? root.resolve("models/fashion-dit") : root.resolve("tools/fixtures/" + name);
    }

    /** The PyTorch forward case of a model (forward.x, forward.t, forward.y, forward.out). */
    public static Path casesFile(String name) {
        Path root = repoRoot();
        return name.equals("fashion-dit")
                ? root.resolve("tools/fixtures/fashion-dit.forward.safetensors")
                : root.resolve("tools/fixtures/" + name + "/cases.safetensors");
    }

    public static ModelSpec spec(String name) throws BackendException {
        return ModelConfigs.load(modelDir(name));
    }

    public static Case forwardCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile(name))) {
            return new Case(st.tensor("forward.x"), times(st, "forward.t"), ints(st.longs("forward.y")),
                    st.tensor("forward.out"));
        }
    }

    /**
     * The step-cache case (docs/STEP_CACHE.md): inputs, the samples that run the cached span ({@code run}; they
     * store), the residual the others reuse, and PyTorch's output and stored residuals.
     */
    public record CacheCase(Tensor x, float[] t, int[] y, int[] run, Tensor residual, Tensor out, Tensor residualOut) {
        /** The StepCache of this case: the samples in {@code run} store, the others reuse {@code residual}. */
        public StepCache stepCache() {
            int n = t.length;
            int len = residual.stride0();
            StepCache.Use[] uses = new StepCache.Use[n];
            float[][] residuals = new float[n][];
            Arrays.fill(uses, StepCache.Use.REUSE);
            for (int b : run) {
                uses[b] = StepCache.Use.STORE;
            }
            for (int b = 0; b < n; b++) {
                residuals[b] = uses[b] == StepCache.Use.STORE ? new float[len]
                        : Arrays.copyOfRange(residual.data(), b * len, (b + 1) * len);
            }
            return new StepCache(uses, residuals);
        }
    }

    public static CacheCase cacheCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(casesFile(name))) {
            return new CacheCase(st.tensor("cache.x"), times(st, "cache.t"), ints(st.longs("cache.y")),
                    ints(st.longs("cache.run")), st.tensor("cache.residual"), st.tensor("cache.out"),
                    st.tensor("cache.residual_out"));
        }
    }

    /**
     * A random batch of {@code n} N(0, 1) inputs with mixed timesteps and labels: sample 0 has t = 999, sample 1 the
     * null class (when n allows), the others random ones; {@code out} is zeros of the output shape.
     */
    public static Case randomCase(ModelSpec spec, int n, long seed) {
        Random rnd = new Random(seed);
        int size = spec.inputSize();
        Tensor x = Tensor.zeros(n, spec.inChannels(), size, size);
        float[] xs = x.data();
        for (int i = 0; i < xs.length; i++) {
            xs[i] = (float) rnd.nextGaussian();
        }
        float[] t = new float[n];
        int[] y = new int[n];
        boolean flow = spec.process().flow();
        for (int i = 0; i < n; i++) {
            // VP models: integer timesteps, the largest first; flow models: τ in [0, time_scale], the largest first
            t[i] = flow ? (float) (spec.process().maxTime() * (i == 0 ? 1.0 : rnd.nextDouble()))
                    : i == 0 ? 999 : rnd.nextInt(1000);
            y[i] = i == 1 ? spec.nullClass() : rnd.nextInt(spec.numClasses() + 1);
        }
        return new Case(x, t, y, Tensor.zeros(n, spec.outChannels(), size, size));
    }

    /** A backend provider found the way the server finds it: by name, through {@link ServiceLoader}. */
    public static BackendProvider provider(String name) {
        return ServiceLoader.load(BackendProvider.class).stream()
                .map(ServiceLoader.Provider::get)
                .filter(p -> p.name().equals(name))
                .findFirst()
                .orElseThrow(() -> new IllegalStateException("no backend provider named " + name));
    }

    /** One uncancelled forward into a fresh output tensor. */
    public static Tensor run(Backend b, Tensor x, float[] t, int[] y) throws BackendException {
        ModelSpec s = b.model();
        Tensor out = Tensor.zeros(x.dim(0), s.outChannels(), s.inputSize(), s.inputSize());
        b.forward(ForwardBatch.ofLabels(x, t, y), out, () -> false);
        return out;
    }

    /**
     * The times of a case: int64 timesteps (VP fixtures, written before float times) as floats, or float32/float64
     * times (flow fixtures) as floats.
     */
    public static float[] times(Safetensors st, String name) throws BackendException {
        String dtype = st.entry(name).dtype();
        if (dtype.equals("I64")) {
            long[] v = st.longs(name);
            float[] f = new float[v.length];
            for (int i = 0; i < v.length; i++) {
                f[i] = v[i];
            }
            return f;
        }
        return st.floats(name);
    }

    /** Sample {@code k} of a batch tensor, as a batch of one. */
    public static Tensor sample(Tensor batch, int k) {
        int per = batch.stride0();
        int[] shape = batch.shape().clone();
        shape[0] = 1;
        return new Tensor(Arrays.copyOfRange(batch.data(), k * per, (k + 1) * per), shape);
    }

    /** max |actual − expected| / max |expected|: the error measure of every parity check. */
    public static double relativeError(Tensor actual, Tensor expected) {
        if (!Arrays.equals(actual.shape(), expected.shape())) {
            throw new IllegalArgumentException(actual + " vs " + expected);
        }
        return relativeError(actual.data(), expected.data());
    }

    /** max |actual − expected| / max |expected| over two arrays of the same length. */
    public static double relativeError(float[] actual, float[] expected) {
        if (actual.length != expected.length) {
            throw new IllegalArgumentException(actual.length + " values vs " + expected.length);
        }
        double err = 0;
        double max = 0;
        for (int i = 0; i < actual.length; i++) {
            err = Math.max(err, Math.abs((double) actual[i] - expected[i]));
            max = Math.max(max, Math.abs(expected[i]));
        }
        return err / max;
    }

    private static int[] ints(long[] v) {
        int[] r = new int[v.length];
        for (int i = 0; i < v.length; i++) {
            r[i] = Math.toIntExact(v[i]);
        }
        return r;
    }
}
