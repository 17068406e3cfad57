package io.ditserve.backend.cuda;

import static io.ditserve.backend.cuda.TextFixtures.mmditCase;
import static io.ditserve.backend.cuda.TextFixtures.mmditSpec;
import static io.ditserve.backend.cuda.TextFixtures.randomCase;
import static io.ditserve.backend.cuda.TextFixtures.run;
import static io.ditserve.backend.cuda.TextFixtures.sample;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.cuda.TextFixtures.MmditCase;
import io.ditserve.backend.java.JavaBackendProvider;
import io.ditserve.backend.testkit.Fixtures;
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

    static CudaMmditBackend emulated(ModelSpec spec) throws BackendException {
        return Emulation.mmdit(spec, ActivationLayout.SCORES_BUDGET);
    }

    @ParameterizedTest
    @ValueSource(strings = {"mmdit-tiny", "mmdit-x-tiny"})
    void matchesTheReference(String name) throws Exception {
        ModelSpec spec = mmditSpec(name);
        MmditCase c = mmditCase(name);
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
        ModelSpec spec = mmditSpec(name);
        MmditCase c = randomCase(spec, n, tokens, 31L * n + tokens);
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
        ModelSpec spec = mmditSpec(name);
        MmditCase c = randomCase(spec, 5, 11, 5);
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
        ModelSpec spec = mmditSpec("mmdit-x-tiny");
        MmditCase c = mmditCase("mmdit-x-tiny");
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
        ModelSpec spec = mmditSpec("mmdit-tiny");
        MmditCase c = mmditCase("mmdit-tiny");
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
        ModelSpec spec = mmditSpec("mmdit-tiny");
        try (Backend b = new CudaBackendProvider().create(spec, BackendOptions.ofThreads(1))) {
            assertThat(b).isInstanceOf(CudaMmditBackend.class); // on a machine with a GPU
        } catch (BackendException e) {
            assertThat(e.getMessage()).doesNotContain(CudaDitBackend.WEIGHTS_FILE);
        }
        CudaMmditBackend b = emulated(spec);
        MmditCase c = mmditCase("mmdit-tiny");
        run(b, c);
        b.close();
        b.close();
        assertThatThrownBy(() -> run(b, c)).isInstanceOf(IllegalStateException.class).hasMessageContaining("closed");
    }
}
