package io.ditserve.backend.onnx;

import io.ditserve.backend.ForwardBatch;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.Fixtures;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * A cancellation that can notify ({@link Cancellation#onCancel}) terminates an ONNX Runtime run when it fires,
 * without the backend polling it: the run looks at the flag only when told.
 */
class NotifiedCancellationTest {

    /** Fires when {@link #fire} is called; counts how often it was asked. */
    static final class Signal implements Cancellation {
        final AtomicInteger asked = new AtomicInteger();
        final CountDownLatch subscribed = new CountDownLatch(1);
        private volatile boolean fired;
        private volatile Runnable listener;

        @Override
        public boolean isCancelled() {
            asked.incrementAndGet();
            return fired;
        }

        @Override
        public Subscription onCancel(Runnable action) {
            listener = action;
            subscribed.countDown();
            return () -> listener = null;
        }

        void fire() {
            fired = true;
            Runnable l = listener;
            if (l != null) {
                l.run();
            }
        }
    }

    @Test
    void aNotifyingCancellationTerminatesTheRunWhenItFires() throws Exception {
        ModelSpec spec = Fixtures.spec("fashion-dit");
        try (Backend b = OnnxBackends.onnx(spec)) {
            Fixtures.Case c = Fixtures.randomCase(spec, 256, 3); // long enough to be inside the run when it fires
            Tensor out = Tensor.zeros(256, spec.outChannels(), spec.inputSize(), spec.inputSize());
            Signal signal = new Signal();
            Thread canceller = Thread.ofPlatform().start(() -> {
                try {
                    signal.subscribed.await(60, TimeUnit.SECONDS);
                    signal.fire();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
            });
            long t0 = System.nanoTime();
            assertThatThrownBy(() -> b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, signal))
                    .isInstanceOf(BackendException.Cancelled.class);
            canceller.join();
            // polled, it would have been asked every 5 ms while the run lasted; told, it is asked a couple of times
            assertThat(signal.asked.get()).as("isCancelled calls in %.0f ms", (System.nanoTime() - t0) / 1e6)
                    .isLessThanOrEqualTo(3);
            // and the backend still works afterwards
            b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, Cancellation.NEVER);
        }
    }
}
