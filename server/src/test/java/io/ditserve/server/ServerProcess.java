package io.ditserve.server;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A real {@code dit serve} process on this JVM's classpath with the launcher's JVM options, for tests that need a
 * process of their own (a signal, its resident memory); its stderr goes to a log file.
 */
final class ServerProcess implements AutoCloseable {
    final Process process;
    final Path log;
    final int port;

    private ServerProcess(Process process, Path log, int port) {
        this.process = process;
        this.log = log;
        this.port = port;
    }

    /**
     * Starts {@code serve --port 0} with {@code args} after it and waits until it listens.
     *
     * @param env environment variables to set (DIT_AUTH_TOKENS and DIT_METRICS_TOKEN are removed unless given)
     */
    static ServerProcess start(Path log, String heap, Map<String, String> env, String... args) throws IOException {
        String java = Path.of(System.getProperty("java.home"), "bin", "java").toString();
        List<String> cmd = new ArrayList<>(List.of(java, "--add-modules", "jdk.incubator.vector",
                "--enable-native-access=ALL-UNNAMED", "--sun-misc-unsafe-memory-access=allow", "-XX:MaxNewSize=64m", "-Xmx" + heap, "-cp", System.getProperty("java.class.path"),
                "io.ditserve.server.cli.Main", "serve", "--port", "0"));
        cmd.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectError(log.toFile());
        pb.environment().remove("DIT_AUTH_TOKENS");
        pb.environment().remove("DIT_METRICS_TOKEN");
        pb.environment().putAll(env);
        Process p = pb.start();
        try {
            return new ServerProcess(p, log, awaitPort(p, log));
        } catch (IOException | RuntimeException | Error e) {
            p.destroyForcibly();
            throw e;
        }
    }

    private static int awaitPort(Process server, Path log) throws IOException {
        BufferedReader out = new BufferedReader(new InputStreamReader(server.getInputStream(), StandardCharsets.UTF_8));
        Pattern p = Pattern.compile("listening on port (\\d+)");
        for (String line; (line = out.readLine()) != null; ) {
            Matcher m = p.matcher(line);
            if (m.find()) {
                Thread drain = new Thread(() -> {
                    try {
                        while (out.readLine() != null) {
                            // keep the pipe from filling
                        }
                    } catch (IOException e) {
                        // the process has gone
                    }
                }, "server-stdout");
                drain.setDaemon(true);
                drain.start();
                return Integer.parseInt(m.group(1));
            }
        }
        throw new AssertionError("the server exited before listening:\n" + Files.readString(log));
    }

    /** A line of /proc/PID/status in bytes, e.g. {@code VmRSS} (resident now) or {@code VmHWM} (its peak). */
    long status(String field) throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc", Long.toString(process.pid()), "status"))) {
            if (line.startsWith(field + ":")) {
                return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
            }
        }
        throw new IllegalStateException(field + " not in /proc/" + process.pid() + "/status");
    }

    /**
     * A full garbage collection in the process ({@code jcmd PID GC.run}), after which G1 gives unused heap back to
     * the system: what stays resident is what the process really holds, not the heap's high-water mark.
     */
    void collectGarbage() throws IOException, InterruptedException {
        String jcmd = Path.of(System.getProperty("java.home"), "bin", "jcmd").toString();
        Process p = new ProcessBuilder(jcmd, Long.toString(process.pid()), "GC.run").redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (p.waitFor() != 0) {
            throw new IllegalStateException("jcmd GC.run failed: " + out);
        }
    }

    @Override
    public void close() {
        process.destroyForcibly();
    }
}
