package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.ModelSpec;

/**
 * The cuda backend ({@link CudaDitBackend}: its host code, buffers and launch sequence) on {@link EmulatedDevice},
 * the Java mirror of its kernels and of cuBLAS, for tests outside the cuda module (the package-private
 * {@link Emulation} comes from the cuda module's test jar). No GPU is touched.
 */
public final class EmulatedCuda {
    private EmulatedCuda() {}

    /** A backend whose buffers start sized for {@code maxBatch} samples and grow for larger passes. */
    public static Backend backend(ModelSpec spec, int maxBatch) throws BackendException {
        return Emulation.backend(spec, maxBatch);
    }
}
