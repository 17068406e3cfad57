package io.ditserve.server.security;

import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import java.net.InetSocketAddress;
import java.net.SocketAddress;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.HexFormat;

/**
 * Who is calling, for the per-client share of the queue ({@code max_queued_per_client}): with bearer tokens
 * configured, the token (as a SHA-256 digest, so the token itself is never kept or shown); otherwise the peer's IP
 * address (not its port: one client's many connections count as one). Behind a proxy every client has the proxy's
 * address; use tokens there (README, "Transport limits").
 *
 * <p>The interceptor puts the key in the call's gRPC {@link Context}; handlers read it with {@link #current()} and
 * pass it to the engine as a plain string.
 */
public final class ClientIdentity implements ServerInterceptor {
    private static final Context.Key<String> KEY = Context.key("dit-client");
    private static final Context.Key<String> CONNECTION = Context.key("dit-connection");

    private final boolean byToken;

    /** @param byToken key by the bearer token (authentication is on; the token interceptor runs first) */
    public ClientIdentity(boolean byToken) {
        this.byToken = byToken;
    }

    /** The call's connection (the peer's address and port) inside a handler, or null (as {@link #current()}). */
    public static String connection() {
        return CONNECTION.get();
    }

    /** The calling client's key inside a call's handler, or null outside calls that passed this interceptor. */
    public static String current() {
        return KEY.get();
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
            ServerCallHandler<Q, R> next) {
        String key = null;
        if (byToken) {
            String auth = headers.get(BearerTokenInterceptor.AUTHORIZATION);
            if (auth != null && auth.length() > 7) {
                key = "token:" + digest(auth.substring(7).trim());
            }
        }
        if (key == null) {
            key = "peer:" + host(call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR));
        }
        SocketAddress remote = call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR);
        return Contexts.interceptCall(Context.current().withValue(KEY, key)
                .withValue(CONNECTION, String.valueOf(remote)), call, headers, next);
    }

    static String host(SocketAddress a) {
        if (a instanceof InetSocketAddress in) {
            return in.getAddress() != null ? in.getAddress().getHostAddress() : in.getHostString();
        }
        return String.valueOf(a); // in-process and other transports: the address as a whole
    }

    private static String digest(String token) {
        try {
            byte[] d = MessageDigest.getInstance("SHA-256").digest(token.getBytes(StandardCharsets.UTF_8));
            return HexFormat.of().formatHex(d, 0, 16);
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }
}
