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

    @ParameterizedTest(name = "{0} on the {1} path")
    @CsvSource({
        "pixel-tiny, scalar", "pixel-tiny, vector",
        "latent-tiny, scalar", "latent-tiny, vector",
        "fashion-dit, scalar", "fashion-dit, vector"
    })
    void matchesPyTorch(String model, String path) throws Exception {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = Fixtures.backend(spec, path, 2)) {
            Tensor out = Fixtures.run(b, c.x(), c.t(), c.y());
            assertThat(out.shape()).containsExactly(c.out().shape());
            assertThat(c.out().maxAbs()).isPositive();
            assertThat(Fixtures.relativeError(out, c.out())).isLessThan(TOLERANCE);
        }
    }
}
