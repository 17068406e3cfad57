package io.ditserve.server;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.server.model.BackendRegistry;
import java.util.List;

/**
 * Fault injection for tests: the real java backend, except that a forward pass whose batch contains label 7 fails
 * like a broken device would. Registered only on the test class path as backend "faulty".
 */
public final class FaultyBackendProvider implements BackendProvider {
    public static final int POISON_LABEL = 7;

    @Override
    public String name() {
        return "faulty";
    }

    @Override
    public String description() {
        return "java backend that fails on label 7 (tests only)";
    }

    @Override
    public List<String> requiredFiles() {
        return List.of("weights.safetensors");
    }

    @Override
    public Backend create(ModelSpec model, BackendOptions options) throws BackendException {
        Backend real = new BackendRegistry().get("java").create(model, options);
        return new Backend() {
            @Override
            public String name() {
                return "faulty";
            }

            @Override
            public ModelSpec model() {
                return real.model();
            }

            @Override
            public void forward(ForwardBatch batch, Tensor out, Cancellation cancel) throws BackendException {
                for (int label : batch.labels()) {
                    if (label == POISON_LABEL) {
                        throw new BackendException("simulated device fault");
                    }
                }
                real.forward(batch, out, cancel);
            }

            @Override
            public void close() {
                real.close();
            }
        };
    }
}
