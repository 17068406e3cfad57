package io.ditserve.server.config;

import com.fasterxml.jackson.annotation.JsonIgnoreProperties;
import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.exc.InvalidFormatException;
import com.fasterxml.jackson.databind.exc.MismatchedInputException;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.node.TextNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
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
    /**
     * How long a finished generation's results may wait for a client that does not read them; then the call ends
     * (DEADLINE_EXCEEDED) and the results are freed.
     */
    @JsonProperty("delivery_deadline_seconds") public int deliveryDeadlineSeconds = 60;
    /**
     * Bytes of finished output a client may leave unread before its next Generate call is refused
     * (RESOURCE_EXHAUSTED); 0 = no limit. Likewise per connection.
     */
    @JsonProperty("max_undelivered_bytes_per_client") public long maxUndeliveredBytesPerClient = 256L << 20;
    @JsonProperty("max_undelivered_bytes_per_connection") public long maxUndeliveredBytesPerConnection = 128L << 20;
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
    /** Open connections in all; a new one beyond is closed at once (HTTP/2 GOAWAY saying why); 0 = no limit. */
    @JsonProperty("max_connections") public int maxConnections = 2000;
    /** Open connections from one IP address; 0 = no limit. */
    @JsonProperty("max_connections_per_address") public int maxConnectionsPerAddress = 100;
    /**
     * Failed authentications from one address within auth_failure_window_seconds after which its calls are refused
     * (RESOURCE_EXHAUSTED) until the oldest failure leaves the window; 0 = never refuse.
     */
    @JsonProperty("auth_max_failures") public int authMaxFailures = 20;
    @JsonProperty("auth_failure_window_seconds") public int authFailureWindowSeconds = 60;

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

    // ---- the web port: gRPC-Web, the page, the OpenAI Images API (README, "Browser and OpenAI API")
    /** HTTP port of gRPC-Web, the page and the OpenAI Images API; -1 = off (the default), 0 = any free port. */
    @JsonProperty("web_port") public int webPort = -1;
    /** Origins whose pages may call the web port (CORS), e.g. https://app.example.com; "*" = any; none = same origin. */
    @JsonProperty("web_origins") public List<String> webOrigins = new ArrayList<>();

    private static final ObjectMapper YAML = new ObjectMapper(new YAMLFactory())
            .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
            .enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION);

    /** Where each key's value came from, for messages: "set in FILE", "from --set", "from --port", ... */
    private final Map<String, String> origins = new HashMap<>();

    /**
     * Reads a configuration file. An empty file, or one of comments only, means all defaults. Any problem is a
     * {@link ConfigException} whose one-line message names the file and the key, or the YAML line and column.
     */
    public static ServerConfig load(Path file) {
        if (Files.isDirectory(file)) {
            throw new ConfigException("configuration file " + file + " is a folder, not a file");
        }
        if (!Files.isRegularFile(file)) {
            throw new ConfigException("configuration file " + file + " does not exist");
        }
        ServerConfig c;
        try (JsonParser p = YAML.createParser(file.toFile())) {
            // A file without any YAML token (empty, or comments only) has no value at all: readValue would refuse
            // it ("No content to map due to end-of-input") before a null check after it could turn it into the
            // defaults, so look at the first token first. A document of just `~` or `null` reads as null.
            c = p.nextToken() == null ? null : YAML.readValue(p, ServerConfig.class);
            if (c == null) {
                c = new ServerConfig();
            }
            JsonNode tree = YAML.readTree(file.toFile());
            if (tree != null && tree.isObject()) {
                for (var it = tree.fieldNames(); it.hasNext(); ) {
                    c.origins.put(it.next(), "set in " + file);
                }
            }
        } catch (JsonProcessingException e) {
            throw new ConfigException(describe(file.toString(), e), e);
        } catch (IOException e) {
            throw new ConfigException("configuration file " + file + ": cannot read it: " + e.getMessage(), e);
        }
        return c;
    }

    /** Every configuration key, sorted. */
    public static List<String> knownKeys() {
        List<String> keys = new ArrayList<>();
        for (Field f : ServerConfig.class.getFields()) {
            JsonProperty p = f.getAnnotation(JsonProperty.class);
            if (p != null) {
                keys.add(p.value());
            }
        }
        keys.sort(null);
        return keys;
    }

    /**
     * Applies {@code --set key=value} settings in order; a value is read as YAML ({@code 8}, {@code true},
     * {@code {java.path: scalar}}), else taken as text. An unknown key or a value of the wrong type is a
     * {@link ConfigException} naming the setting.
     */
    public void applySettings(Map<String, String> settings) {
        settings.forEach(this::set);
    }

    private void set(String key, String value) {
        String where = "--set " + key + "=" + value;
        if (!knownKeys().contains(key)) {
            throw new ConfigException(where + ": " + unknownKey(key));
        }
        ObjectNode node = YAML.createObjectNode();
        node.set(key, scalar(value));
        try {
            YAML.readerForUpdating(this).readValue(node);
        } catch (IOException e) {
            throw new ConfigException(e instanceof JsonProcessingException j ? describe(where, j)
                    : where + ": " + e.getMessage(), e);
        }
        origins.put(key, "from --set");
    }

    private static JsonNode scalar(String v) {
        try {
            JsonNode n = YAML.readTree(v);
            return n == null || n.isMissingNode() ? TextNode.valueOf(v) : n;
        } catch (IOException e) {
            return TextNode.valueOf(v);
        }
    }

    /** Records where a key's value came from (e.g. "from --port"), for the messages of {@link #validate()}. */
    public void markOrigin(String key, String origin) {
        origins.put(key, origin);
    }

    /** Where a key's value came from, in words: "set in FILE", "from --set", "from --port", "the default". */
    public String originOf(String key) {
        String o = origins.get(key);
        if (o != null) {
            return o;
        }
        if (key.equals("models") && System.getenv("DIT_MODELS") != null) {
            return "from $DIT_MODELS";
        }
        return "the default";
    }

    /** One line for a parse or mapping error of {@code where} (a file, or a --set setting). */
    static String describe(String where, JsonProcessingException e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof org.yaml.snakeyaml.error.MarkedYAMLException y && y.getProblemMark() != null) {
                String context = y.getContext() == null ? "" : y.getContext() + ": ";
                return where + ", line " + (y.getProblemMark().getLine() + 1) + ", column "
                        + (y.getProblemMark().getColumn() + 1) + ": not valid YAML: " + context + y.getProblem();
            }
        }
        JsonLocation loc = e.getLocation();
        boolean located = loc != null && loc.getLineNr() > 0;
        if (e instanceof UnrecognizedPropertyException u) {
            // Jackson's column is past the value here: the line is what helps
            return where + (located ? ", line " + loc.getLineNr() : "") + ": " + unknownKey(u.getPropertyName());
        }
        String at = located ? ", line " + loc.getLineNr() + ", column " + loc.getColumnNr() : "";
        if (e instanceof JsonMappingException m) {
            String key = path(m);
            String expected = expected(m);
            if (key.isEmpty()) {
                return where + at + ": expected a mapping of keys (key: value), as in the README's Configuration";
            }
            if (expected != null) {
                String original = String.valueOf(m.getOriginalMessage());
                String got = m instanceof InvalidFormatException f ? ", got \"" + f.getValue() + "\""
                        : original.contains("from Array value") ? ", got a list"
                        : original.contains("from Object value") ? ", got a mapping" : "";
                return where + at + ": " + key + ": expected " + expected + got;
            }
            return where + at + ": " + key + ": " + m.getOriginalMessage();
        }
        String msg = e.getOriginalMessage();
        if (msg != null && msg.startsWith("Duplicate field ")) {
            msg = "duplicate key " + msg.substring("Duplicate field ".length());
        }
        return where + at + ": " + msg;
    }

    private static String path(JsonMappingException m) {
        StringBuilder b = new StringBuilder();
        for (JsonMappingException.Reference r : m.getPath()) {
            if (r.getFieldName() != null) {
                b.append(b.isEmpty() ? "" : ".").append(r.getFieldName());
            } else if (r.getIndex() >= 0) {
                b.append('[').append(r.getIndex()).append(']');
            }
        }
        return b.toString();
    }

    private static String expected(JsonMappingException m) {
        Class<?> t = m instanceof MismatchedInputException mi ? mi.getTargetType() : null;
        if (t == null) {
            return null;
        }
        if (t == int.class || t == Integer.class || t == long.class || t == Long.class) {
            return "a whole number";
        }
        if (t == String.class) {
            return "a single value (text)";
        }
        if (Map.class.isAssignableFrom(t)) {
            return "a mapping (key: value)";
        }
        if (t == boolean.class || t == Boolean.class) {
            return "true or false";
        }
        return null;
    }

    /** "unknown key "x" (did you mean "y"?); known keys: a, b, ..." */
    static String unknownKey(String key) {
        List<String> known = knownKeys();
        String best = null;
        int bestDistance = Integer.MAX_VALUE;
        for (String k : known) {
            int d = distance(key, k);
            if (d < bestDistance) {
                best = k;
                bestDistance = d;
            }
        }
        String hint = best != null && bestDistance <= Math.max(2, key.length() / 4)
                ? " (did you mean \"" + best + "\"?)" : "";
        return "unknown key \"" + key + "\"" + hint + "; known keys: " + String.join(", ", known);
    }

    /** Levenshtein distance. */
    private static int distance(String a, String b) {
        int[] prev = new int[b.length() + 1];
        int[] cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) {
            prev[j] = j;
        }
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
                cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }

    /**
     * Checks every file and folder the configuration names (models, auth_tokens_file, metrics_token_file when
     * metrics are on, tls_cert, tls_key, tls_client_ca), so that a missing one is reported before any model loads.
     */
    public void checkFiles() {
        String problem = pathProblem(models, true);
        if (problem != null) {
            throw new ConfigException("models folder " + models + " " + problem + " (" + originOf("models") + ")");
        }
        checkFile("auth_tokens_file", authTokensFile, true);
        if (metricsPort >= 0) {
            checkFile("metrics_token_file", metricsTokenFile, true);
        }
        checkFile("tls_cert", tlsCert, false);
        checkFile("tls_key", tlsKey, false);
        checkFile("tls_client_ca", tlsClientCa, false);
    }

    private void checkFile(String key, String path, boolean holdsTokens) {
        if (path == null) {
            return;
        }
        String problem = pathProblem(path, false);
        if (problem == null && holdsTokens) {
            try {
                boolean any = Files.readAllLines(Path.of(path)).stream().map(String::strip)
                        .anyMatch(l -> !l.isEmpty() && !l.startsWith("#"));
                problem = any ? null : "holds no token (only empty or # comment lines)";
            } catch (IOException e) {
                problem = "cannot be read: " + e.getMessage();
            }
        }
        if (problem != null) {
            throw new ConfigException(key + " " + path + " " + problem + " (" + originOf(key) + ")");
        }
    }

    private static String pathProblem(String path, boolean folder) {
        Path p;
        try {
            p = Path.of(path);
        } catch (InvalidPathException e) {
            return "is not a valid path";
        }
        if (!Files.exists(p)) {
            return "does not exist";
        }
        if (folder != Files.isDirectory(p)) {
            return folder ? "is not a folder" : "is a folder, not a file";
        }
        return Files.isReadable(p) ? null : "is not readable";
    }

    public int effectiveThreads() {
        return threads > 0 ? threads : Runtime.getRuntime().availableProcessors();
    }

    /** Checks ranges; a {@link ConfigException} names the key and where its value came from. */
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
        check(maxConnections >= 0, "max_connections must be >= 0 (0 = no limit), got " + maxConnections);
        check(maxConnectionsPerAddress >= 0, "max_connections_per_address must be >= 0 (0 = no limit), got "
                + maxConnectionsPerAddress);
        check(authMaxFailures >= 0, "auth_max_failures must be >= 0 (0 = never refuse), got " + authMaxFailures);
        check(authFailureWindowSeconds >= 1, "auth_failure_window_seconds must be >= 1, got "
                + authFailureWindowSeconds);
        check(shutdownGraceSeconds >= 0, "shutdown_grace_seconds must be >= 0, got " + shutdownGraceSeconds);
        check(deliveryDeadlineSeconds >= 1, "delivery_deadline_seconds must be >= 1, got " + deliveryDeadlineSeconds);
        check(maxUndeliveredBytesPerClient >= 0, "max_undelivered_bytes_per_client must be >= 0 (0 = no limit), got "
                + maxUndeliveredBytesPerClient);
        check(maxUndeliveredBytesPerConnection >= 0, "max_undelivered_bytes_per_connection must be >= 0 (0 = no "
                + "limit), got " + maxUndeliveredBytesPerConnection);
        check(maxInboundMessageBytes >= 1 << 20, "max_inbound_message_bytes must be >= 1 MiB");
        check(metricsPort >= -1 && metricsPort <= 65535, "metrics_port must be in -1..65535, got " + metricsPort);
        check(metricsHost != null && !metricsHost.isBlank(), "metrics_host must be an address, e.g. 127.0.0.1");
        check(webPort >= -1 && webPort <= 65535, "web_port must be in -1..65535 (-1 = off), got " + webPort);
        check(webOrigins != null && webOrigins.stream().allMatch(o -> o != null && (o.equals("*")
                || o.matches("https?://[^/\\s]+"))), "web_origins must list origins such as https://app.example.com "
                + "(scheme://host[:port], no path) or \"*\", got " + webOrigins);
    }

    /** Every message starts with its key: the origin of that key's value is added. */
    private void check(boolean ok, String message) {
        if (!ok) {
            String key = message.split(" ", 2)[0];
            throw new ConfigException(knownKeys().contains(key) ? message + " (" + originOf(key) + ")" : message);
        }
    }
}
