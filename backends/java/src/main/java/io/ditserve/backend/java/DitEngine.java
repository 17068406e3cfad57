package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.StepCache;

/** One compute path of the Java backend. {@link JavaDitBackend} validates the arguments and serialises calls. */
interface DitEngine extends AutoCloseable {

    /**
     * Computes {@code out = DiT(x, t, y)} for a batch of {@code n} samples.
     *
     * @param x [n, C_in, H, W]
     * @param t n network times (checked: the family's range; docs/MODEL_FAMILIES.md)
     * @param y n labels in 0..num_classes
     * @param out [n, C_out, H, W]
     * @param cache the step cache of the pass (checked), or null for a plain pass
     */
    void forward(float[] x, float[] t, int[] y, int n, float[] out, Cancellation cancel, StepCache cache)
            throws BackendException.Cancelled;

    @Override
    void close();
}
