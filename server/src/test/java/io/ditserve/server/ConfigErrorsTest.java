package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.inject.Guice;
import com.google.inject.Stage;
import io.ditserve.server.cli.Main;
import io.ditserve.server.config.ConfigException;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.security.Transport;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/**
 * Each configuration problem of issue 26 ends {@code dit serve} with one line, "dit serve: ...", naming the file
 * and the key (with the known keys when it is unknown) or the YAML line and column, and exit code 2; every file the
 * configuration names is checked before any model loads; an empty configuration file means all defaults. In-process
 * through {@link Main#commandLine()} (the handler the launcher's {@code main} uses), and once end to end in a real
 * process.
 */
class ConfigErrorsTest {
    @TempDir
    Path dir;

    private record Run(int code, String err) {
        List<String> lines() {
            return err.lines().toList();
        }
    }

    /** Runs {@code dit ARGS} in this JVM, as the launcher's main does, capturing what it prints to stderr. */
    private static Run dit(String... args) {
        StringWriter err = new StringWriter();
        CommandLine cl = Main.commandLine();
        cl.setErr(new PrintWriter(err, true));
        int code = cl.execute(args);
        return new Run(code, err.toString());
    }

    private Path file(String name, String text) throws IOException {
        return Files.writeString(dir.resolve(name), text);
    }

    private static String fixtures() {
        return TestPaths.repoRoot().resolve("tools/fixtures").toString();
    }

    /** {@code dit serve} with these arguments fails with exit code 2 and one line, which is returned. */
    private static String oneLineFailure(String... args) {
        List<String> all = new ArrayList<>(List.of("serve", "--models", fixtures(), "--set", "metrics_port=-1"));
        all.addAll(List.of(args));
        Run r = dit(all.toArray(String[]::new));
        assertThat(r.code()).as("exit code; stderr: %s", r.err()).isEqualTo(2);
        assertThat(r.lines()).as("stderr").hasSize(1);
        assertThat(r.lines().get(0)).startsWith("dit serve: ");
        return r.lines().get(0);
    }

    @Test
    void anUnknownKeyInTheFileNamesTheFileTheLineTheKeyAndTheKnownKeys() throws Exception {
        Path cfg = file("dit.yaml", "port: 0\nmax_queud: 8\n");
        String line = oneLineFailure("--config", cfg.toString());
        assertThat(line).isEqualTo("dit serve: " + cfg + ", line 2: unknown key \"max_queud\" (did you mean "
                + "\"max_queued\"?); known keys: " + String.join(", ", ServerConfig.knownKeys()));
        assertThat(ServerConfig.knownKeys()).contains("port", "max_queued", "auth_tokens_file", "tls_cert")
                .isSorted();
    }

    @Test
    void badYamlNamesTheFileLineAndColumn() throws Exception {
        Path tab = file("tab.yaml", "port: 0\n\tthreads: 2\n");
        assertThat(oneLineFailure("--config", tab.toString())).isEqualTo("dit serve: " + tab + ", line 2, column 1: "
                + "not valid YAML: while scanning for the next token: found character '\\t(TAB)' that cannot start "
                + "any token. (Do not use \\t(TAB) for indentation)");
        Path quote = file("quote.yaml", "port: 0\nbackend: \"java\n");
        assertThat(oneLineFailure("--config", quote.toString())).isEqualTo("dit serve: " + quote
                + ", line 3, column 1: not valid YAML: while scanning a quoted scalar: found unexpected end of stream");
    }

    @Test
    void aValueOfTheWrongTypeOrADuplicateKeyNamesTheKeyAndPlace() throws Exception {
        Path type = file("type.yaml", "port: 0\nmax_queued: 8 threads\n");
        assertThat(oneLineFailure("--config", type.toString())).isEqualTo("dit serve: " + type
                + ", line 2, column 13: max_queued: expected a whole number, got \"8 threads\"");
        Path list = file("list.yaml", "- port: 0\n");
        assertThat(oneLineFailure("--config", list.toString())).isEqualTo("dit serve: " + list
                + ", line 1, column 1: expected a mapping of keys (key: value), as in the README's Configuration");
        Path dup = file("dup.yaml", "port: 0\nport: 1\n");
        assertThat(oneLineFailure("--config", dup.toString())).isEqualTo("dit serve: " + dup
                + ", line 2, column 5: duplicate key 'port'");
    }

