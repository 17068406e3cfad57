package io.ditserve.server.grpc;

import io.grpc.Attributes;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerMethodDefinition;
import io.grpc.ServerServiceDefinition;
import io.grpc.ServiceDescriptor;
import io.grpc.Status;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Answers a request message that does not parse (invalid UTF-8 in a string field, a truncated message) with
 * INVALID_ARGUMENT and one short log line.
 *
 * <p>gRPC parses requests with the method's marshaller inside its own call machinery, where any exception becomes
 * UNKNOWN "Application error processing RPC" and a SEVERE stack trace per request. So the service is rebound with
 * an identity request marshaller (the raw message stream reaches the handler) and the handler parses the stream
 * itself, with the original marshaller, inside {@code onMessage}; a failure closes the call.
 */
public final class StrictParsing {
    private static final Logger log = LoggerFactory.getLogger(StrictParsing.class);
    /** Longest parser message quoted in a status or log line. */
    private static final int MAX_REASON = 160;

    private StrictParsing() {}

    /** The same service, parsing its requests as described above. */
    public static ServerServiceDefinition wrap(ServerServiceDefinition service) {
        ServiceDescriptor old = service.getServiceDescriptor();
        List<ServerMethodDefinition<InputStream, ?>> methods = new ArrayList<>();
        for (ServerMethodDefinition<?, ?> m : service.getMethods()) {
            methods.add(wrap(m));
        }
        ServiceDescriptor.Builder sd = ServiceDescriptor.newBuilder(old.getName())
                .setSchemaDescriptor(old.getSchemaDescriptor());
        methods.forEach(m -> sd.addMethod(m.getMethodDescriptor()));
        ServerServiceDefinition.Builder b = ServerServiceDefinition.builder(sd.build());
        methods.forEach(b::addMethod);
        return b.build();
    }

    private static <ReqT, RespT> ServerMethodDefinition<InputStream, RespT> wrap(ServerMethodDefinition<ReqT, RespT> m) {
        MethodDescriptor<ReqT, RespT> method = m.getMethodDescriptor();
        MethodDescriptor<InputStream, RespT> raw = method.toBuilder(RawMarshaller.INSTANCE,
                method.getResponseMarshaller()).build();
        ServerCallHandler<ReqT, RespT> inner = m.getServerCallHandler();
        return ServerMethodDefinition.create(raw, (call, headers) -> {
            TypedCall<ReqT, RespT> typed = new TypedCall<>(call, method);
            ServerCall.Listener<ReqT> listener = inner.startCall(typed, headers);
            return new ParsingListener<>(listener, typed, method);
        });
    }

    /** Hands the transport's message stream through unparsed. */
    private enum RawMarshaller implements MethodDescriptor.Marshaller<InputStream> {
        INSTANCE;

        @Override
        public InputStream stream(InputStream value) {
            return value;
        }

        @Override
        public InputStream parse(InputStream stream) {
            return stream;
        }
    }

    /** The raw call, typed as the service's handler expects it; remembers whether it has been closed. */
    private static final class TypedCall<ReqT, RespT> extends ServerCall<ReqT, RespT> {
        private final ServerCall<InputStream, RespT> raw;
        private final MethodDescriptor<ReqT, RespT> method;
        private volatile boolean closed;

        TypedCall(ServerCall<InputStream, RespT> raw, MethodDescriptor<ReqT, RespT> method) {
            this.raw = raw;
            this.method = method;
        }

        @Override
        public void request(int numMessages) {
            raw.request(numMessages);
        }

        @Override
        public void sendHeaders(Metadata headers) {
            raw.sendHeaders(headers);
        }

        @Override
        public void sendMessage(RespT message) {
            raw.sendMessage(message);
        }

        @Override
        public boolean isReady() {
            return raw.isReady();
        }

        @Override
        public void close(Status status, Metadata trailers) {
            closed = true;
            raw.close(status, trailers);
        }

        @Override
        public boolean isCancelled() {
            return raw.isCancelled();
        }

        @Override
        public void setMessageCompression(boolean enabled) {
            raw.setMessageCompression(enabled);
        }

        @Override
        public void setCompression(String compressor) {
            raw.setCompression(compressor);
        }

        @Override
        public void setOnReadyThreshold(int numBytes) {
            raw.setOnReadyThreshold(numBytes);
        }

        @Override
        public Attributes getAttributes() {
            return raw.getAttributes();
        }

        @Override
        public String getAuthority() {
            return raw.getAuthority();
        }

        @Override
        public MethodDescriptor<ReqT, RespT> getMethodDescriptor() {
            return method;
        }
    }

    /** Parses each message with the method's own marshaller; a message that does not parse ends the call. */
    private static final class ParsingListener<ReqT, RespT> extends ServerCall.Listener<InputStream> {
        private final ServerCall.Listener<ReqT> delegate;
        private final TypedCall<ReqT, RespT> call;
        private final MethodDescriptor<ReqT, RespT> method;
        private boolean failed;

        ParsingListener(ServerCall.Listener<ReqT> delegate, TypedCall<ReqT, RespT> call,
                MethodDescriptor<ReqT, RespT> method) {
            this.delegate = delegate;
            this.call = call;
            this.method = method;
        }

        @Override
        public void onMessage(InputStream message) {
            if (failed || call.closed) {
                return; // the handler (e.g. authentication) or an earlier bad message already ended the call
            }
            ReqT parsed;
            try {
                parsed = method.parseRequest(message);
            } catch (RuntimeException e) {
                failed = true;
                String reason = reason(e);
                log.info("malformed {} request from {}: {}", method.getFullMethodName(),
                        call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR), reason);
                call.close(Status.INVALID_ARGUMENT.withDescription("the request is not a valid "
                        + method.getFullMethodName() + " message: " + reason), new Metadata());
                return;
            }
            delegate.onMessage(parsed);
        }

        private static String reason(Throwable e) {
            // the protobuf marshaller wraps the parser's exception (InvalidProtocolBufferException) in a status
            Throwable root = e.getCause() != null ? e.getCause() : e;
            String m = root.getMessage() != null ? root.getMessage() : root.getClass().getSimpleName();
            int end = m.indexOf(". "); // the parser's first sentence says what is wrong
            if (end > 0) {
                m = m.substring(0, end + 1);
            }
            if (m.length() > MAX_REASON) {
                m = m.substring(0, MAX_REASON) + "…";
            }
            return m.replaceAll("\\p{Cntrl}", "?");
        }

        @Override
        public void onHalfClose() {
            if (!failed) {
                delegate.onHalfClose();
            }
        }

        @Override
        public void onCancel() {
            delegate.onCancel();
        }

        @Override
        public void onComplete() {
            delegate.onComplete();
        }

        @Override
        public void onReady() {
            if (!failed) {
                delegate.onReady();
            }
        }
    }
}
