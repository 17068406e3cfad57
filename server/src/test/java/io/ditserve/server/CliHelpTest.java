package io.ditserve.server;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.PreviewDecoder;
import io.ditserve.proto.v1.Sampler;
import io.ditserve.server.cli.Main;
import io.ditserve.server.model.BackendRegistry;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;
import picocli.CommandLine.Model.OptionSpec;

/**
 * The README's usage lines ("Use") and the command line agree: every option of {@code serve}, {@code models} and
 * {@code generate} (picocli's usage help, {@code --help} and {@code --version} aside) is in the README's lines for
 * that command and every option there exists; every list of choices written there ({@code --backend java|onnx|cuda},
 * {@code --sampler ...}, {@code --format ...}, {@code --preview-decoder ...}) is exactly what the server knows and
 * is named in the option's help. And {@code ./dit bench --help} prints help without making the benchmark model.
 */
class CliHelpTest {
    private static final Pattern OPTION = Pattern.compile("--[a-z][a-z0-9-]*");
    private static final Pattern CHOICES = Pattern.compile("(--[a-z][a-z0-9-]*)[ =]([a-z0-9-]+(?:\\|[a-z0-9-]+)+)");

    /** The README's "Use" code block, as command → its lines (a command's lines start with ./dit NAME). */
    static Map<String, List<String>> readmeUsage() throws IOException {
        String readme = Files.readString(TestPaths.repoRoot().resolve("README.md"), StandardCharsets.UTF_8);
        int section = readme.indexOf("\n## Use\n");
        assertThat(section).as("README has a \"## Use\" section").isPositive();
        int open = readme.indexOf("```\n", section);
        int close = readme.indexOf("\n```", open + 4);
        Map<String, List<String>> usage = new LinkedHashMap<>();
        List<String> current = null;
        for (String line : readme.substring(open + 4, close).split("\n")) {
            String text = line.replaceAll("\\s+#.*$", ""); // comments
            Matcher m = Pattern.compile("^\\./dit ([a-z]+)").matcher(text);
            if (m.find()) {
                current = usage.computeIfAbsent(m.group(1), k -> new ArrayList<>());
                current.add(text.substring(m.end()));
            } else if (line.startsWith(" ") && current != null) {
                current.add(text); // continuation
            } else {
                current = null; // e.g. ./dit COMMAND --help
            }
        }
        return usage;
    }

    private static Set<String> options(List<String> lines) {
        Set<String> found = new TreeSet<>();
        for (String line : lines) {
            OPTION.matcher(line).results().forEach(r -> found.add(r.group()));
        }
        return found;
    }

    private static Set<String> cliOptions(CommandLine cmd) {
        return cmd.getCommandSpec().options().stream().filter(o -> !o.usageHelp() && !o.versionHelp())
                .map(OptionSpec::longestName).collect(Collectors.toCollection(TreeSet::new));
    }

    /** What the server accepts for each option the README gives a list of choices for. */
    private static Map<String, Set<String>> knownChoices() {
        return Map.of(
                "--backend", productionBackends(),
                "--sampler", enumNames(Sampler.values(), "SAMPLER_"),
                "--format", enumNames(OutputFormat.values(), "OUTPUT_FORMAT_"),
                "--preview-decoder", enumNames(PreviewDecoder.values(), "PREVIEW_DECODER_"));
    }

    /** The registered backends, less the test classpath's own ({@link FaultyBackendProvider}, the emulated cuda). */
    private static Set<String> productionBackends() {
        Set<String> names = new TreeSet<>(new BackendRegistry().names());
        names.remove(new FaultyBackendProvider().name());
        names.remove(io.ditserve.backend.cuda.EmulatedCudaProvider.NAME);
        return names;
    }

    private static Set<String> enumNames(Enum<?>[] values, String prefix) {
        return Arrays.stream(values).map(Enum::name)
                .filter(n -> !n.endsWith("UNSPECIFIED") && !n.equals("UNRECOGNIZED"))
                .map(n -> n.substring(prefix.length()).toLowerCase(Locale.ROOT).replace('_', '-'))
                .collect(Collectors.toCollection(TreeSet::new));
    }

    @Test
    void theReadmeUsageLinesNameEveryOptionOfTheCommandLineAndNoOther() throws Exception {
        Map<String, List<String>> usage = readmeUsage();
        assertThat(usage).containsKeys("serve", "models", "generate");
        CommandLine dit = Main.commandLine();
        for (var e : usage.entrySet()) {
            CommandLine cmd = dit.getSubcommands().get(e.getKey());
            assertThat(cmd).as("README: ./dit %s is a command", e.getKey()).isNotNull();
            assertThat(options(e.getValue())).as("README's options of ./dit %s against its --help", e.getKey())
                    .isEqualTo(cliOptions(cmd));
        }
    }

