package io.ditserve.client;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.server.DitServer;
import io.ditserve.server.TestServers;
import io.ditserve.server.config.ServerConfig;
import io.grpc.ForwardingServerCall;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * {@link DitClient} against the real server (Guice wiring, engine, java backend, fixture models) on an in-process
 * transport. These are the client library's tests; they live in the server module because client-java cannot
 * depend on the server (the server depends on the client: a cycle), and they need a real server to show what the
 * server sees: the calls it counts as cancelled, the engine going idle, and every message it sends.
 */
class DitClientTest {
    /** Records every Generate event the server sends, in order, as the transport gets it. */
    static final class SentEvents implements ServerInterceptor {
        final List<GenerateEvent> events = Collections.synchronizedList(new ArrayList<>());

        @Override
        public <Q, A> ServerCall.Listener<Q> interceptCall(ServerCall<Q, A> call, Metadata headers,
                ServerCallHandler<Q, A> next) {
            return next.startCall(new ForwardingServerCall.SimpleForwardingServerCall<>(call) {
                @Override
                public void sendMessage(A message) {
                    if (message instanceof GenerateEvent e) {
                        events.add(e);
                    }
                    super.sendMessage(message);
                }
            }, headers);
        }
    }

    private final SentEvents sent = new SentEvents();
    private TestServers.Running running;
    private DitServer server;
    private DitClient client;

    @BeforeEach
    void start() throws Exception {
        ServerConfig c = TestServers.config();
        c.maxActive = 1;
        running = TestServers.inProcess(c, sent);
        server = running.server();
        client = running.client();
    }

    @AfterEach
    void stop() {
        client.close();
        running.close();
    }

    private static GenerateRequest longRequest() {
        return GenerateRequest.newBuilder().setModel("latent-tiny").setClassId(1).setSteps(1000).setGuidanceScale(2)
                .build();
    }

    @Test
    void closingTheEventIteratorCancelsTheCallOnTheServer() throws Exception {
        long before = server.engine().stepsComputed();
        DitClient.EventStream s = client.generate(longRequest());
        assertThat(s.next().hasAccepted()).isTrue();
        while (!s.next().hasProgress()) {
            // until the generation runs
        }
        s.close();
        // the server sees the cancel: it counts the call as CANCELLED, its generation stops and the engine goes idle
        assertThat(server.metrics().awaitRequests("latent-tiny", "CANCELLED", 1, Duration.ofSeconds(30)))
                .as("the server counted the call as CANCELLED").isTrue();
        assertThat(server.engine().awaitIdle(Duration.ofSeconds(30))).as("engine idle").isTrue();
        assertThat(server.engine().stepsComputed() - before).as("steps run of 1000").isLessThan(1000);
        // the iterator ends with the cancellation (after what it had already received), and closing again does nothing
        assertThat(endStatus(s)).isEqualTo(Status.Code.CANCELLED);
        s.close();
        // the slot is free again
        try (DitClient.EventStream next = client.generate(GenerateRequest.newBuilder().setModel("pixel-tiny")
                .setClassId(2).setSteps(2).build())) {
            assertThat(next.next().getAccepted().getQueuePosition()).isZero();
        }
    }

    @Test
    void closingBeforeReadingCancelsToo() throws Exception {
        DitClient.EventStream s = client.generate(longRequest());
        s.close();
        // cancelled before or after the server accepted it: either it is never run, or it is counted CANCELLED
        assertThat(server.engine().awaitIdle(Duration.ofSeconds(30))).as("engine idle").isTrue();
        assertThat(endStatus(s)).isEqualTo(Status.Code.CANCELLED);
    }

    /** Reads a stream to its end; the status code it ends with (OK when it completes). */
    private static Status.Code endStatus(DitClient.EventStream s) {
        try {
            while (s.hasNext()) {
                s.next();
            }
            return Status.Code.OK;
        } catch (StatusRuntimeException e) {
            return e.getStatus().getCode();
        }
    }

    /** Callbacks of the asynchronous API, checked to arrive one at a time and nothing after the end. */
    static class Recorder implements DitClient.Listener {
        final List<GenerateEvent> events = Collections.synchronizedList(new ArrayList<>());
        final CountDownLatch ended = new CountDownLatch(1);
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final AtomicInteger completions = new AtomicInteger();
        final AtomicInteger inCallback = new AtomicInteger();
        final AtomicInteger overlaps = new AtomicInteger();
        final AtomicInteger afterEnd = new AtomicInteger();

