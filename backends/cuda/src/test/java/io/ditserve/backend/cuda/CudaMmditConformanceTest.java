package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Safetensors;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * SD3's MMDiT on the cuda backend ({@link CudaMmditBackend}, {@link CudaMmditForward}: host code, buffers, launch
 * sequence) run on {@link EmulatedDevice}, the Java mirror of the kernels and of cuBLAS, against tools/sd3/mmdit.py
 * on the fixtures of tools/make_mmdit_fixtures.py, with the java backend's test's measure and tolerance (max |error|
 * / max |reference| below 1e-4): mmdit-tiny (SD3-medium's structure, F32 in one file) and mmdit-x-tiny (SD3.5's RMS
 * qk-norm and dual attention in blocks 0 and 1, BF16 in three shards with their index). Also: the java backend's
 * output on random batches of several prompts, sample independence, attention in chunks, cancellation, arguments.
 * {@link FakeCudaTest} runs the same pass through the native bindings on the real kernel source.
 */
class CudaMmditConformanceTest {
    static final double TOLERANCE = 1e-4;
    private static final int CONTEXT_TOKENS = 7; // the fixtures' cases

    /** One forward case: inputs and the expected output. */
    record Case(Tensor x, float[] t, Conditioning.TextEmbeddings text, Tensor out) {
        ForwardBatch batch() {
            return new ForwardBatch(x, t, text, null);
        }
    }

    static Path fixture(String name) {
        return Fixtures.repoRoot().resolve("tools/fixtures/" + name);
    }

    static ModelSpec spec(String name) throws BackendException {
        Path dir = fixture(name);
        return ModelConfigs.loadMmdit(dir, name, "", ModelSpec.Space.LATENT, CONTEXT_TOKENS,
                new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    static Case forwardCase(String name) throws BackendException {
        try (Safetensors st = Safetensors.open(fixture(name).resolve("cases.safetensors"))) {
            Safetensors.Entry ctx = st.entry("forward.context");
            Safetensors.Entry pooled = st.entry("forward.pooled");
            Conditioning.TextEmbeddings text = new Conditioning.TextEmbeddings(st.floats("forward.context"),
                    (int) ctx.shape()[1], (int) ctx.shape()[2], st.floats("forward.pooled"), (int) pooled.shape()[1]);
            return new Case(st.tensor("forward.x"), st.floats("forward.t"), text, st.tensor("forward.out"));
        }
    }

    /** n random samples: N(0, 1) inputs, context and pooled vectors, times in [0, 1000] with 1000 first. */
    static Case randomCase(ModelSpec spec, int n, int tokens, long seed) {
        Random rnd = new Random(seed);
        int size = spec.inputSize();
        Tensor x = Tensor.zeros(n, spec.inChannels(), size, size);
        float[] t = new float[n];
        float[] context = new float[n * tokens * spec.text().jointAttentionDim()];
        float[] pooled = new float[n * spec.text().pooledProjectionDim()];
        for (float[] a : new float[][] {x.data(), context, pooled}) {
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) rnd.nextGaussian();
            }
        }
        for (int i = 0; i < n; i++) {
            t[i] = i == 0 ? 1000f : (float) (1000 * rnd.nextDouble());
        }
        return new Case(x, t, new Conditioning.TextEmbeddings(context, tokens, spec.text().jointAttentionDim(), pooled,
                spec.text().pooledProjectionDim()), Tensor.zeros(n, spec.outChannels(), size, size));
    }

    /** Sample k of a case as a case of one. */
    static Case sample(Case c, int k) {
        Conditioning.TextEmbeddings e = c.text();
        int ctx = e.tokens() * e.width();
        return new Case(Fixtures.sample(c.x(), k), new float[] {c.t()[k]}, new Conditioning.TextEmbeddings(
                Arrays.copyOfRange(e.context(), k * ctx, (k + 1) * ctx), e.tokens(), e.width(),
                Arrays.copyOfRange(e.pooled(), k * e.pooledWidth(), (k + 1) * e.pooledWidth()), e.pooledWidth()),
                Fixtures.sample(c.out(), k));
    }

    static Tensor run(Backend b, Case c) throws BackendException {
        Tensor out = Tensor.zeros(c.out().shape());
        b.forward(c.batch(), out, Cancellation.NEVER);
        return out;
    }

