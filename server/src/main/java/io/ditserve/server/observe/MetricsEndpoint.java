package io.ditserve.server.observe;

import com.sun.net.httpserver.Authenticator;
import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpPrincipal;
import io.ditserve.server.config.ServerConfig;
import io.prometheus.metrics.exporter.httpserver.HTTPServer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;

/**
 * The Prometheus scrape endpoint: {@code http://metrics_host:metrics_port/metrics}, on loopback unless configured
 * otherwise, and behind a bearer token when one is configured ({@code metrics_token_file}, else the environment
 * variable {@code metrics_token_env}).
 */
public final class MetricsEndpoint {
    private MetricsEndpoint() {}

    /** Starts the endpoint, or returns null when {@code metrics_port} is −1. */
    public static HTTPServer start(ServerConfig c, ServerMetrics metrics) throws IOException {
        if (c.metricsPort < 0) {
            return null;
        }
        HTTPServer.Builder b = HTTPServer.builder().hostname(c.metricsHost).port(c.metricsPort)
                .registry(metrics.registry());
        String token = token(c);
        if (token != null) {
            b.authenticator(new BearerAuthenticator(token));
        }
        return b.buildAndStart();
    }

    /** The scrape token from the configuration, or null for none. */
    static String token(ServerConfig c) throws IOException {
        if (c.metricsTokenFile != null) {
            for (String line : Files.readAllLines(Path.of(c.metricsTokenFile))) {
                String t = line.strip();
                if (!t.isEmpty() && !t.startsWith("#")) {
                    return t;
                }
            }
            throw new IOException("metrics_token_file " + c.metricsTokenFile + " holds no token");
        }
        String env = c.metricsTokenEnv == null ? null : System.getenv(c.metricsTokenEnv);
        return env == null || env.isBlank() ? null : env.strip();
    }

    /** Accepts {@code Authorization: Bearer <token>} (compared in constant time); anything else gets 401. */
    static final class BearerAuthenticator extends Authenticator {
        private final byte[] token;

        BearerAuthenticator(String token) {
            this.token = token.getBytes(StandardCharsets.UTF_8);
        }

        @Override
        public Result authenticate(HttpExchange exchange) {
            String h = exchange.getRequestHeaders().getFirst("Authorization");
            if (h != null && h.regionMatches(true, 0, "Bearer ", 0, 7)
                    && MessageDigest.isEqual(token, h.substring(7).strip().getBytes(StandardCharsets.UTF_8))) {
                return new Success(new HttpPrincipal("scraper", "metrics"));
            }
            exchange.getResponseHeaders().set("WWW-Authenticate", "Bearer realm=\"metrics\"");
            return new Failure(401);
        }
    }
}