    @Test
    void anEmptyFileOrOneOfCommentsOnlyMeansAllDefaults() throws Exception {
        // readValue refused a file without any token ("No content to map due to end-of-input") before the null
        // check meant to accept it could run
        ServerConfig defaults = new ServerConfig();
        for (String text : List.of("", "\n\n", "# nothing configured yet\n", "---\n", "~\n")) {
            ServerConfig c = ServerConfig.load(file("empty.yaml", text));
            assertThat(c).as("'%s'", text).usingRecursiveComparison().isEqualTo(defaults);
        }
        // and the command line takes it: the next problem it meets is the unknown --set key, not the file
        Path empty = file("empty.yaml", "");
        assertThat(oneLineFailure("--config", empty.toString(), "--set", "nope=1"))
                .startsWith("dit serve: --set nope=1: unknown key");
    }

    @Test
    void aMissingConfigFileIsOneLine() {
        Path missing = dir.resolve("missing.yaml");
        assertThat(oneLineFailure("--config", missing.toString()))
                .isEqualTo("dit serve: configuration file " + missing + " does not exist");
    }

    @Test
    void everyFileTheConfigNamesIsCheckedBeforeAnyModelLoads() throws Exception {
        Path tokens = dir.resolve("tokens");
        Path cfg = file("dit.yaml", "auth_tokens_file: " + tokens + "\n");
        assertThat(oneLineFailure("--config", cfg.toString()))
                .isEqualTo("dit serve: auth_tokens_file " + tokens + " does not exist (set in " + cfg + ")");
        Files.writeString(tokens, "# no token yet\n\n");
        assertThat(oneLineFailure("--config", cfg.toString())).isEqualTo("dit serve: auth_tokens_file " + tokens
                + " holds no token (only empty or # comment lines) (set in " + cfg + ")");
        assertThat(oneLineFailure("--set", "tls_cert=" + dir.resolve("cert.pem"), "--set",
                "tls_key=" + dir.resolve("key.pem")))
                .isEqualTo("dit serve: tls_cert " + dir.resolve("cert.pem") + " does not exist (from --set)");
        Files.writeString(dir.resolve("cert.pem"), "x");
        assertThat(oneLineFailure("--set", "tls_cert=" + dir.resolve("cert.pem"), "--set", "tls_key=" + dir))
                .isEqualTo("dit serve: tls_key " + dir + " is a folder, not a file (from --set)");
        assertThat(oneLineFailure("--set", "tls_client_ca=" + dir.resolve("ca.pem")))
                .isEqualTo("dit serve: tls_client_ca " + dir.resolve("ca.pem") + " does not exist (from --set)");
        assertThat(oneLineFailure("--set", "metrics_port=0", "--set", "metrics_token_file=" + dir.resolve("m")))
                .isEqualTo("dit serve: metrics_token_file " + dir.resolve("m") + " does not exist (from --set)");
        Path noModels = dir.resolve("no-models");
        Run r = dit("serve", "--models", noModels.toString());
        assertThat(r.code()).isEqualTo(2);
        assertThat(r.lines()).containsExactly("dit serve: models folder " + noModels + " does not exist (from --models)");
    }

    @Test
    void anUnknownOrMistypedSetKeyNamesTheSettingAndTheKnownKeys() {
        assertThat(oneLineFailure("--set", "nope=1")).isEqualTo("dit serve: --set nope=1: unknown key \"nope\"; "
                + "known keys: " + String.join(", ", ServerConfig.knownKeys()));
        assertThat(oneLineFailure("--set", "max_queud=1"))
                .startsWith("dit serve: --set max_queud=1: unknown key \"max_queud\" (did you mean \"max_queued\"?)");
        assertThat(oneLineFailure("--set", "max_queued=abc"))
                .isEqualTo("dit serve: --set max_queued=abc: max_queued: expected a whole number, got \"abc\"");
        assertThat(oneLineFailure("--set", "max_queued=-1"))
                .isEqualTo("dit serve: max_queued must be >= 0, got -1 (from --set)");
        assertThat(oneLineFailure("--threads", "-2")).isEqualTo("dit serve: threads must be >= 0, got -2 (from --threads)");
    }

    @Test
    void setStillTakesYamlValues() {
        ServerConfig c = new ServerConfig();
        c.applySettings(new java.util.LinkedHashMap<>(java.util.Map.of("max_queued", "8",
                "backend_options", "{java.path: scalar}", "metrics_host", "0.0.0.0")));
        assertThat(c.maxQueued).isEqualTo(8);
        assertThat(c.backendOptions).containsExactly(java.util.Map.entry("java.path", "scalar"));
        assertThat(c.metricsHost).isEqualTo("0.0.0.0");
        assertThat(c.originOf("max_queued")).isEqualTo("from --set");
        assertThat(c.originOf("port")).isEqualTo("the default");
    }

