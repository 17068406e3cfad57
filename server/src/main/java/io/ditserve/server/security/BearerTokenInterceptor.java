package io.ditserve.server.security;

import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.List;
import java.util.function.Consumer;

/**
 * Requires {@code authorization: Bearer <token>} with one of the configured tokens; otherwise the call ends with
 * UNAUTHENTICATED before any handler runs. Tokens are compared in constant time and never logged. Each failure is
 * counted ({@code dit_auth_failures_total{reason}}: missing, invalid, refused) and goes to the {@link AuthGuard},
 * which logs it (one line per address per window) and refuses an address that keeps failing.
 */
public final class BearerTokenInterceptor implements ServerInterceptor {
    static final Metadata.Key<String> AUTHORIZATION =
            Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

    private final List<byte[]> tokens;
    private final AuthGuard guard;
    private final Consumer<String> failures;

    /** No refusals, failures not counted (tests of the token check alone). */
    public BearerTokenInterceptor(List<String> tokens) {
        this(tokens, new AuthGuard(0, Duration.ofMinutes(1)), reason -> { });
    }

    /** @param failures told the reason of each failure (missing, invalid, refused), for the metric */
    public BearerTokenInterceptor(List<String> tokens, AuthGuard guard, Consumer<String> failures) {
        if (tokens.isEmpty()) {
            throw new IllegalArgumentException("at least one token is needed");
        }
        this.tokens = tokens.stream().map(t -> t.getBytes(StandardCharsets.UTF_8)).toList();
        this.guard = guard;
        this.failures = failures;
    }

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata headers,
            ServerCallHandler<Q, R> next) {
        String address = ClientIdentity.host(call.getAttributes().get(Grpc.TRANSPORT_ATTR_REMOTE_ADDR));
        Long wait = guard.refusedForSeconds(address);
        if (wait != null) {
            failures.accept("refused");
            call.close(Status.RESOURCE_EXHAUSTED.withDescription("too many failed authentications from this address ("
                    + guard.maxFailures() + " within " + guard.windowSeconds() + " s, auth_max_failures); retry in "
                    + wait + " s"), new Metadata());
            return new ServerCall.Listener<>() {};
        }
        String value = headers.get(AUTHORIZATION);
        if (value == null || !value.regionMatches(true, 0, "Bearer ", 0, 7) || !known(value.substring(7).trim())) {
            boolean missing = value == null;
            failures.accept(missing ? "missing" : "invalid");
            guard.failed(address, (missing ? "no bearer token" : "an unknown bearer token") + " on "
                    + call.getMethodDescriptor().getFullMethodName());
            call.close(Status.UNAUTHENTICATED.withDescription(missing
                    ? "missing bearer token (send 'authorization: Bearer <token>')" : "invalid bearer token"),
                    new Metadata());
            return new ServerCall.Listener<>() {};
        }
        return next.startCall(call, headers);
    }

    private boolean known(String presented) {
        byte[] p = presented.getBytes(StandardCharsets.UTF_8);
        boolean ok = false;
        for (byte[] t : tokens) {
            ok |= MessageDigest.isEqual(p, t); // check all: no early exit timing
        }
        return ok;
    }
}
