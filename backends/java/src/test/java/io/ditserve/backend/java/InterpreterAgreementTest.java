package io.ditserve.backend.java;

import static org.assertj.core.api.Assertions.assertThat;

import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The first request after start must give the same bytes as every later one. Before C2 compiles them, the vector
 * kernels run interpreted (the Vector API's Java fallback); afterwards as compiled vector code. This runs the DiT
 * forward pass and a VAE decode in a JVM that only interprets ({@code -Xint}) and compares the bits with the same
 * computation here after 300 warm-up runs.
 */
class InterpreterAgreementTest {

    @Test
    void interpretedAndCompiledRunsGiveTheSameBits(@TempDir Path tmp) throws Exception {
        Path repo = Fixtures.repoRoot();
        byte[] compiled = ForwardToFile.compute(repo, 300);
        Path out = tmp.resolve("interpreted.bin");
        List<String> cmd = new ArrayList<>(List.of(
                Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xint",
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                "-cp", System.getProperty("java.class.path"),
                ForwardToFile.class.getName(), repo.toString(), out.toString(), "1"));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(tmp.resolve("log.txt").toFile())
                .start();
        assertThat(p.waitFor(5, TimeUnit.MINUTES)).as("the -Xint run finished").isTrue();
        assertThat(p.exitValue()).as(Files.readString(tmp.resolve("log.txt"))).isZero();
        byte[] interpreted = Files.readAllBytes(out);
        assertThat(interpreted).hasSameSizeAs(compiled);
        int firstDiff = -1;
        for (int i = 0; i < compiled.length; i++) {
            if (compiled[i] != interpreted[i]) {
                firstDiff = i / 4;
                break;
            }
        }
        assertThat(firstDiff).as("first float that differs between -Xint and C2 (-1 = none)").isEqualTo(-1);
    }
}