    @Test
    void aPortInUseNamesThePortAndTheFlagBeforeAnyModelLoads() throws Exception {
        try (ServerSocket taken = new ServerSocket()) {
            taken.bind(new InetSocketAddress(0));
            int port = taken.getLocalPort();
            assertThat(oneLineFailure("--port", String.valueOf(port))).isEqualTo("dit serve: cannot start: port "
                    + port + " is in use (from --port): stop what listens there, or choose another port with --port N "
                    + "(0 = any free port)");
            Path cfg = file("dit.yaml", "port: " + port + "\n");
            assertThat(oneLineFailure("--config", cfg.toString())).contains("port " + port + " is in use (set in "
                    + cfg + ")").contains("--port N");
        }
        try (ServerSocket taken = new ServerSocket()) {
            taken.bind(new InetSocketAddress("127.0.0.1", 0));
            int port = taken.getLocalPort();
            Run r = dit("serve", "--models", fixtures(), "--port", "0", "--set", "metrics_port=" + port);
            assertThat(r.code()).isEqualTo(2);
            assertThat(r.lines()).containsExactly("dit serve: cannot start: metrics_port " + port + " on 127.0.0.1 is "
                    + "in use (from --set): choose another with --set metrics_port=N (0 = any free port, -1 = no "
                    + "metrics endpoint)");
        }
    }

    /** The port taken between the launcher's check and the bind: the server's own bind error names it too. */
    @Test
    void aPortTakenAfterTheCheckIsNamedByTheServer() throws Exception {
        try (ServerSocket taken = new ServerSocket()) {
            taken.bind(new InetSocketAddress(0));
            Path models = Files.createDirectories(dir.resolve("models"));
            Files.createSymbolicLink(models.resolve("pixel-tiny"), Path.of(fixtures(), "pixel-tiny")); // one small model
            ServerConfig c = new ServerConfig();
            c.models = models.toString();
            c.port = taken.getLocalPort();
            c.threads = 1;
            c.metricsPort = -1;
            c.authTokensEnv = null;
            DitServer server = Guice.createInjector(Stage.PRODUCTION,
                    new ServerModule(c, Transport.serverBuilder(c))).getInstance(DitServer.class);
            try {
                assertThatThrownBy(server::start).isInstanceOf(IOException.class).hasMessage("port " + c.port
                        + " is in use: stop what listens there, or choose another port with --port N (0 = any free "
                        + "port)");
            } finally {
                server.stop();
            }
        }
    }

    @Test
    void configProblemsAreConfigExceptions() throws Exception {
        assertThatThrownBy(() -> ServerConfig.load(file("x.yaml", "nope: 1\n"))).isInstanceOf(ConfigException.class);
        ServerConfig c = new ServerConfig();
        c.maxImages = 0;
        assertThatThrownBy(c::validate).isInstanceOf(ConfigException.class)
                .hasMessage("max_images must be in 1..1024, got 0 (the default)");
    }

    /**
     * End to end: a real {@code dit serve} process (this JVM's classpath, the launcher's JVM options) with a
     * configuration that names a missing tokens file exits with 2 after printing one line, and loads no model (a
     * model load would log). The JVM itself prints "WARNING: Using incubator modules: jdk.incubator.vector" first on
     * every start of the launcher (the Vector API is an incubator module): that line is not the server's.
     */
    @Test
    void aRealServeProcessPrintsOneLineAndExitsWithTwo() throws Exception {
        Path tokens = dir.resolve("tokens");
        Path cfg = file("dit.yaml", "metrics_port: -1\nauth_tokens_file: " + tokens + "\n");
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        Path out = dir.resolve("out.txt");
        Process p = new ProcessBuilder(java, "--add-modules", "jdk.incubator.vector",
                "--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow", "-XX:MaxNewSize=64m",
                "-Xmx256m", "-cp", System.getProperty("java.class.path"), "io.ditserve.server.cli.Main", "serve",
                "--port", "0", "--models", fixtures(), "--config", cfg.toString())
                .redirectErrorStream(true).redirectOutput(out.toFile()).start();
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).isTrue();
        List<String> lines = Files.readAllLines(out, StandardCharsets.UTF_8).stream()
                .filter(l -> !l.equals("WARNING: Using incubator modules: jdk.incubator.vector")).toList();
        assertThat(lines).containsExactly(
                "dit serve: auth_tokens_file " + tokens + " does not exist (set in " + cfg + ")");
        assertThat(p.exitValue()).isEqualTo(2);
    }
}
