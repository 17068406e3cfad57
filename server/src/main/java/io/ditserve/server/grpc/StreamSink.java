package io.ditserve.server.grpc;

import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.server.engine.Failure;
import io.ditserve.server.engine.GenerationEvent;
import io.ditserve.server.engine.GenerationListener;
import io.ditserve.server.engine.GenerationPlan;
import io.grpc.Status;
import io.grpc.stub.ServerCallStreamObserver;
import java.util.ArrayDeque;
import java.util.Iterator;
import java.util.concurrent.Executor;
import java.util.function.Consumer;
import java.util.function.LongConsumer;
import java.util.function.Predicate;
import java.util.function.Supplier;

/**
 * Bridges a generation's domain events to one gRPC response stream with flow control.
 *
 * <p>The engine's compute thread only queues events here; a sender (a task on the {@code sender} executor, or
 * gRPC's on-ready callback) turns them into wire messages and sends them while the transport
 * {@link ServerCallStreamObserver#isReady() is ready}. So PNG encoding happens on the sending side, and only for
 * frames that are really sent. The queue is bounded without ever blocking the engine: a newer progress or queue event
 * replaces an unsent older one, and a newer preview of an image replaces that image's unsent older preview (the latest
 * frame wins). Accepted and Result events are never dropped, so the queue holds at most 2 + 2·images events.
 *
 * <p>One sender at a time (the {@code draining} flag); the observer is only touched under this object's lock, and
 * encoding happens outside it, so the engine never waits for an encoder.
 */
final class StreamSink implements GenerationListener {
    private final ServerCallStreamObserver<GenerateEvent> observer;
    private final Executor sender;
    private final ArrayDeque<GenerationEvent> pending = new ArrayDeque<>();
    private final LongConsumer droppedPreviews;
    private final Consumer<Status.Code> onTerminal;
    private GenerationPlan plan;
    private boolean completeWhenDrained;
    private boolean closed;
    private boolean draining;
    private boolean again;
    private boolean scheduled;
    /** Set when the generation failed while events were still waiting: sent after them. */
    private Status failure;
    /** Where the delivery deadline is timed, and how long it is; null: none (tests that build a sink alone). */
    private java.util.concurrent.ScheduledExecutorService deliveryTimer;
    private java.time.Duration deliveryDeadline;
    private boolean deliveryArmed;
    /** This stream's share of the undelivered output of its client and connection ({@link DeliveryLedger}). */
    private DeliveryLedger.Account account;
    /** Estimated bytes of the events in {@link #pending}. */
    private long pendingBytes;
    /** The last message sent, while the transport holds it (it said not ready after taking it); else 0. */
    private long inTransport;
    /** The code a cancelled call ends with: CANCELLED, or DEADLINE_EXCEEDED when its deadline cancelled it. */
    private volatile Supplier<Status.Code> cancelCode = () -> Status.Code.CANCELLED;

    /**
     * @param sender runs the drains that the engine's events trigger (never the compute thread)
     * @param droppedPreviews told of each preview frame replaced by a newer one before it was sent
     * @param onTerminal told the stream's final status code, once
     */
    StreamSink(ServerCallStreamObserver<GenerateEvent> observer, Executor sender, LongConsumer droppedPreviews,
            Consumer<Status.Code> onTerminal) {
        this.observer = observer;
        this.sender = sender;
        this.droppedPreviews = droppedPreviews;
        this.onTerminal = onTerminal;
    }

    /**
     * Once the generation has ended, its results may wait at most {@code deadline} for the client to read them:
     * then the call ends with DEADLINE_EXCEEDED saying why, and what waits is dropped (docs: DeliveryDeadline).
     */
    void deliveryDeadline(java.util.concurrent.ScheduledExecutorService timer, java.time.Duration deadline) {
        this.deliveryTimer = timer;
        this.deliveryDeadline = deadline;
    }

    /** Reports what this stream holds for its client to {@code account} from now on. */
    synchronized void account(DeliveryLedger.Account account) {
        this.account = account;
        held();
    }

    /**
     * Tells the account what the stream holds now. Holds the lock. After the stream has ended on our side, the
     * transport may still hold its last message for a client whose window stays closed (the status waits behind
     * it): that stays on the account until the transport is done with the call ({@link #transportDone}).
     */
    private void held() {
        if (account != null) {
            account.set(pendingBytes + inTransport);
        }
    }

    /**
     * The transport has finished the call (status sent, or the stream reset or its connection gone): nothing is
     * held for it any more; a cancelled stream drops what it still queued (a finished generation sends no further
     * event that would notice the cancellation).
     */
    void transportDone() {
        synchronized (this) {
            inTransport = 0;
            if (!closed && observer.isCancelled()) {
                close(cancelCode.get());
            }
            held();
        }
    }

    /** What an event holds in memory, estimated: its frames' floats and a little for the rest. */
    static long bytes(GenerationEvent e) {
        return 64 + switch (e) {
            case GenerationEvent.Preview p -> 4L * p.frame().data().length;
            case GenerationEvent.Result r -> 4L * r.sample().data().length
                    + (r.image() == null ? 0 : 4L * r.image().data().length);
            case GenerationEvent.Accepted a -> 4L * a.times().length;
            default -> 0L;
        };
    }

