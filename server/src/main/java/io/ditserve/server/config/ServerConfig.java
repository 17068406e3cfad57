package io.ditserve.server.config;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Server configuration: read from a YAML (or JSON) file, then overridden by command-line flags. Every key, its
 * default and meaning is listed in the README ("Configuration"). Unknown keys are an error, so a typo does not
 * silently fall back to a default.
 */
@JsonIgnoreProperties(ignoreUnknown = false)
public final class ServerConfig {
    /** gRPC port; 0 picks a free port. */
    @JsonProperty("port") public int port = 50051;
    /** Model repository: one subfolder per model. */
    @JsonProperty("models") public String models =
            System.getenv().getOrDefault("DIT_MODELS", "models");
    /** Backend for every model without an entry in {@link #modelBackends}. */
    @JsonProperty("backend") public String backend = "java";
    /** Model name → backend name. */
    @JsonProperty("model_backends") public Map<String, String> modelBackends = new LinkedHashMap<>();
    /** Compute threads of each backend. 0 = all available processors. */
    @JsonProperty("threads") public int threads = 0;
    /** Free-form backend options, e.g. {@code java.path: scalar}. */
    @JsonProperty("backend_options") public Map<String, String> backendOptions = new LinkedHashMap<>();
    /** Most images one request may ask for. */
    @JsonProperty("max_images") public int maxImages = 16;
    /** Most denoising steps one request may ask for (at most 1000). */
    @JsonProperty("max_steps") public int maxSteps = 1000;
    /** Smallest preview_interval a request may ask for (caps the preview rate: one frame per k steps). */
    @JsonProperty("min_preview_interval") public int minPreviewInterval = 1;
    /** Generations of one model that step together (their samples share forward passes). */
    @JsonProperty("max_active") public int maxActive = 16;
    /** Most samples in one forward pass; 0 = the backend's default (README, "Batching"). */
    @JsonProperty("max_batch") public int maxBatch = 0;
    /** Latents larger than this many positions per side are decoded in tiles (64 = up to 512 px untiled). */
    @JsonProperty("decode_tile") public int decodeTile = 64;
    /** Latent positions shared by neighbouring decode tiles. */
    @JsonProperty("decode_tile_overlap") public int decodeTileOverlap = 16;
    /** Generations that may wait for a slot before RESOURCE_EXHAUSTED. */
    @JsonProperty("max_queued") public int maxQueued = 32;
    /**
     * Generations of one model that one client (its bearer token when authentication is on, else its IP address)
     * may have waiting; 0 = no per-client limit. Waiting generations are also ordered fairly by client.
     */
    @JsonProperty("max_queued_per_client") public int maxQueuedPerClient = 8;
    /** On shutdown, how long running generations may finish before they are cancelled. */
    @JsonProperty("shutdown_grace_seconds") public int shutdownGraceSeconds = 30;
    /** Largest gRPC message the server accepts (requests with an initial-noise tensor can be large). */
    @JsonProperty("max_inbound_message_bytes") public int maxInboundMessageBytes = 16 << 20;

    // ---- transport limits (Netty): README, "Transport limits"
    /** A connection without calls for this long is closed (GOAWAY); 0 = never. */
    @JsonProperty("max_connection_idle_seconds") public int maxConnectionIdleSeconds = 300;
    /** A connection is asked to go away after this long (clients reconnect: load spreads again); 0 = never. */
    @JsonProperty("max_connection_age_seconds") public int maxConnectionAgeSeconds = 3600;
    /** After max_connection_age, how long calls still running on that connection may finish. */
    @JsonProperty("max_connection_age_grace_seconds") public int maxConnectionAgeGraceSeconds = 600;
    /** Clients may send keepalive pings at most this often (and only while calls run); faster = GOAWAY. */
    @JsonProperty("permit_keepalive_time_seconds") public int permitKeepaliveTimeSeconds = 20;
    /** The server pings a connection silent for this long, and closes it after keepalive_timeout_seconds. */
    @JsonProperty("keepalive_time_seconds") public int keepaliveTimeSeconds = 120;
    @JsonProperty("keepalive_timeout_seconds") public int keepaliveTimeoutSeconds = 20;
    /** Most calls in flight on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); more wait at the client. */
    @JsonProperty("max_concurrent_calls_per_connection") public int maxConcurrentCallsPerConnection = 100;
    /** A connection must finish its TLS / HTTP/2 handshake within this long. */
    @JsonProperty("handshake_timeout_seconds") public int handshakeTimeoutSeconds = 10;
    /** Rapid-reset guard: more RST_STREAM frames than this from one connection in rst_window_seconds close it. */
    @JsonProperty("max_rst_frames_per_window") public int maxRstFramesPerWindow = 200;
    @JsonProperty("rst_window_seconds") public int rstWindowSeconds = 10;

