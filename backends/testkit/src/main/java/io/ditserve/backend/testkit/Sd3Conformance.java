package io.ditserve.backend.testkit;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * What the SD3 suites ({@link MmditConformance}, {@link TextEncoderConformance}) share: their tolerances, how they
 * compare two routes to the same function, how they check the backend's name and its cancellation.
 */
public abstract class Sd3Conformance {
    /** Parity tolerance: max |error| over max |reference|. */
    protected double tolerance() {
        return 1e-4;
    }

    /**
     * How far two routes to the same function may be apart, in the measure of {@link Fixtures#relativeError}: a
     * sample or prompt computed alone and in a batch, on one thread and on two, before and after the buffers grew;
     * T5's BF16 weights as the fixture holds them and rewritten as F32. 0 demands the same bits.
     */
    protected double batchTolerance() {
        return 1e-6;
    }

    /**
     * How often an uncancelled run polls its cancellation, for a model of {@code layers} blocks or layers: by
     * default once before each and once after the last (before the MMDiT's norm_out). -1 for a backend that does not
     * poll at fixed points: the cancellation tests then check a flag that is set before the run.
     */
    protected int polls(int layers) {
        return layers + 1;
    }

    /** {@code actual} is {@code expected} within {@link #batchTolerance()}: the same bits at 0. */
    void same(float[] actual, float[] expected, String what) {
        if (batchTolerance() == 0) {
            assertThat(actual).as(what).isEqualTo(expected);
        } else {
            assertThat(Fixtures.relativeError(actual, expected)).as(what).isLessThanOrEqualTo(batchTolerance());
        }
    }

    /** The name a backend's model gives is that of the provider in the model's own package. */
    static void namesItsProvider(String name, Object model) {
        assertThat(Fixtures.provider(name).getClass().getPackage()).as("the provider named %s", name)
                .isEqualTo(model.getClass().getPackage());
    }

    /** One run of the model under test with a cancellation. */
    interface Run {
        void with(Cancellation cancel) throws BackendException;
    }

    /**
     * A flag set before the run stops it with {@link BackendException.Cancelled}; where the model polls at fixed
     * points ({@link #polls}), a flag that fires at the third poll stops it there, and an uncancelled run polls
     * that often.
     */
    void cancels(Run run, int layers) throws BackendException {
        assertThatThrownBy(() -> run.with(() -> true)).isInstanceOf(BackendException.Cancelled.class);
        int expected = polls(layers);
        if (expected >= 3) {
            AtomicInteger polls = new AtomicInteger();
            assertThatThrownBy(() -> run.with(() -> polls.incrementAndGet() > 2))
                    .isInstanceOf(BackendException.Cancelled.class);
            assertThat(polls.get()).isEqualTo(3);
        }
        if (expected >= 0) {
            AtomicInteger all = new AtomicInteger();
            run.with(() -> all.incrementAndGet() < 0);
            assertThat(all.get()).as("polls of an uncancelled run").isEqualTo(expected);
        }
    }
}