    static CudaMmditBackend emulated(ModelSpec spec) throws BackendException {
        return Emulation.mmdit(spec, ActivationLayout.SCORES_BUDGET);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mmdit-tiny", "mmdit-x-tiny"})
    void matchesTheReference(String name) throws Exception {
        ModelSpec spec = spec(name);
        Case c = forwardCase(name);
        try (Backend b = emulated(spec)) {
            assertThat(b.name()).isEqualTo("cuda");
            double err = Fixtures.relativeError(run(b, c), c.out());
            System.out.printf("cuda (emulated) MMDiT %s: max relative error %.3g vs the reference%n", name, err);
            assertThat(err).isLessThan(TOLERANCE);
        }
    }

    /**
     * The java backend's output on random batches of 1, 2 and 5 samples, each with its own prompt embeddings, with
     * 1, 11 and 40 context tokens, and with none (the joint attention is then the image's self-attention).
     */
    @ParameterizedTest(name = "{0}, {1} samples, {2} context tokens")
    @CsvSource({"mmdit-tiny, 1, 11", "mmdit-tiny, 2, 1", "mmdit-tiny, 5, 40", "mmdit-tiny, 2, 0",
        "mmdit-x-tiny, 1, 11", "mmdit-x-tiny, 2, 1", "mmdit-x-tiny, 5, 40", "mmdit-x-tiny, 2, 0"})
    void agreesWithTheJavaBackend(String name, int n, int tokens) throws Exception {
        ModelSpec spec = spec(name);
        Case c = randomCase(spec, n, tokens, 31L * n + tokens);
        try (Backend cuda = emulated(spec);
                Backend java = new JavaBackendProvider().create(spec, BackendOptions.ofThreads(2))) {
            double err = Fixtures.relativeError(run(cuda, c), run(java, c));
            System.out.printf("cuda (emulated) MMDiT %s, %d samples, %d context tokens: %.3g vs java%n", name, n,
                    tokens, err);
            assertThat(err).isLessThan(TOLERANCE);
        }
    }

    /**
     * Each sample of a batch gets the bytes it gets alone, also when attention runs in chunks of one sample (a
     * scores budget of one float) and after the buffers grew for a longer context.
     */
    @ParameterizedTest
    @ValueSource(strings = {"mmdit-tiny", "mmdit-x-tiny"})
    void samplesOfABatchAreIndependent(String name) throws Exception {
        ModelSpec spec = spec(name);
        Case c = randomCase(spec, 5, 11, 5);
        try (Backend b = emulated(spec); Backend chunked = Emulation.mmdit(spec, 1)) {
            Tensor batched = run(b, c);
            for (int k = 0; k < 5; k++) {
                Tensor alone = run(b, sample(c, k));
                assertThat(alone.data()).as("sample %d", k).isEqualTo(Fixtures.sample(batched, k).data());
            }
            assertThat(run(chunked, c).data()).as("attention one sample at a time").isEqualTo(batched.data());
            run(b, randomCase(spec, 2, 40, 6)); // grows the context capacity
            assertThat(run(b, c).data()).isEqualTo(batched.data());
        }
    }

    /** The flag is polled before each block and before norm_out; a cancelled pass leaves the backend usable. */
    @Test
    void cancellationStopsThePass() throws Exception {
        ModelSpec spec = spec("mmdit-x-tiny");
        Case c = forwardCase("mmdit-x-tiny");
        try (Backend b = emulated(spec)) {
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> b.forward(c.batch(), Tensor.zeros(c.out().shape()),
                    () -> polls.incrementAndGet() > 2)).isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isEqualTo(3);
            AtomicInteger all = new AtomicInteger();
            b.forward(c.batch(), Tensor.zeros(c.out().shape()), () -> all.incrementAndGet() < 0);
            assertThat(all.get()).as("once before each block and once before norm_out").isEqualTo(spec.depth() + 1);
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
    }

    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = spec("mmdit-tiny");
        Case c = forwardCase("mmdit-tiny");
        Conditioning.TextEmbeddings e = c.text();
        try (Backend b = emulated(spec)) {
            Tensor out = Tensor.zeros(c.out().shape());
            int n = c.t().length;
            var narrow = new Conditioning.TextEmbeddings(new float[n * e.tokens() * 20], e.tokens(), 20, e.pooled(),
                    e.pooledWidth());
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), narrow, null), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("width 20");
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), new int[n]), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("conditioned on text");
            StepCache store = new StepCache(new StepCache.Use[] {StepCache.Use.STORE, StepCache.Use.STORE,
                StepCache.Use.STORE}, new float[3][spec.tokens() * spec.hiddenSize()]);
            assertThat(b.supportsStepCache()).isFalse();
            assertThatThrownBy(() -> b.forward(c.batch().withCache(store), out, () -> false))
                    .isInstanceOf(BackendException.class).hasMessageContaining("cannot cache steps");
            assertThat(Fixtures.relativeError(run(b, c), c.out())).isLessThan(TOLERANCE);
        }
    }

    /**
     * The provider dispatches on the architecture: an MMDiT spec goes to {@link CudaMmditBackend}, which reads the
     * transformer folder's files (a DiT backend would first ask for weights.safetensors); without a GPU here the
     * device is what fails. Close is idempotent, and a closed backend says so.
     */
    @Test
    void theProviderTakesAnMmditSpecAndCloseIsIdempotent() throws Exception {
        ModelSpec spec = spec("mmdit-tiny");
        try (Backend b = new CudaBackendProvider().create(spec, BackendOptions.ofThreads(1))) {
            assertThat(b).isInstanceOf(CudaMmditBackend.class); // on a machine with a GPU
        } catch (BackendException e) {
            assertThat(e.getMessage()).doesNotContain(CudaDitBackend.WEIGHTS_FILE);
        }
        CudaMmditBackend b = emulated(spec);
        Case c = forwardCase("mmdit-tiny");
        run(b, c);
        b.close();
        b.close();
        assertThatThrownBy(() -> run(b, c)).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
    }
}
