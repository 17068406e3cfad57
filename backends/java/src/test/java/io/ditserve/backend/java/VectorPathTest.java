package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.util.Arrays;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** The vector path against the scalar reference on batches the fixtures do not cover. */
class VectorPathTest {

    /** A batch of {@code n} random inputs with distinct timesteps and labels (the null class included). */
    private static Fixtures.Case randomBatch(ModelSpec spec, int n, long seed) {
        Random rnd = new Random(seed);
        int size = spec.inputSize();
        Tensor x = Tensor.zeros(n, spec.inChannels(), size, size);
        for (int i = 0; i < x.size(); i++) {
            x.data()[i] = (float) rnd.nextGaussian();
        }
        int[] t = new int[n];
        int[] y = new int[n];
        for (int i = 0; i < n; i++) {
            t[i] = i == 0 ? 999 : rnd.nextInt(1000);
            y[i] = i == 1 ? spec.nullClass() : rnd.nextInt(spec.numClasses());
        }
        return new Fixtures.Case(x, t, y, null);
    }

    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void twoThreadsMatchScalarOnMixedBatch(String model) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = randomBatch(spec, 5, 7);
        try (Backend scalar = Fixtures.backend(spec, "scalar", 1);
                Backend vector = Fixtures.backend(spec, "vector", 2)) {
            Tensor expected = Fixtures.run(scalar, c.x(), c.t(), c.y());
            Tensor actual = Fixtures.run(vector, c.x(), c.t(), c.y());
            assertThat(Fixtures.relativeError(actual, expected)).isLessThan(1e-5);
        }
    }

    /** Sample k of a batch equals the same sample run alone: no state leaks between the samples of a batch. */
    @ParameterizedTest
    @ValueSource(strings = {"scalar", "vector"})
    void samplesOfABatchAreIndependent(String path) throws Exception {
        ModelSpec spec = Fixtures.spec("latent-tiny");
        int n = 7; // more than one micro-kernel block of rows, and not a multiple of one
        Fixtures.Case c = randomBatch(spec, n, 11);
        try (Backend b = Fixtures.backend(spec, path, 2)) {
            Tensor batch = Fixtures.run(b, c.x(), c.t(), c.y());
            int inSize = c.x().stride0();
            int outSize = batch.stride0();
            for (int k = 0; k < n; k++) {
                Tensor x1 = new Tensor(Arrays.copyOfRange(c.x().data(), k * inSize, (k + 1) * inSize),
                        1, spec.inChannels(), spec.inputSize(), spec.inputSize());
                Tensor alone = Fixtures.run(b, x1, new int[] {c.t()[k]}, new int[] {c.y()[k]});
                Tensor inBatch = new Tensor(Arrays.copyOfRange(batch.data(), k * outSize, (k + 1) * outSize),
                        alone.shape());
                assertThat(Fixtures.relativeError(inBatch, alone)).as("sample %d", k).isLessThan(1e-6);
            }
        }
    }

    /** A batch larger than the buffers sized at load (java.max_batch = 8) grows them; smaller ones reuse them. */
    @Test
    void batchesOfAnySizeMatchScalar() throws Exception {
        ModelSpec spec = Fixtures.spec("pixel-tiny");
        try (Backend scalar = Fixtures.backend(spec, "scalar", 1);
                Backend vector = Fixtures.backend(spec, "vector", 2)) {
            for (int n : new int[] {1, 9, 3, 9}) {
                Fixtures.Case c = randomBatch(spec, n, n);
                Tensor expected = Fixtures.run(scalar, c.x(), c.t(), c.y());
                assertThat(Fixtures.relativeError(Fixtures.run(vector, c.x(), c.t(), c.y()), expected))
                        .as("batch of %d", n).isLessThan(1e-5);
            }
        }
    }
}
