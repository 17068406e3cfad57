package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.Fixtures;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The vector path against the scalar reference on batches the fixtures do not cover (batch invariance is in the
 * shared conformance suite, JavaBackendConformanceTest).
 */
class VectorPathTest {

    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void twoThreadsMatchScalarOnMixedBatch(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.randomCase(spec, 5, 7);
        try (Backend scalar = JavaBackends.backend(spec, "scalar", 1);
                Backend vector = JavaBackends.backend(spec, "vector", 2)) {
            Tensor expected = Fixtures.run(scalar, c.x(), c.t(), c.y());
            Tensor actual = Fixtures.run(vector, c.x(), c.t(), c.y());
            assertThat(Fixtures.relativeError(actual, expected)).isLessThan(1e-5);
        }
    }

    /** A batch larger than the buffers sized at load (java.max_batch = 8) grows them; smaller ones reuse them. */
    @Test
    void batchesOfAnySizeMatchScalar() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        try (Backend scalar = JavaBackends.backend(spec, "scalar", 1);
                Backend vector = JavaBackends.backend(spec, "vector", 2)) {
            for (int n : new int[] {1, 9, 3, 9}) {
                Fixtures.Case c = Fixtures.randomCase(spec, n, n);
                Tensor expected = Fixtures.run(scalar, c.x(), c.t(), c.y());
                assertThat(Fixtures.relativeError(Fixtures.run(vector, c.x(), c.t(), c.y()), expected))
                        .as("batch of %d", n).isLessThan(1e-5);
            }
        }
    }
}
