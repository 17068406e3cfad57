package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.TextFixtures.MmditCase;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.FieldSource;

/**
 * The contract every backend that runs SD3's MMDiT keeps, as a JUnit suite: a backend's test extends it and says how
 * to create the backend. Parity with tools/sd3/mmdit.py on the fixtures of tools/make_mmdit_fixtures.py
 * ({@link TextFixtures#MMDITS}: SD3-medium's structure in F32, SD3.5's RMS qk-norm and dual attention in BF16 shards)
 * on one and two threads, with the measure of {@link Fixtures#relativeError} (max |error| / max |reference| below
 * 1e-4); the java backend's output on random batches of several prompts and context lengths, none included; each
 * sample of a batch alone; buffers grown for a longer context; cancellation; argument checks; close.
 */
public abstract class MmditConformance extends Sd3Conformance {
    /** The backend under test for an MMDiT {@code spec}, on {@code threads} threads. */
    protected abstract Backend create(ModelSpec spec, int threads) throws BackendException;

    private void same(Tensor actual, Tensor expected, String what) {
        assertThat(actual.shape()).as(what).containsExactly(expected.shape());
        same(actual.data(), expected.data(), what);
    }

    @ParameterizedTest(name = "{0}, {1} threads")
    @CsvSource({"mmdit-tiny, 1", "mmdit-tiny, 2", "mmdit-x-tiny, 1", "mmdit-x-tiny, 2"})
    void matchesTheReference(String name, int threads) throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec(name);
        MmditCase c = TextFixtures.mmditCase(name);
        try (Backend b = create(spec, threads)) {
            namesItsProvider(b.name(), b);
            double err = Fixtures.relativeError(TextFixtures.run(b, c), c.out());
            System.out.printf("%s MMDiT %s, %d threads: max relative error %.3g vs the reference%n", b.name(), name,
                    threads, err);
            assertThat(err).isLessThan(tolerance());
        }
    }

    /**
     * The java backend's output (on one thread) on random batches of 1, 2 and 5 samples, each with its own prompt
     * embeddings, with 1, 11 and 40 context tokens, and with none (the joint attention is then the image's
     * self-attention). On the java backend itself: two threads against one.
     */
    @ParameterizedTest(name = "{0}, {1} samples, {2} context tokens")
    @CsvSource({"mmdit-tiny, 1, 11", "mmdit-tiny, 2, 1", "mmdit-tiny, 5, 40", "mmdit-tiny, 2, 0", "mmdit-tiny, 5, 11",
        "mmdit-tiny, 2, 40", "mmdit-tiny, 1, 1", "mmdit-x-tiny, 1, 11", "mmdit-x-tiny, 2, 1", "mmdit-x-tiny, 5, 40",
        "mmdit-x-tiny, 2, 0", "mmdit-x-tiny, 5, 11", "mmdit-x-tiny, 2, 40", "mmdit-x-tiny, 1, 1"})
    void agreesWithTheJavaBackend(String name, int n, int tokens) throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec(name);
        MmditCase c = TextFixtures.randomCase(spec, n, tokens, 31L * n + tokens);
        try (Backend b = create(spec, 2);
                Backend java = Fixtures.provider("java").create(spec, BackendOptions.ofThreads(1))) {
            double err = Fixtures.relativeError(TextFixtures.run(b, c), TextFixtures.run(java, c));
            System.out.printf("%s MMDiT %s, %d samples, %d context tokens: %.3g vs java%n", b.name(), name, n, tokens,
                    err);
            assertThat(err).isLessThan(tolerance());
        }
    }

    /**
     * Each sample of a batch gets what it gets alone: 7 samples (more than one 6-row kernel block of the java
     * backend, and not a multiple of it) with 11 context tokens each. A longer context (40 tokens) grows the buffers
     * and is computed like any other: the first batch again after it, the longer one again after a shorter one (1
     * token), and a sample of it alone. On one thread as on two.
     */
    @ParameterizedTest
    @FieldSource("io.ditserve.backend.testkit.TextFixtures#MMDITS")
    void samplesOfABatchAreIndependentAndBuffersGrow(String name) throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec(name);
        MmditCase c = TextFixtures.randomCase(spec, 7, 11, 5);
        MmditCase longer = TextFixtures.randomCase(spec, 2, 40, 9);
        try (Backend b = create(spec, 2)) {
            Tensor batched = TextFixtures.run(b, c);
            for (int k = 0; k < 7; k++) {
                same(TextFixtures.run(b, TextFixtures.sample(c, k)), Fixtures.sample(batched, k), "sample " + k);
            }
            Tensor first = TextFixtures.run(b, longer); // grows the context capacity
            same(TextFixtures.run(b, c), batched, "after the buffers grew");
            TextFixtures.run(b, TextFixtures.randomCase(spec, 3, 1, 10));
            same(TextFixtures.run(b, longer), first, "the longer context again after a shorter one");
            same(TextFixtures.run(b, TextFixtures.sample(longer, 1)), Fixtures.sample(first, 1),
                    "a sample of the longer context alone");
            try (Backend one = create(spec, 1)) {
                same(TextFixtures.run(one, c), batched, "on one thread");
            }
        }
    }

    /** Cancellation ({@link #cancels}); a cancelled pass leaves the backend usable. */
    @Test
    void cancellationStopsThePass() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-x-tiny");
        MmditCase c = TextFixtures.mmditCase("mmdit-x-tiny");
        try (Backend b = create(spec, 2)) {
            cancels(cancel -> b.forward(c.batch(), Tensor.zeros(c.out().shape()), cancel), spec.depth());
            assertThat(Fixtures.relativeError(TextFixtures.run(b, c), c.out())).isLessThan(tolerance());
        }
    }

    /**
     * A context of the wrong width, class labels, a time past 1000 and a step cache are refused, naming what is
     * wrong; the backend stays usable.
     */
    @Test
    void badArgumentsAreRejected() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-tiny");
        MmditCase c = TextFixtures.mmditCase("mmdit-tiny");
        Conditioning.TextEmbeddings e = c.text();
        try (Backend b = create(spec, 1)) {
            Tensor out = Tensor.zeros(c.out().shape());
            int n = c.t().length;
            var narrow = new Conditioning.TextEmbeddings(new float[n * e.tokens() * 20], e.tokens(), 20, e.pooled(),
                    e.pooledWidth());
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), c.t(), narrow, null), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("width 20")
                    .hasMessageContaining("24");
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), new int[n]), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("conditioned on text");
            float[] late = c.t().clone();
            late[1] = 1000.5f;
            assertThatThrownBy(() -> b.forward(new ForwardBatch(c.x(), late, e, null), out, () -> false))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("time[1]");
            StepCache store = new StepCache(new StepCache.Use[] {StepCache.Use.STORE, StepCache.Use.STORE,
                StepCache.Use.STORE}, new float[3][spec.tokens() * spec.hiddenSize()]);
            assertThat(b.supportsStepCache()).isFalse();
            assertThatThrownBy(() -> b.forward(c.batch().withCache(store), out, () -> false))
                    .isInstanceOf(BackendException.class).hasMessageContaining("cannot cache steps");
            assertThat(Fixtures.relativeError(TextFixtures.run(b, c), c.out())).isLessThan(tolerance());
        }
    }

    @Test
    void closeIsIdempotentAndAClosedBackendSaysSo() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-tiny");
        MmditCase c = TextFixtures.mmditCase("mmdit-tiny");
        Backend b = create(spec, 1);
        assertThat(b.model()).isEqualTo(spec);
        TextFixtures.run(b, c);
        b.close();
        b.close();
        assertThatThrownBy(() -> TextFixtures.run(b, c)).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
    }
}
