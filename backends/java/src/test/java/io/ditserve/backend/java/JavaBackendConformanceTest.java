package io.ditserve.backend.java;

import io.ditserve.backend.ForwardBatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.BackendConformance;
import io.ditserve.backend.testkit.Fixtures;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The shared backend conformance suite on both java paths (parity 1e-4 on every fixture model and thread count;
 * batch invariance bit for bit), and what only the java backend promises: the cancellation flag polled once per
 * block, and its own option keys checked.
 */
class JavaBackendConformanceTest {

    @Nested
    class VectorPath extends BackendConformance {
        @Override
        protected Backend create(ModelSpec spec, int threads) throws BackendException {
            return JavaBackends.backend(spec, "vector", threads);
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }

    @Nested
    class ScalarPath extends BackendConformance {
        @Override
        protected Backend create(ModelSpec spec, int threads) throws BackendException {
            return JavaBackends.backend(spec, "scalar", threads);
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }

    /** The flag is polled between blocks: once before each of the depth blocks and once before the final layer. */
    @ParameterizedTest
    @ValueSource(strings = {"scalar", "vector"})
    void cancellationIsPolledBetweenBlocks(String path) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        Fixtures.Case c = Fixtures.forwardCase("latent-tiny");
        AtomicInteger polls = new AtomicInteger();
        try (Backend b = JavaBackends.backend(spec, path, 2)) {
            Tensor out = Tensor.zeros(c.out().shape());
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> polls.incrementAndGet() == 2))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls).hasValue(2);
            polls.set(0);
            b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> polls.incrementAndGet() < 0);
            assertThat(polls).hasValue(spec.depth() + 1);
        }
    }

    @Test
    void aMisspelledJavaOptionIsAnErrorNamingTheKnownOnes() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        var options = new BackendOptions(1, Map.of("java.pth", "scalar"));
        assertThatThrownBy(() -> new JavaBackendProvider().create(spec, options))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown option [java.pth] of the java backend, known options [java.path, java.max_batch, java.weights]");
        assertThatThrownBy(() -> new JavaBackendProvider().createDecoder(DecoderConfigs.load(
                Fixtures.repoRoot().resolve("tools/fixtures/taesd-small")), options))
                .isInstanceOf(BackendException.class).hasMessageContaining("java.pth");
        // keys of other backends are theirs to check
        try (Backend b = new JavaBackendProvider().create(spec,
                new BackendOptions(1, Map.of("onnx.optimization", "none")))) {
            assertThat(b.name()).isEqualTo("java");
        }
    }
}
