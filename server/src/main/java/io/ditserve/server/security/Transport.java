package io.ditserve.server.security;

import io.ditserve.server.config.ServerConfig;
import io.grpc.InsecureServerCredentials;
import io.grpc.ServerBuilder;
import io.grpc.ServerCredentials;
import io.grpc.TlsServerCredentials;
import io.grpc.netty.shaded.io.grpc.netty.NettyServerBuilder;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;

/** Builds the network transport from the configuration: plaintext, TLS, or mutual TLS; and loads bearer tokens. */
public final class Transport {
    private Transport() {}

    public static ServerBuilder<?> serverBuilder(ServerConfig c) throws IOException {
        ServerCredentials creds;
        if (c.tlsCert == null && c.tlsKey == null) {
            if (c.tlsClientCa != null) {
                throw new IOException("tls_client_ca needs tls_cert and tls_key");
            }
            creds = InsecureServerCredentials.create();
        } else {
            if (c.tlsCert == null || c.tlsKey == null) {
                throw new IOException("TLS needs both tls_cert and tls_key (PEM files)");
            }
            TlsServerCredentials.Builder b = TlsServerCredentials.newBuilder()
                    .keyManager(readable(c.tlsCert, "tls_cert"), readable(c.tlsKey, "tls_key"));
            if (c.tlsClientCa != null) {
                b.trustManager(readable(c.tlsClientCa, "tls_client_ca"))
                        .clientAuth(TlsServerCredentials.ClientAuth.REQUIRE);
            }
            creds = b.build();
        }
        NettyServerBuilder b = limits(NettyServerBuilder.forPort(c.port, creds), c);
        ConnectionLimits caps = ConnectionLimits.install(b, c.maxConnections, c.maxConnectionsPerAddress);
        if (caps != null) {
            synchronized (CONNECTION_LIMITS) {
                CONNECTION_LIMITS.put(b, caps);
            }
        }
        return b;
    }

    /** The connection caps installed on a builder by {@link #serverBuilder} (it owns the event loops), or null. */
    public static ConnectionLimits connectionLimits(ServerBuilder<?> b) {
        synchronized (CONNECTION_LIMITS) {
            return CONNECTION_LIMITS.get(b);
        }
    }

    private static final java.util.Map<ServerBuilder<?>, ConnectionLimits> CONNECTION_LIMITS =
            new java.util.WeakHashMap<>();

    /**
     * The connection limits of the configuration (README, "Transport limits"): idle and age limits, keepalive
     * enforcement, concurrent calls per connection, the handshake timeout and the rapid-reset (RST_STREAM flood)
     * guard.
     */
    public static NettyServerBuilder limits(NettyServerBuilder b, ServerConfig c) {
        b.maxInboundMessageSize(c.maxInboundMessageBytes)
                .permitKeepAliveTime(c.permitKeepaliveTimeSeconds, TimeUnit.SECONDS)
                .permitKeepAliveWithoutCalls(false)
                .keepAliveTime(c.keepaliveTimeSeconds, TimeUnit.SECONDS)
                .keepAliveTimeout(c.keepaliveTimeoutSeconds, TimeUnit.SECONDS)
                .maxConcurrentCallsPerConnection(c.maxConcurrentCallsPerConnection)
                .handshakeTimeout(c.handshakeTimeoutSeconds, TimeUnit.SECONDS);
        if (c.maxConnectionIdleSeconds > 0) {
            b.maxConnectionIdle(c.maxConnectionIdleSeconds, TimeUnit.SECONDS);
        }
        if (c.maxConnectionAgeSeconds > 0) {
            b.maxConnectionAge(c.maxConnectionAgeSeconds, TimeUnit.SECONDS)
                    .maxConnectionAgeGrace(c.maxConnectionAgeGraceSeconds, TimeUnit.SECONDS);
        }
        if (c.maxRstFramesPerWindow > 0) {
            b.maxRstFramesPerWindow(c.maxRstFramesPerWindow, c.rstWindowSeconds);
        }
        return b;
    }

    private static File readable(String path, String key) throws IOException {
        Path p = Path.of(path);
        if (!Files.isReadable(p)) {
            throw new IOException(key + ": " + p + " does not exist or is not readable");
        }
        return p.toFile();
    }

    /** Tokens from {@code auth_tokens_file} (one per line, # comments) and the environment variable it names. */
    public static List<String> tokens(ServerConfig c) throws IOException {
        List<String> out = new ArrayList<>();
        if (c.authTokensFile != null) {
            for (String line : Files.readAllLines(Path.of(c.authTokensFile))) {
                String t = line.strip();
                if (!t.isEmpty() && !t.startsWith("#")) {
                    out.add(t);
                }
            }
            if (out.isEmpty()) {
                throw new IOException("auth_tokens_file " + c.authTokensFile + " holds no tokens");
            }
        }
        String env = c.authTokensEnv == null ? null : System.getenv(c.authTokensEnv);
        if (env != null && !env.isBlank()) {
            Arrays.stream(env.split(",")).map(String::strip).filter(s -> !s.isEmpty()).forEach(out::add);
        }
        return out;
    }
}