    @Test
    void theReadmeListsOfChoicesAreWhatTheServerKnowsAndTheHelpSays() throws Exception {
        Map<String, List<String>> usage = readmeUsage();
        Map<String, Set<String>> known = knownChoices();
        CommandLine dit = Main.commandLine();
        int lists = 0;
        for (var e : usage.entrySet()) {
            CommandLine cmd = dit.getSubcommands().get(e.getKey());
            for (String line : e.getValue()) {
                Matcher m = CHOICES.matcher(line);
                while (m.find()) {
                    lists++;
                    String option = m.group(1);
                    Set<String> written = new TreeSet<>(List.of(m.group(2).split("\\|")));
                    assertThat(known).as("the test knows the choices of %s", option).containsKey(option);
                    assertThat(written).as("README: ./dit %s %s", e.getKey(), option).isEqualTo(known.get(option));
                    String help = String.join(" ", cmd.getCommandSpec().findOption(option).description());
                    for (String choice : written) {
                        assertThat(help).as("./dit %s --help for %s names %s", e.getKey(), option, choice)
                                .contains(choice);
                    }
                }
            }
        }
        assertThat(lists).as("lists of choices checked").isGreaterThanOrEqualTo(4);
        assertThat(known.get("--backend")).contains("java", "onnx", "cuda");
    }

    // ---- the launcher

    private record Launched(int code, String out, String err) {}

    /**
     * Runs a copy of the {@code dit} launcher in {@code root} with a stand-in {@code java} that only prints its
     * arguments (and passes the launcher's JDK check), and no tools/ folder: making the benchmark model would fail.
     */
    private static Launched launch(Path root, String... args) throws Exception {
        Files.copy(TestPaths.repoRoot().resolve("dit"), root.resolve("dit"),
                java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        Files.createDirectories(root.resolve("server/target/lib"));
        Path java = Files.createDirectories(root.resolve("jdk/bin")).resolve("java");
        Files.writeString(java, """
                #!/bin/sh
                case "$*" in *-XshowSettings:properties*) echo "    java.specification.version = 25" >&2; exit 0;; esac
                echo "java $*"
                """);
        Files.setPosixFilePermissions(java, PosixFilePermissions.fromString("rwxr-xr-x"));
        List<String> command = new ArrayList<>(List.of("bash", root.resolve("dit").toString()));
        command.addAll(List.of(args));
        ProcessBuilder pb = new ProcessBuilder(command).directory(root.toFile())
                .redirectOutput(root.resolve("out.txt").toFile()).redirectError(root.resolve("err.txt").toFile());
        pb.environment().put("JAVA_HOME", root.resolve("jdk").toString());
        pb.environment().put("DIT_SKIP_BUILD", "1");
        Process p = pb.start();
        assertThat(p.waitFor(60, TimeUnit.SECONDS)).isTrue();
        return new Launched(p.exitValue(), Files.readString(root.resolve("out.txt")),
                Files.readString(root.resolve("err.txt")));
    }

    @Test
    void benchHelpOnlyPrintsHelp(@TempDir Path root) throws Exception {
        for (String help : List.of("--help", "-h", "--version")) {
            Launched r = launch(root, "bench", help);
            assertThat(r.code()).as("exit code; stderr: %s", r.err()).isZero();
            assertThat(r.err()).doesNotContain("generating");
            assertThat(r.out().strip()).startsWith("java ").endsWith("io.ditserve.server.cli.Main bench " + help);
            assertThat(root.resolve("runs")).doesNotExist();
        }
        Launched own = launch(root, "bench", "--model", "models/fashion-dit");
        assertThat(own.err()).doesNotContain("generating");
        assertThat(own.out()).contains("Main bench --model models/fashion-dit");
        // without help the benchmark model is made first (here it fails: this copy has no tools/)
        Launched run = launch(root, "bench");
        assertThat(run.err()).contains("dit: generating a random-weight DiT-S/2 model");
        assertThat(run.code()).isNotZero();
    }

    @Test
    void theLauncherHelpNamesTheBackendsTheServerKnows(@TempDir Path root) throws Exception {
        Launched r = launch(root, "--help");
        assertThat(r.code()).isZero();
        assertThat(r.out()).contains("./dit serve").contains("./dit generate").contains("./dit COMMAND --help")
                .contains("--backend " + String.join("|", List.of("java", "onnx", "cuda")));
        assertThat(productionBackends()).containsExactlyInAnyOrder("java", "onnx", "cuda");
    }
}
