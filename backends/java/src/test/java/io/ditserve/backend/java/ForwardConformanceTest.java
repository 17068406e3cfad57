package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.Backend;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Both paths against the PyTorch outputs of tools/make_fixtures.py (tools/dit/model.py is the ground truth). */
class ForwardConformanceTest {
    /** Tolerance: max |error| over max |reference output|. */
    private static final double TOLERANCE = 1e-4;

    @ParameterizedTest(name = "{0} on the {1} path, {2} threads")
    @CsvSource({
        "pixel-tiny, scalar, 1", "pixel-tiny, vector, 1", "pixel-tiny, vector, 2",
        "latent-tiny, scalar, 1", "latent-tiny, vector, 1", "latent-tiny, vector, 2",
        "fashion-dit, scalar, 1", "fashion-dit, vector, 1", "fashion-dit, vector, 2"
    })
    void matchesPyTorch(String model, String path, int threads) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = Fixtures.backend(spec, path, threads)) {
            Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(out.shape()).containsExactly(c.out().shape());
            assertThat(c.out().maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, c.out())).isLessThan(TOLERANCE);
        }
    }
}
