package io.ditserve.server;

import java.nio.file.Files;
import java.nio.file.Path;

/** Locates the repository (fixtures, bundled model) from a test. */
public final class TestPaths {
    private TestPaths() {}

    public static Path repoRoot() {
        String prop = System.getProperty("repo.root");
        if (prop != null && Files.isDirectory(Path.of(prop, "tools", "fixtures"))) {
            return Path.of(prop);
        }
        Path p = Path.of("").toAbsolutePath();
        while (p != null && !Files.isDirectory(p.resolve("tools/fixtures"))) {
            p = p.getParent();
        }
        if (p == null) {
            throw new IllegalStateException("cannot find the repository root (tools/fixtures) from " + Path.of("").toAbsolutePath());
        }
        return p;
    }

    public static Path fixture(String name) {
        return repoRoot().resolve("tools/fixtures").resolve(name);
    }
}