    /** Starts the delivery deadline, once, when the generation has ended. Holds the lock. */
    private void armDeliveryDeadline() {
        if (deliveryTimer == null || deliveryArmed || closed) {
            return;
        }
        deliveryArmed = true;
        try {
            deliveryTimer.schedule(this::deliveryExpired, deliveryDeadline.toMillis(),
                    java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (java.util.concurrent.RejectedExecutionException e) {
            // shutting down: the transport ends the call
        }
    }

    private void deliveryExpired() {
        synchronized (this) {
            if (closed) {
                return;
            }
            int waiting = pending.size();
            close(Status.Code.DEADLINE_EXCEEDED);
            observer.onError(Status.DEADLINE_EXCEEDED.withDescription("the results were not read within "
                    + deliveryDeadline.toSeconds() + " s of being ready (delivery_deadline_seconds); the call is"
                    + " ended and its " + waiting + " unsent event(s) dropped").asRuntimeException());
        }
    }

    private void close(Status.Code code) {
        closed = true;
        pending.clear();
        pendingBytes = 0;
        held();
        onTerminal.accept(code);
    }

    @Override
    public void onEvent(GenerationEvent event) {
        synchronized (this) {
            if (closed || failure != null) {
                return;
            }
            switch (event) {
                case GenerationEvent.Accepted a -> plan = a.plan();
                case GenerationEvent.Progress p -> removeIf(e -> e instanceof GenerationEvent.Progress);
                case GenerationEvent.Queued q -> removeIf(e -> e instanceof GenerationEvent.Queued);
                case GenerationEvent.Preview p -> {
                    if (removeIf(e -> e instanceof GenerationEvent.Preview o && o.imageIndex() == p.imageIndex())) {
                        droppedPreviews.accept(1);
                    }
                }
                case GenerationEvent.Result r -> { }
            }
            pending.addLast(event);
            pendingBytes += bytes(event);
            held();
        }
        schedule();
    }

    private boolean removeIf(Predicate<GenerationEvent> p) {
        boolean any = false;
        for (Iterator<GenerationEvent> it = pending.iterator(); it.hasNext(); ) {
            GenerationEvent e = it.next();
            if (p.test(e)) {
                it.remove();
                pendingBytes -= bytes(e);
                any = true;
            }
        }
        return any;
    }

    /** Hands a drain to the sender executor unless one is already queued. */
    private void schedule() {
        synchronized (this) {
            if (scheduled || closed) {
                return;
            }
            scheduled = true;
        }
        sender.execute(() -> {
            synchronized (this) {
                scheduled = false;
            }
            drain();
        });
    }

    /**
     * Frames are rendered while the stream is open, even for a slow client: the newest frame replaces the unsent
     * older one, so the client always ends up with the latest estimate.
     */
    @Override
    public synchronized boolean wantsPreview() {
        return !closed;
    }

    @Override
    public void onCompleted() {
        synchronized (this) {
            completeWhenDrained = true;
            armDeliveryDeadline();
        }
        schedule();
    }

    @Override
    public void onFailed(Failure failure) {
        onFailed(ProtoMapping.status(failure));
    }

    /**
     * Tells, when the call turns out cancelled, whether the client or the deadline cancelled it (the status code the
     * stream is counted with).
     */
    void cancelCodeFrom(Supplier<Status.Code> code) {
        cancelCode = code;
    }

    /**
     * Ends the stream with an error status: at once when nothing waits to be sent (or the client has gone), else
     * after the events that are never dropped (Accepted, Results) have been sent; unsent progress, queue and preview
     * events are dropped.
     */
    void onFailed(Status status) {
        synchronized (this) {
            if (closed || failure != null) {
                return;
            }
            if (observer.isCancelled() || (pending.isEmpty() && !draining && !scheduled)) {
                close(status.getCode());
                if (!observer.isCancelled()) {
                    observer.onError(status.asRuntimeException());
                }
                return;
            }
            failure = status;
            removeIf(e -> !(e instanceof GenerationEvent.Accepted || e instanceof GenerationEvent.Result));
            held();
            armDeliveryDeadline();
        }
        schedule();
    }

    /** Sends what the transport accepts now; called by the sender executor and from the on-ready callback. */
    void drain() {
        synchronized (this) {
            if (draining) {
                again = true;
                return;
            }
            draining = true;
        }
        try {
            while (true) {
                sendReady();
                synchronized (this) {
                    if (!again) {
                        draining = false;
                        return;
                    }
                    again = false;
                }
            }
        } catch (RuntimeException | Error e) {
            synchronized (this) {
                draining = false;
                if (!closed) {
                    close(Status.Code.INTERNAL);
                    observer.onError(Status.INTERNAL.withDescription("cannot send an event: " + e).asRuntimeException());
                }
            }
            throw e;
        }
    }

    private void sendReady() {
        while (true) {
            GenerationEvent next;
            synchronized (this) {
                if (closed) {
                    return;
                }
                if (observer.isCancelled()) {
                    close(cancelCode.get());
                    return;
                }
                if (pending.isEmpty()) {
                    if (failure != null) {
                        close(failure.getCode());
                        observer.onError(failure.asRuntimeException());
                    } else if (completeWhenDrained) {
                        close(Status.Code.OK);
                        observer.onCompleted();
                    }
                    return;
                }
                if (!observer.isReady()) {
                    return; // the on-ready callback drains again
                }
                inTransport = 0; // ready again: the transport has passed on what it held
                next = pending.pollFirst();
                pendingBytes -= bytes(next);
                held();
            }
            GenerateEvent message = ProtoMapping.encode(next, plan); // encoding outside the lock
            synchronized (this) {
                if (closed) {
                    return;
                }
                observer.onNext(message);
                if (!observer.isReady()) {
                    inTransport = message.getSerializedSize();
                    held();
                }
            }
        }
    }

    synchronized int buffered() {
        return pending.size();
    }
}
