package io.ditserve.server.cli;

import com.google.inject.CreationException;
import com.google.inject.Guice;
import com.google.inject.Injector;
import com.google.inject.ProvisionException;
import com.google.inject.Stage;
import com.google.inject.spi.Message;
import io.ditserve.client.ClientCommands;
import io.ditserve.client.DitClient;
import io.ditserve.client.GenerationWriter;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.server.DitServer;
import io.ditserve.server.ServerModule;
import io.ditserve.server.config.ConfigException;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.security.Transport;
import io.grpc.ServerBuilder;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/** The {@code ./dit} command line. */
@Command(name = "dit", mixinStandardHelpOptions = true, version = "dit 0.1.0",
        description = "DiT streaming inference server and client.",
        subcommands = {Main.Serve.class, Main.Demo.class, ClientCommands.Generate.class, ClientCommands.Models.class,
            Bench.class})
public final class Main {

    public static void main(String[] args) {
        System.exit(commandLine().execute(args));
    }

    /**
     * The command line, with the one place where configuration and start-up problems are reported: a
     * {@link ConfigException} or {@link StartupException} from any command prints one line, "dit COMMAND: message"
     * (no stack trace), and exits with code 2, as picocli does for a bad flag.
     */
    public static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Main());
        cl.setExecutionExceptionHandler((e, cmd, parsed) -> {
            if (e instanceof ConfigException || e instanceof StartupException) {
                cmd.getErr().println("dit " + cmd.getCommandName() + ": "
                        + (e instanceof StartupException ? "cannot start: " : "") + e.getMessage());
                cmd.getErr().flush();
                return 2;
            }
            throw e;
        });
        return cl;
    }

    /** Options shared by serve and demo. */
    static class ServerOptions {
        @Option(names = "--config", description = "YAML configuration file (flags override it)")
        Path config;
        @Option(names = "--backend", description = "compute backend for all models: java, onnx, cuda (default java)")
        String backend;
        @Option(names = "--models", description = "model folder (default: models)")
        Path models;
        @Option(names = "--threads", description = "compute threads per backend (default: all cores)")
        Integer threads;
        @Option(names = "--set", description = "any configuration key, e.g. --set max_queued=8", split = ",")
        Map<String, String> settings;
        @Option(names = "--web-port", description = "HTTP port of gRPC-Web, the page and the OpenAI Images API "
                + "(default: off; 0 = any free port)")
        Integer webPort;

        /**
         * The configuration file, then {@code --set}, then the flags; then the ranges and every file the
         * configuration names are checked, so that all of this fails (with a {@link ConfigException}) before any
         * model loads.
         */
        ServerConfig resolve(Integer port) {
            ServerConfig c = config != null ? ServerConfig.load(config) : new ServerConfig();
            if (settings != null) {
                c.applySettings(settings);
            }
            if (backend != null) {
                c.backend = backend;
                c.markOrigin("backend", "from --backend");
            }
            if (models != null) {
                c.models = models.toString();
                c.markOrigin("models", "from --models");
            }
            if (threads != null) {
                c.threads = threads;
                c.markOrigin("threads", "from --threads");
            }
            if (port != null) {
                c.port = port;
                c.markOrigin("port", "from --port");
            }
            if (webPort != null) {
                c.webPort = webPort;
                c.markOrigin("web_port", "from --web-port");
            }
            c.validate();
            c.checkFiles();
            return c;
        }
    }

    /** Builds and starts a server, or explains in one message why it cannot. */
    static DitServer startServer(ServerConfig c) throws Exception {
        // before any model loads: a port in use fails now, not after minutes of loading weights
        checkPortFree(c.port, null, "port " + c.port, c.originOf("port"),
                "stop what listens there, or choose another port with --port N (0 = any free port)");
        if (c.metricsPort > 0) {
            checkPortFree(c.metricsPort, c.metricsHost, "metrics_port " + c.metricsPort + " on " + c.metricsHost,
                    c.originOf("metrics_port"),
                    "choose another with --set metrics_port=N (0 = any free port, -1 = no metrics endpoint)");
        }
        if (c.webPort > 0) {
            checkPortFree(c.webPort, null, "web_port " + c.webPort, c.originOf("web_port"),
                    "choose another with --web-port N (0 = any free port)");
        }
        ServerBuilder<?> builder;
        try {
            builder = Transport.serverBuilder(c);
        } catch (java.io.IOException e) {
            throw new StartupException(e.getMessage(), e);
        }
        Injector injector;
        try {
            injector = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, builder));
        } catch (CreationException e) {
            throw new StartupException(messages(e.getErrorMessages()), e);
        } catch (ProvisionException e) {
            throw new StartupException(messages(e.getErrorMessages()), e);
        }
        DitServer server = injector.getInstance(DitServer.class);
        try {
            return server.start();
        } catch (java.io.IOException e) {
            // e.g. the port was taken after the check above (DitServer names the port and the flag)
            server.stop();
            throw new StartupException(e.getMessage(), e);
        }
    }

    /**
     * Binds and releases {@code port} (on {@code host}, or every address when null); when that fails, the message
     * names {@code what}, why, where its value came from and the advice.
     */
    private static void checkPortFree(int port, String host, String what, String origin, String advice)
            throws StartupException {
        if (port <= 0) {
            return;
        }
        try (java.net.ServerSocket s = new java.net.ServerSocket()) {
            s.setReuseAddress(true); // like Netty: a port of a closed connection (TIME_WAIT) is free
            s.bind(host == null ? new java.net.InetSocketAddress(port) : new java.net.InetSocketAddress(host, port));
        } catch (java.net.BindException e) {
            // "Address already in use", or e.g. "Permission denied" below 1024 without the privilege
            String why = e.getMessage() != null && e.getMessage().contains("in use") ? " is in use"
                    : ": cannot listen there: " + e.getMessage();
            throw new StartupException(what + why + " (" + origin + "): " + advice, e);
        } catch (java.io.IOException e) {
            // another problem (e.g. an unknown host): left to the real bind, which reports it
        }
    }

    private static String messages(java.util.Collection<Message> errors) {
        // Guice reports one failing provider once per dependent binding: keep each distinct reason once
        java.util.Set<String> reasons = new java.util.LinkedHashSet<>();
        for (Message m : errors) {
            Throwable cause = m.getCause();
            while (cause != null && cause.getCause() != null && cause.getMessage() == null) {
                cause = cause.getCause();
            }
            reasons.add(cause != null && cause.getMessage() != null ? cause.getMessage() : m.getMessage());
        }
        return String.join("; ", reasons);
    }

    /** A start-up failure with a message for the operator. */
    static final class StartupException extends Exception {
        StartupException(String message, Throwable cause) {
            super(message == null ? "" : message.strip().replaceAll("\\s*\\R\\s*", " "), cause); // one line
        }
    }

    @Command(name = "serve", mixinStandardHelpOptions = true, description = "Run the gRPC server.")
    static final class Serve implements Callable<Integer> {
        @CommandLine.Mixin
        ServerOptions options = new ServerOptions();
        @Option(names = "--port", description = "gRPC port (default 50051; 0 = any free port)")
        Integer port;

        @Override
        public Integer call() throws Exception {
            // a ConfigException or StartupException ends the command in commandLine()'s handler: one line, exit 2
            DitServer server = startServer(options.resolve(port));
            Runtime.getRuntime().addShutdownHook(new Thread(server::stop, "dit-shutdown"));
            // SIGTERM (kill, docker/podman stop, Kubernetes): drain, then exit 0. Left to the JVM, SIGTERM runs the
            // hook above and exits with 143 even after a complete drain, which container runtimes and systemd
            // report as a failure; the hook stays for SIGINT, SIGHUP and System.exit.
            onSigterm(server::stop);
            System.out.println("dit server listening on port " + server.port());
            if (server.webPort() > 0) {
                System.out.println("dit web: page, gRPC-Web and OpenAI API on http://localhost:" + server.webPort() + "/");
            }
            server.awaitTermination();
            server.stop(); // stop is synchronized: this waits for the drain started by SIGTERM to finish
            return 0;
        }

        private static void onSigterm(Runnable drain) {
            try {
                sun.misc.Signal.handle(new sun.misc.Signal("TERM"), signal -> drain.run());
            } catch (IllegalArgumentException e) {
                // SIGTERM cannot be handled here (-Xrs, or not a POSIX platform): the shutdown hook drains instead
            }
        }
    }

    private static boolean hasDecoder(ModelInfo model, String role) {
        return model.getDecodersList().stream().anyMatch(d -> d.getRole().equals(role));
    }

    /** What the demo asks of a text-to-image model: prompts of the bundled model's grammar (docs/SCENE_GRAMMAR.md). */
    static final java.util.List<String> DEMO_PROMPTS = java.util.List.of(
            "a red cube left of a blue sphere",
            "a green ball above a yellow pyramid",
            "a white triangle on the left",
            "a blue box below a red circle",
            "a yellow square to the right of a green triangle",
            "a red ball");

    @Command(name = "demo", mixinStandardHelpOptions = true,
            description = "Start a server with the bundled models on a free port, generate one image per class of "
                    + "each with previews, write a contact sheet, print where they are, stop the server.")
    static final class Demo implements Callable<Integer> {
        @CommandLine.Mixin
        ServerOptions options = new ServerOptions();
        @Option(names = "--out", defaultValue = "demo-out", description = "output folder (default ${DEFAULT-VALUE})")
        Path out;
        @Option(names = "--seed", defaultValue = "1", description = "base seed (default ${DEFAULT-VALUE})")
        long seed;

        @Override
        public Integer call() throws Exception {
            ServerConfig c = options.resolve(0);
            c.metricsPort = -1;
            if (c.webPort < 0) {
                c.webPort = 0; // web on in the demo, on a free port
            }
            DitServer server = startServer(c); // problems: one line and exit 2 (commandLine())
            System.out.println("demo: watch it at http://localhost:" + server.webPort() + "/");
            try (DitClient client = DitClient.connect("localhost:" + server.port())) {
                GenerationWriter writer = new GenerationWriter(System.out, 4);
                java.util.List<ContactSheet.Row> rows = new java.util.ArrayList<>();
                for (ModelInfo model : client.listModels()) {
                    System.out.printf("demo: model %s (%s, %d×%d px) on backend %s, port %d%n",
                            model.getName(), model.getConditioning().equals("text") ? DEMO_PROMPTS.size() + " prompts"
                                    : model.getClassesCount() + " classes", model.getOutputImageSize(),
                            model.getOutputImageSize(), model.getBackend(), server.port());
                    int steps = model.getDefaults().getSteps();
                    java.util.List<Path> finals = new java.util.ArrayList<>();
                    java.util.List<String> names = new java.util.ArrayList<>();
                    boolean text = model.getConditioning().equals("text");
                    java.util.List<String> labels = text ? DEMO_PROMPTS
                            : model.getClassesList().stream().map(ci -> ci.getName()).toList();
                    for (int i = 0; i < labels.size(); i++) {
                        GenerateRequest.Builder req = GenerateRequest.newBuilder().setModel(model.getName())
                                .setSeed(seed + i).setPreviewInterval(Math.max(1, steps / 10));
                        if (text) {
                            req.setPrompt(labels.get(i));
                        } else {
                            req.setClassId(model.getClasses(i).getId());
                        }
                        if (hasDecoder(model, "vae") && !hasDecoder(model, "taesd")) {
                            // a small bundled VAE decodes previews in milliseconds: show images, not latents
                            req.setPreviewDecoder(io.ditserve.proto.v1.PreviewDecoder.PREVIEW_DECODER_FULL);
                        }
                        finals.add(writer.run(client, req.build(), model, out, 0).images().get(0));
                        names.add(labels.get(i));
                    }
                    rows.add(new ContactSheet.Row(model.getName(), finals, names));
                }
                Path sheet = out.resolve("demo-sheet.png");
                ContactSheet.write(rows, 112, sheet);
                System.out.println("demo: one image per class of each model in " + sheet.toAbsolutePath());
                System.out.println("demo: images, preview frames and animations are in " + out.toAbsolutePath());
            } finally {
                server.stop();
            }
            return 0;
        }
    }
}
