package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import ch.qos.logback.classic.Level;
import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.core.read.ListAppender;
import com.google.inject.Guice;
import com.google.inject.ProvisionException;
import com.google.inject.Stage;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.model.ModelRepository;
import io.grpc.inprocess.InProcessServerBuilder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What the model folder serves, and how its problems are reported at start-up. */
class ModelFolderTest {
    @TempDir
    Path root;
    private ListAppender<ILoggingEvent> logs;
    private ch.qos.logback.classic.Logger rootLogger;

    @BeforeEach
    void captureLogs() {
        rootLogger = (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger(
                org.slf4j.Logger.ROOT_LOGGER_NAME);
        logs = new ListAppender<>();
        logs.start();
        rootLogger.addAppender(logs);
    }

    @AfterEach
    void releaseLogs() {
        rootLogger.detachAppender(logs);
    }

    private Path copyModel(String fixture, String as) throws Exception {
        Path src = TestPaths.fixture(fixture);
        Path dst = root.resolve(as);
        Files.createDirectories(dst);
        for (String f : List.of("config.json", "weights.safetensors")) {
            Files.copy(src.resolve(f), dst.resolve(f));
        }
        return dst;
    }

    private ServerConfig config() {
        ServerConfig c = new ServerConfig();
        c.models = root.toString();
        c.threads = 1;
        c.metricsPort = -1;
        c.authTokensEnv = null;
        return c;
    }

    private DitServer start() {
        return Guice.createInjector(Stage.PRODUCTION, new ServerModule(config(),
                InProcessServerBuilder.forName(InProcessServerBuilder.generateName()))).getInstance(DitServer.class);
    }

    private String startupError() {
        try {
            start().stop();
        } catch (ProvisionException | com.google.inject.CreationException e) {
            StringBuilder sb = new StringBuilder();
            for (Throwable t = e; t != null; t = t.getCause()) {
                sb.append(t.getMessage()).append('\n');
            }
            return sb.toString();
        }
        throw new AssertionError("server started although the model folder is bad");
    }

    private List<String> messages(Level atLeast) {
        return logs.list.stream().filter(e -> e.getLevel().isGreaterOrEqual(atLeast))
                .map(ILoggingEvent::getFormattedMessage).toList();
    }

    @Test
    void hiddenFoldersAreNotServedAndAFolderWithoutConfigIsReported() throws Exception {
        copyModel("pixel-tiny", "visible");
        copyModel("pixel-tiny", ".hidden");
        Files.createDirectories(root.resolve("no-config"));
        Files.copy(TestPaths.fixture("pixel-tiny").resolve("weights.safetensors"),
                root.resolve("no-config/weights.safetensors"));
        Files.writeString(root.resolve("README.md"), "plain files are not models\n");
        var injector = Guice.createInjector(Stage.PRODUCTION, new ServerModule(config(),
                InProcessServerBuilder.forName(InProcessServerBuilder.generateName())));
        try {
            assertThat(injector.getInstance(ModelRepository.class).names()).containsExactly("visible");
        } finally {
            injector.getInstance(DitServer.class).stop();
        }
        assertThat(messages(Level.WARN)).anySatisfy(m -> assertThat(m).contains("no-config").contains("config.json"));
        assertThat(messages(Level.INFO)).anySatisfy(m -> assertThat(m).contains(".hidden").contains("not served"));
        assertThat(String.join("\n", messages(Level.INFO))).doesNotContain("README");
    }

    @Test
    void decoderFoldersBesideTheModelsStaySilent() throws Exception {
        copyModel("pixel-tiny", "pixel");
        Path vae = root.resolve("shared-vae");
        Files.createDirectories(vae);
        Files.copy(TestPaths.fixture("vae-small").resolve("config.json"), vae.resolve("config.json"));
        start().stop();
        assertThat(messages(Level.WARN)).noneSatisfy(m -> assertThat(m).contains("shared-vae"));
    }

    @Test
    void aWeightsFileThatIsNotARegularFileIsReportedAsSuch() throws Exception {
        Path m = copyModel("pixel-tiny", "linked");
        Files.delete(m.resolve("weights.safetensors"));
        Files.createSymbolicLink(m.resolve("weights.safetensors"), Path.of("/dev/zero"));
        assertThat(startupError()).contains("weights.safetensors").contains("not a regular file")
                .contains("/dev/zero").doesNotContain("missing");

        Files.delete(m.resolve("weights.safetensors"));
        Files.createDirectories(m.resolve("weights.safetensors"));
        assertThat(startupError()).contains("weights.safetensors").contains("not a regular file");

        Files.delete(m.resolve("weights.safetensors"));
        assertThat(startupError()).contains("weights.safetensors").contains("missing");
    }

    @Test
    void whenOneModelFailsTheOthersAreLoadedOnlyOnce() throws Exception {
        copyModel("pixel-tiny", "a-good");
        copyModel("latent-tiny", "b-good");
        Path bad = copyModel("pixel-tiny", "c-broken");
        byte[] w = Files.readAllBytes(bad.resolve("weights.safetensors"));
        Files.write(bad.resolve("weights.safetensors"), java.util.Arrays.copyOf(w, w.length / 2));
        assertThat(startupError()).contains("c-broken").contains("truncated");
        assertThat(messages(Level.INFO).stream().filter(s -> s.startsWith("loaded model a-good"))).hasSize(1);
        assertThat(messages(Level.INFO).stream().filter(s -> s.startsWith("loaded model b-good"))).hasSize(1);
    }
}