    /** Prometheus metrics HTTP port (/metrics); 0 = any free port; -1 = no metrics endpoint. */
    @JsonProperty("metrics_port") public int metricsPort = 9090;
    /** Address the metrics endpoint listens on: loopback by default; 0.0.0.0 = every interface. */
    @JsonProperty("metrics_host") public String metricsHost = "127.0.0.1";
    /** File whose first non-comment line is a bearer token the scrape must send; unset = no authentication. */
    @JsonProperty("metrics_token_file") public String metricsTokenFile;
    /** Environment variable with a bearer token for the scrape (used when metrics_token_file is unset). */
    @JsonProperty("metrics_token_env") public String metricsTokenEnv = "DIT_METRICS_TOKEN";
    /** TLS: PEM certificate chain and private key; both unset = plaintext. */
    @JsonProperty("tls_cert") public String tlsCert;
    @JsonProperty("tls_key") public String tlsKey;
    /** Mutual TLS: PEM CA whose client certificates are accepted (requires a client certificate). */
    @JsonProperty("tls_client_ca") public String tlsClientCa;
    /** Bearer tokens, one per line; with tokens configured every call but health needs one. */
    @JsonProperty("auth_tokens_file") public String authTokensFile;
    /** Environment variable with comma-separated bearer tokens (added to the file's). */
    @JsonProperty("auth_tokens_env") public String authTokensEnv = "DIT_AUTH_TOKENS";

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory())
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES);

    public static ServerConfig load(Path file) throws IOException {
        if (!Files.isRegularFile(file)) {
            throw new IOException("configuration file " + file + " does not exist");
        }
        try {
            ServerConfig c = YAML.readValue(file.toFile(), ServerConfig.class);
            return c == null ? new ServerConfig() : c;
        } catch (IOException e) {
            throw new IOException("configuration file " + file + ": " + e.getMessage(), e);
        }
    }

    public int effectiveThreads() {
        return threads > 0 ? threads : Runtime.getRuntime().availableProcessors();
    }

    /** Checks ranges; the message names the key. */
    public void validate() {
        check(port >= 0 && port <= 65535, "port must be in 0..65535, got " + port);
        check(threads >= 0, "threads must be >= 0, got " + threads);
        check(maxImages >= 1 && maxImages <= 1024, "max_images must be in 1..1024, got " + maxImages);
        check(maxSteps >= 1 && maxSteps <= 1000, "max_steps must be in 1..1000, got " + maxSteps);
        check(maxActive >= 1, "max_active must be >= 1, got " + maxActive);
        check(minPreviewInterval >= 1, "min_preview_interval must be >= 1, got " + minPreviewInterval);
        check(maxBatch >= 0 && maxBatch <= 4096, "max_batch must be in 0..4096, got " + maxBatch);
        check(decodeTile >= 4, "decode_tile must be >= 4, got " + decodeTile);
        check(decodeTileOverlap >= 0 && decodeTileOverlap < decodeTile,
                "decode_tile_overlap must be in 0..decode_tile-1, got " + decodeTileOverlap);
        check(maxQueued >= 0, "max_queued must be >= 0, got " + maxQueued);
        check(maxQueuedPerClient >= 0, "max_queued_per_client must be >= 0, got " + maxQueuedPerClient);
        check(maxConnectionIdleSeconds >= 0, "max_connection_idle_seconds must be >= 0, got " + maxConnectionIdleSeconds);
        check(maxConnectionAgeSeconds >= 0, "max_connection_age_seconds must be >= 0, got " + maxConnectionAgeSeconds);
        check(maxConnectionAgeGraceSeconds >= 0,
                "max_connection_age_grace_seconds must be >= 0, got " + maxConnectionAgeGraceSeconds);
        check(permitKeepaliveTimeSeconds >= 1,
                "permit_keepalive_time_seconds must be >= 1, got " + permitKeepaliveTimeSeconds);
        check(keepaliveTimeSeconds >= 1, "keepalive_time_seconds must be >= 1, got " + keepaliveTimeSeconds);
        check(keepaliveTimeoutSeconds >= 1, "keepalive_timeout_seconds must be >= 1, got " + keepaliveTimeoutSeconds);
        check(maxConcurrentCallsPerConnection >= 1,
                "max_concurrent_calls_per_connection must be >= 1, got " + maxConcurrentCallsPerConnection);
        check(handshakeTimeoutSeconds >= 1, "handshake_timeout_seconds must be >= 1, got " + handshakeTimeoutSeconds);
        check(maxRstFramesPerWindow >= 0, "max_rst_frames_per_window must be >= 0 (0 = off), got "
                + maxRstFramesPerWindow);
        check(rstWindowSeconds >= 1, "rst_window_seconds must be >= 1, got " + rstWindowSeconds);
        check(shutdownGraceSeconds >= 0, "shutdown_grace_seconds must be >= 0, got " + shutdownGraceSeconds);
        check(maxInboundMessageBytes >= 1 << 20, "max_inbound_message_bytes must be >= 1 MiB");
        check(metricsPort >= -1 && metricsPort <= 65535, "metrics_port must be in -1..65535, got " + metricsPort);
        check(metricsHost != null && !metricsHost.isBlank(), "metrics_host must be an address, e.g. 127.0.0.1");
    }

    private static void check(boolean ok, String message) {
        if (!ok) {
            throw new IllegalArgumentException("configuration: " + message);
        }
    }
}
