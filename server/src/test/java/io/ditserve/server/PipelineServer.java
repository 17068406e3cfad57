package io.ditserve.server;

import io.ditserve.client.DitClient;
import io.ditserve.server.config.ServerConfig;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * The real server of the text-to-image tests, as a JUnit extension that a test class registers on a static field
 * ({@code @RegisterExtension}). Before the class's tests: a temporary models folder where each of the named fixture
 * pipelines of tools/pipeline-fixtures is linked, a -full one also without its T5 ({@link TextToImageTest#withoutT5},
 * suffix {@link TextToImageTest#NO_T5}), what the class adds, and the server on it ({@link TestServers#inProcess}).
 * After them: the server stopped and the folder removed (its links, not what they point to).
 */
final class PipelineServer implements BeforeAllCallback, AfterAllCallback {
    /** What a test class adds to the configuration ({@link TestServers#config}) and the models folder. */
    interface Setup {
        void apply(ServerConfig c, Path models) throws Exception;
    }

    private final List<String> fixtures;
    private final Setup setup;
    private Path models;
    private TestServers.Running running;

    PipelineServer(List<String> fixtures, Setup setup) {
        this.fixtures = List.copyOf(fixtures);
        this.setup = setup;
    }

    @Override
    public void beforeAll(ExtensionContext context) throws Exception {
        models = Files.createTempDirectory("pipelines");
        for (String m : fixtures) {
            Files.createSymbolicLink(models.resolve(m), TextToImageTest.fixture(m));
            if (m.endsWith("-full")) {
                TextToImageTest.withoutT5(TextToImageTest.fixture(m), models.resolve(m + TextToImageTest.NO_T5));
            }
        }
        ServerConfig c = TestServers.config();
        setup.apply(c, models);
        c.models = models.toString();
        running = TestServers.inProcess(c);
    }

    @Override
    public void afterAll(ExtensionContext context) throws Exception {
        try {
            if (running != null) {
                running.close();
            }
        } finally {
            if (models != null) {
                try (Stream<Path> all = Files.walk(models)) { // links are not followed: only they go
                    for (Path p : all.sorted(Comparator.reverseOrder()).toList()) {
                        Files.delete(p);
                    }
                }
            }
        }
    }

    DitClient client() {
        return running.client();
    }

    DitServer server() {
        return running.server();
    }
}