        private void enter() {
            if (inCallback.incrementAndGet() > 1) {
                overlaps.incrementAndGet();
            }
            if (ended.getCount() == 0) {
                afterEnd.incrementAndGet();
            }
        }

        @Override
        public void onEvent(GenerateEvent event) {
            enter();
            events.add(event);
            inCallback.decrementAndGet();
        }

        @Override
        public void onError(Throwable t) {
            enter();
            error.set(t);
            inCallback.decrementAndGet();
            ended.countDown();
        }

        @Override
        public void onCompleted() {
            enter();
            completions.incrementAndGet();
            inCallback.decrementAndGet();
            ended.countDown();
        }
    }

    @Test
    void theAsyncListenerSeesEveryEventInOrder() throws Exception {
        GenerateRequest r = GenerateRequest.newBuilder().setModel("pixel-tiny").setClassId(3).setSteps(8)
                .setNumImages(2).setPreviewInterval(1).setSeed(42).build();
        Recorder listener = new Recorder();
        client.generateAsync(r, listener);
        assertThat(listener.ended.await(60, TimeUnit.SECONDS)).as("the generation ended").isTrue();
        assertThat(listener.error.get()).isNull();
        assertThat(listener.completions.get()).isEqualTo(1);
        assertThat(listener.overlaps.get()).as("callbacks that overlapped").isZero();
        assertThat(listener.afterEnd.get()).as("callbacks after the end").isZero();

        // every event the server sent, in the order it sent them
        List<GenerateEvent> got = List.copyOf(listener.events);
        assertThat(got).isEqualTo(List.copyOf(sent.events));
        assertThat(got.getFirst().hasAccepted()).isTrue();
        assertThat(got.stream().filter(GenerateEvent::hasResult).map(e -> e.getResult().getImageIndex()))
                .containsExactlyInAnyOrder(0, 1);
        assertThat(got.getLast().hasResult()).isTrue();
        List<Integer> steps = got.stream().filter(GenerateEvent::hasProgress).map(e -> e.getProgress().getStep())
                .toList();
        assertThat(steps).isNotEmpty().isSorted().doesNotHaveDuplicates();
        assertThat(steps.getLast()).isEqualTo(8);

        // the same request through the blocking iterator gives the same images (the timings differ)
        List<GenerateEvent> blocking = new ArrayList<>();
        try (DitClient.EventStream s = client.generate(r)) {
            s.forEachRemaining(blocking::add);
        }
        assertThat(pngs(blocking)).isEqualTo(pngs(got));
    }

    /** The PNGs of the results, by image index. */
    private static java.util.Map<Integer, com.google.protobuf.ByteString> pngs(List<GenerateEvent> events) {
        return events.stream().filter(GenerateEvent::hasResult).collect(java.util.stream.Collectors.toMap(
                e -> e.getResult().getImageIndex(), e -> e.getResult().getPng()));
    }

    @Test
    void cancellingAnAsyncGenerationStopsItOnTheServer() throws Exception {
        CountDownLatch running = new CountDownLatch(1);
        Recorder listener = new Recorder() {
            @Override
            public void onEvent(GenerateEvent event) {
                super.onEvent(event);
                if (event.hasProgress()) {
                    running.countDown();
                }
            }
        };
        DitClient.Cancellable call = client.generateAsync(longRequest(), listener);
        assertThat(running.await(60, TimeUnit.SECONDS)).as("the generation steps").isTrue();
        call.cancel("the user went away");
        assertThat(listener.ended.await(30, TimeUnit.SECONDS)).isTrue();
        assertThat(Status.fromThrowable(listener.error.get()).getCode()).isEqualTo(Status.Code.CANCELLED);
        assertThat(listener.completions.get()).isZero();
        assertThat(server.metrics().awaitRequests("latent-tiny", "CANCELLED", 1, Duration.ofSeconds(30)))
                .as("the server counted the call as CANCELLED").isTrue();
        assertThat(server.engine().awaitIdle(Duration.ofSeconds(30))).as("engine idle").isTrue();
    }
}
