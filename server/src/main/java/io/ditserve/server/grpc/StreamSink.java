package io.ditserve.server.grpc;

import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.server.engine.GenerationListener;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.LongConsumer;

/**
 * Bridges a generation's events to one gRPC response stream with flow control.
 *
 * <p>Events are sent only while the transport {@link ServerCallStreamObserver#isReady() is ready}; the rest wait
 * in a small buffer that is drained from the on-ready callback. The buffer is bounded without ever blocking the
 * engine: a newer progress or queue event replaces an unsent older one, and a newer preview of an image replaces
 * that image's unsent older preview (the latest frame wins). Accepted and Result events are never dropped, so the
 * buffer holds at most 2 + 2·images events. All access to the observer happens under this object's lock: the
 * observer is not thread-safe, and it is called from the engine thread and from gRPC's executor.
 */
final class StreamSink implements GenerationListener {
    private final ServerCallStreamObserver<GenerateEvent> observer;
    private final List<GenerateEvent> pending = new ArrayList<>();
    private final LongConsumer droppedPreviews;
    private final Consumer<Status.Code> onTerminal;
    private boolean completeWhenDrained;
    private boolean closed;

    /**
     * @param droppedPreviews told of each preview frame replaced by a newer one before it was sent
     * @param onTerminal told the stream's final status code, once
     */
    StreamSink(ServerCallStreamObserver<GenerateEvent> observer, LongConsumer droppedPreviews,
            Consumer<Status.Code> onTerminal) {
        this.observer = observer;
        this.droppedPreviews = droppedPreviews;
        this.onTerminal = onTerminal;
    }

    private void close(Status.Code code) {
        closed = true;
        pending.clear();
        onTerminal.accept(code);
    }

    @Override
    public synchronized void onEvent(GenerateEvent event) {
        if (closed) {
            return;
        }
        switch (event.getEventCase()) {
            case PROGRESS -> removeIf(e -> e.hasProgress());
            case QUEUED -> removeIf(e -> e.hasQueued());
            case PREVIEW -> {
                int idx = event.getPreview().getImageIndex();
                if (removeIf(e -> e.hasPreview() && e.getPreview().getImageIndex() == idx)) {
                    droppedPreviews.accept(1);
                }
            }
            default -> { }
        }
        pending.add(event);
        drain();
    }

    private boolean removeIf(java.util.function.Predicate<GenerateEvent> p) {
        boolean any = false;
        for (Iterator<GenerateEvent> it = pending.iterator(); it.hasNext(); ) {
            if (p.test(it.next())) {
                it.remove();
                any = true;
            }
        }
        return any;
    }

    /**
     * Frames are encoded while the stream is open, even for a slow client: the newest frame replaces the unsent
     * older one, so the client always ends up with the latest estimate (encoding costs far less than a step).
     */
    @Override
    public synchronized boolean wantsPreview() {
        return !closed;
    }

    @Override
    public synchronized void onCompleted() {
        completeWhenDrained = true;
        drain();
    }

    @Override
    public synchronized void onFailed(Status status) {
        if (closed) {
            return;
        }
        close(status.getCode());
        if (!observer.isCancelled()) {
            observer.onError(status.asRuntimeException());
        }
    }

    /** Sends what the transport accepts now; called after each event and from the on-ready callback. */
    synchronized void drain() {
        if (closed) {
            return;
        }
        if (observer.isCancelled()) {
            close(Status.Code.CANCELLED);
            return;
        }
        while (!pending.isEmpty() && observer.isReady()) {
            observer.onNext(pending.remove(0));
        }
        if (pending.isEmpty() && completeWhenDrained) {
            close(Status.Code.OK);
            observer.onCompleted();
        }
    }

    synchronized int buffered() {
        return pending.size();
    }
}
