package io.ditserve.server.web;

import com.linecorp.armeria.server.ServiceRequestContext;
import io.grpc.Attributes;
import io.grpc.ForwardingServerCall;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.net.UnknownHostException;

/**
 * Gives a web call the caller's address as {@link Grpc#TRANSPORT_ATTR_REMOTE_ADDR}, which the gRPC port's
 * {@code ClientIdentity} reads for the per-client queue share. Armeria's server calls carry no transport
 * attributes, so the address comes from Armeria's request context. The OpenAI API reaches the service through an
 * in-process server; there the address of the HTTP caller travels in the {@link #PEER} header, which is believed
 * only on the in-process transport (a network caller cannot reach it) and removed everywhere else.
 */
final class RemoteAddressInterceptor implements ServerInterceptor {
    /** The HTTP caller's IP address, set by {@link OpenAiImages} on its in-process calls. */
    static final Metadata.Key<String> PEER = Metadata.Key.of("x-ditserve-web-peer", Metadata.ASCII_STRING_MARSHALLER);

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
            ServerCallHandler<Q, R> next) {
        String forwarded = headers.get(PEER);
        headers.removeAll(PEER);
        SocketAddress remote = call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR);
        SocketAddress address = null;
        if (remote instanceof io.grpc.inprocess.InProcessSocketAddress && forwarded != null) {
            address = parse(forwarded);
        } else if (remote == null) {
            ServiceRequestContext ctx = ServiceRequestContext.currentOrNull();
            if (ctx != null) {
                address = ctx.remoteAddress();
            }
        }
        if (address == null) {
            return next.startCall(call, headers);
        }
        Attributes attributes = call.getAttributes().toBuilder().set(Grpc.TRANSPORT_ATTR_REMOTE_ADDR, address).build();
        return next.startCall(new ForwardingServerCall.SimpleForwardingServerCall<>(call) {
            @Override
            public Attributes getAttributes() {
                return attributes;
            }
        }, headers);
    }

    private static SocketAddress parse(String ip) {
        try {
            // a literal address only (never a name lookup): the header is written by OpenAiImages from the socket
            if (!ip.matches("[0-9a-fA-F:.%]+")) {
                return null;
            }
            return new InetSocketAddress(InetAddress.getByName(ip), 0);
        } catch (UnknownHostException e) {
            return null;
        }
    }
}
