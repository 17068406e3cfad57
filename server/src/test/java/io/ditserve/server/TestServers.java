package io.ditserve.server;

import com.google.inject.Guice;
import com.google.inject.Stage;
import io.ditserve.client.DitClient;
import io.ditserve.server.config.ServerConfig;
import io.grpc.ManagedChannel;
import io.grpc.ServerInterceptor;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;

/** The real server (Guice in PRODUCTION stage, engine, backends) for tests, on an in-process transport. */
public final class TestServers {
    private TestServers() {}

    /** The models that tools/fixtures serves: pixel-tiny and latent-tiny (DiT), sit-tiny and repa-tiny (flow). */
    public static final int FIXTURE_MODELS = 4;

    /** The fixture models, 2 threads, a free metrics port, a 1 s drain, and no tokens from the environment. */
    public static ServerConfig config() {
        ServerConfig c = new ServerConfig();
        c.models = TestPaths.repoRoot().resolve("tools/fixtures").toString();
        c.threads = 2;
        c.shutdownGraceSeconds = 1;
        c.metricsPort = 0;
        c.authTokensEnv = null;
        c.metricsTokenEnv = null;
        return c;
    }

    /** A started server and an in-process channel to it; closing stops both. */
    public record Running(DitServer server, ManagedChannel channel) implements AutoCloseable {
        public DitClient client() {
            return new DitClient(channel);
        }

        @Override
        public void close() {
            channel.shutdownNow();
            server.stop();
        }
    }

    /** A server on a free port of the real (Netty) transport, from {@link io.ditserve.server.security.Transport}, and a
     * plaintext channel to it. */
    public static Running network(ServerConfig c) throws Exception {
        c.port = 0;
        DitServer server = Guice.createInjector(Stage.PRODUCTION,
                new ServerModule(c, io.ditserve.server.security.Transport.serverBuilder(c))).getInstance(DitServer.class)
                .start();
        return new Running(server, channelTo(server));
    }

    /** A new plaintext channel (its own connection) to a server started by {@link #network}. */
    public static ManagedChannel channelTo(DitServer server) {
        return io.grpc.Grpc.newChannelBuilder("localhost:" + server.port(), io.grpc.InsecureChannelCredentials.create())
                .build();
    }

    /** The same, with {@code interceptors} around every call (outermost, e.g. to see what the server sends). */
    public static Running inProcess(ServerConfig c, ServerInterceptor... interceptors) throws Exception {
        String name = InProcessServerBuilder.generateName();
        InProcessServerBuilder builder = InProcessServerBuilder.forName(name);
        for (ServerInterceptor i : interceptors) {
            builder.intercept(i);
        }
        DitServer server = Guice.createInjector(Stage.PRODUCTION, new ServerModule(c, builder))
                .getInstance(DitServer.class).start();
        return new Running(server, InProcessChannelBuilder.forName(name).build());
    }
}
