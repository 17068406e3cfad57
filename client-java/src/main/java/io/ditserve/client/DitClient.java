package io.ditserve.client;

import io.ditserve.proto.v1.DiffusionServiceGrpc;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.GetModelRequest;
import io.ditserve.proto.v1.ListModelsRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Context;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.Metadata;
import io.grpc.TlsChannelCredentials;
import java.io.File;
import java.io.IOException;
import java.util.concurrent.Executor;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.stub.ClientCallStreamObserver;
import io.grpc.stub.ClientResponseObserver;
import java.util.Iterator;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;

/**
 * A small client for {@code dit.v1.DiffusionService}: a blocking event iterator and an asynchronous listener.
 *
 * <pre>{@code
 * try (DitClient client = DitClient.connect("localhost:50051");
 *      DitClient.EventStream events = client.generate(request)) {
 *     while (events.hasNext()) { GenerateEvent e = events.next(); ... }
 * }
 * }</pre>
 */
public final class DitClient implements AutoCloseable {
    /** Results can carry tensors; previews of large latents too. */
    public static final int MAX_INBOUND_MESSAGE_BYTES = 64 << 20;

    private final ManagedChannel channel;
    private final boolean ownsChannel;

    public DitClient(ManagedChannel channel) {
        this(channel, false);
    }

    private DitClient(ManagedChannel channel, boolean ownsChannel) {
        this.channel = Objects.requireNonNull(channel, "channel");
        this.ownsChannel = ownsChannel;
    }

    /**
     * The channels' service config: a call that fails with UNAVAILABLE before the server answered it (a replica
     * that is draining or gone, a proxy without a live upstream) is retried up to 4 attempts in all, with backoff
     * from 0.2 s. gRPC retries only calls that have received no response headers, so a Generate stream that has
     * been accepted is never run twice; a stream cut later (its replica died) ends with UNAVAILABLE and can be sent
     * again: the same seeds give the same images on any replica.
     */
    public static Map<String, ?> serviceConfig() {
        List<Map<String, ?>> names = new ArrayList<>();
        for (String method : List.of("Generate", "ListModels", "GetModel", "GetServerStatus")) {
            names.add(Map.of("service", "dit.v1.DiffusionService", "method", method));
        }
        Map<String, ?> retry = Map.of("maxAttempts", 4.0, "initialBackoff", "0.2s", "maxBackoff", "2s",
                "backoffMultiplier", 2.0, "retryableStatusCodes", List.of("UNAVAILABLE"));
        return Map.of("methodConfig", List.of(Map.of("name", names, "retryPolicy", retry)));
    }

    /** Connects without TLS to {@code host:port}. */
    public static DitClient connect(String target) {
        return new DitClient(ManagedChannelBuilder.forTarget(target).usePlaintext()
                .maxInboundMessageSize(MAX_INBOUND_MESSAGE_BYTES).defaultServiceConfig(serviceConfig()).enableRetry()
                .build(), true);
    }

    /**
     * Connects with optional TLS and bearer token.
     *
     * @param caPem trusted CA (PEM) for TLS, or null for plaintext
     * @param certPem client certificate chain for mutual TLS, or null
     * @param keyPem client private key for mutual TLS, or null
     * @param token bearer token sent with every call, or null
     */
    public static DitClient connect(String target, File caPem, File certPem, File keyPem, String token)
            throws IOException {
        ChannelCredentials creds;
        if (caPem != null) {
            TlsChannelCredentials.Builder b = TlsChannelCredentials.newBuilder().trustManager(caPem);
            if (certPem != null) {
                b.keyManager(certPem, keyPem);
            }
            creds = b.build();
        } else {
            creds = InsecureChannelCredentials.create();
        }
        if (token != null) {
            creds = CompositeChannelCredentials.create(creds, new BearerToken(token));
        }
        return new DitClient(Grpc.newChannelBuilder(target, creds).maxInboundMessageSize(MAX_INBOUND_MESSAGE_BYTES)
                .defaultServiceConfig(serviceConfig()).enableRetry().build(), true);
    }

    /** Sends {@code authorization: Bearer <token>}. gRPC refuses it over plaintext unless told otherwise. */
    static final class BearerToken extends CallCredentials {
        private static final Metadata.Key<String> AUTHORIZATION =
                Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
        private final String token;

        BearerToken(String token) {
            this.token = token;
        }

        @Override
        public void applyRequestMetadata(RequestInfo info, Executor executor, MetadataApplier applier) {
            Metadata m = new Metadata();
            m.put(AUTHORIZATION, "Bearer " + token);
            applier.apply(m);
        }
    }

    /** The channel, for calls this class does not wrap (status, health). */
    public ManagedChannel channel() {
        return channel;
    }

    public List<ModelInfo> listModels() {
        return DiffusionServiceGrpc.newBlockingStub(channel).listModels(ListModelsRequest.getDefaultInstance())
                .getModelsList();
    }

    public ModelInfo getModel(String name) {
        return DiffusionServiceGrpc.newBlockingStub(channel)
                .getModel(GetModelRequest.newBuilder().setName(name).build());
    }

    /** A generation's events as a blocking iterator; {@link #close()} cancels the call if it is still running. */
    public final class EventStream implements Iterator<GenerateEvent>, AutoCloseable {
        private final Context.CancellableContext context;
        private final Iterator<GenerateEvent> events;

        private EventStream(GenerateRequest request, long deadlineSeconds) {
            context = Context.current().withCancellation();
            Context previous = context.attach();
            try {
                DiffusionServiceGrpc.DiffusionServiceBlockingStub stub = DiffusionServiceGrpc.newBlockingStub(channel);
                if (deadlineSeconds > 0) {
                    stub = stub.withDeadlineAfter(deadlineSeconds, TimeUnit.SECONDS);
                }
                events = stub.generate(request);
            } finally {
                context.detach(previous);
            }
        }

        /** Throws {@link io.grpc.StatusRuntimeException} if the stream ends with an error. */
        @Override
        public boolean hasNext() {
            return events.hasNext();
        }

        @Override
        public GenerateEvent next() {
            return events.next();
        }

        @Override
        public void close() {
            context.cancel(null);
        }
    }

    public EventStream generate(GenerateRequest request) {
        return new EventStream(request, 0);
    }

    public EventStream generate(GenerateRequest request, long deadlineSeconds) {
        return new EventStream(request, deadlineSeconds);
    }

    /**
     * Whether a failed stream was cut by the transport rather than ended by the server: UNAVAILABLE, or the reset a
     * proxy sends when the replica behind it vanished (gRPC reports an RST_STREAM with INTERNAL_ERROR as INTERNAL,
     * "RST_STREAM closed stream"). A server's own INTERNAL (a backend failure) is not retried.
     */
    public static boolean cutByTransport(io.grpc.Status status) {
        return status.getCode() == io.grpc.Status.Code.UNAVAILABLE
                || (status.getCode() == io.grpc.Status.Code.INTERNAL && status.getDescription() != null
                        && status.getDescription().startsWith("RST_STREAM"));
    }

    /**
     * A generation that survives the loss of its replica: when the stream is cut by the transport
     * ({@link #cutByTransport}) before every result arrived, the request is sent again, up to {@code maxAttempts}
     * times in all, with the seeds the first Accepted event resolved (so a random seed is pinned), and results
     * already received are not delivered twice. The server's seeds make this safe: the same request gives the same
     * images on any replica, so the retried results are those the cut stream would have sent. gRPC's own retry
     * policy ({@link #serviceConfig}) cannot do this: it never retries a call that has received a response.
     */
    public Iterator<GenerateEvent> generateResumable(GenerateRequest request, int maxAttempts) {
        return new Iterator<>() {
            private GenerateRequest req = request;
            private EventStream stream = new EventStream(request, 0);
            private int attempts = 1;
            private int expected = -1;
            private final java.util.Set<Integer> delivered = new java.util.HashSet<>();
            private GenerateEvent next;

            @Override
            public boolean hasNext() {
                while (next == null) {
                    try {
                        if (!stream.hasNext()) {
                            return false;
                        }
                        GenerateEvent e = stream.next();
                        if (e.hasAccepted() && expected < 0) {
                            expected = e.getAccepted().getSeedsCount();
                            if (req.getSeed() == 0 && e.getAccepted().getSeedsCount() > 0) {
                                req = req.toBuilder().setSeed(e.getAccepted().getSeeds(0)).build();
                            }
                        }
                        if (e.hasResult() && !delivered.add(e.getResult().getImageIndex())) {
                            continue; // already delivered by an earlier attempt
                        }
                        next = e;
                    } catch (io.grpc.StatusRuntimeException e) {
                        boolean done = expected >= 0 && delivered.size() >= expected;
                        if (done || attempts >= maxAttempts || !cutByTransport(e.getStatus())) {
                            throw e;
                        }
                        attempts++;
                        stream.close();
                        stream = new EventStream(req, 0);
                    }
                }
                return true;
            }

            @Override
            public GenerateEvent next() {
                if (!hasNext()) {
                    throw new java.util.NoSuchElementException();
                }
                GenerateEvent e = next;
                next = null;
                return e;
            }
        };
    }

    /** Callbacks of an asynchronous generation; they run on gRPC threads, one at a time. */
    public interface Listener {
        void onEvent(GenerateEvent event);

        void onError(Throwable error);

        void onCompleted();
    }

    /** Starts a generation; returns a handle whose {@code cancel} stops it on the server. */
    public Cancellable generateAsync(GenerateRequest request, Listener listener) {
        Cancellable handle = new Cancellable();
        DiffusionServiceGrpc.newStub(channel).generate(request, new ClientResponseObserver<GenerateRequest, GenerateEvent>() {
            @Override
            public void beforeStart(ClientCallStreamObserver<GenerateRequest> requestStream) {
                handle.call = requestStream;
            }

            @Override
            public void onNext(GenerateEvent value) {
                listener.onEvent(value);
            }

            @Override
            public void onError(Throwable t) {
                listener.onError(t);
            }

            @Override
            public void onCompleted() {
                listener.onCompleted();
            }
        });
        return handle;
    }

    /** Cancels an asynchronous generation. */
    public static final class Cancellable {
        private volatile ClientCallStreamObserver<GenerateRequest> call;

        public void cancel(String reason) {
            ClientCallStreamObserver<GenerateRequest> c = call;
            if (c != null) {
                c.cancel(reason, null);
            }
        }
    }

    @Override
    public void close() {
        if (ownsChannel) {
            channel.shutdown();
            try {
                if (!channel.awaitTermination(5, TimeUnit.SECONDS)) {
                    channel.shutdownNow();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                channel.shutdownNow();
            }
        }
    }
}
