package io.ditserve.backend.cuda;

import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.stream.Stream;

/**
 * Finds and opens the three native libraries of the backend: the CUDA driver ({@code libcuda.so.1}), cuBLAS and
 * NVRTC. Nothing here falls back silently: what cannot be found or loaded is named, with where it was looked for.
 *
 * <p>Search order, per library: each file name the library may have (newest ABI first) in each directory of
 * {@link #searchDirs}, then each name through the system loader (LD_LIBRARY_PATH, the ld.so cache). A library found
 * in a directory has its companion ({@code libcublasLt} for cuBLAS, {@code libnvrtc-builtins} for NVRTC) opened
 * from the same directory first, so that it loads even when that directory is not on the loader's path.
 */
final class CudaLibraries {
    static final String LIB_PATH_OPTION = "cuda.lib_path";
    static final String LIB_PATH_ENV = "DIT_CUDA_LIB_PATH";

    /** Fixed directories searched after the configured ones. */
    static final List<String> FIXED_DIRS = List.of(
            "/usr/local/cuda/lib64",
            "/usr/local/cuda/targets/x86_64-linux/lib",
            "/usr/local/nvidia/lib64",
            "/usr/lib/x86_64-linux-gnu");
    /**
     * Python wheels of the CUDA libraries (nvidia/cublas/lib, nvidia/cuda_nvrtc/lib, nvidia/cu13/lib, ...) in the
     * standard system locations; a virtual environment elsewhere is named with {@code cuda.lib_path} or
     * {@code DIT_CUDA_LIB_PATH} (tools/gpu/run_cuda_checks.sh finds the libraries and sets it).
     */
    static final List<String> GLOB_DIRS = List.of(
            "/usr/local/lib/python3*/dist-packages/nvidia/*/lib",
            "/usr/local/lib/python3*/site-packages/nvidia/*/lib",
            "/usr/lib/python3/dist-packages/nvidia/*/lib");

    /** A library the backend needs, the file names it may have, and its companion's base name (or null). */
    enum Lib {
        DRIVER("the CUDA driver library", List.of("libcuda.so.1", "libcuda.so"), null,
                "is an NVIDIA driver installed, and is this a machine with an NVIDIA GPU?"),
        CUBLAS("cuBLAS", List.of("libcublas.so.13", "libcublas.so.12", "libcublas.so"), "libcublasLt",
                "install the CUDA toolkit's cuBLAS or the Python wheel nvidia-cublas"),
        NVRTC("NVRTC", List.of("libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so.11.2", "libnvrtc.so"),
                "libnvrtc-builtins", "install the CUDA toolkit's NVRTC or the Python wheel nvidia-cuda-nvrtc");

        final String title;
        final List<String> fileNames;
        final String companion;
        final String hint;

        Lib(String title, List<String> fileNames, String companion, String hint) {
            this.title = title;
            this.fileNames = fileNames;
            this.companion = companion;
            this.hint = hint;
        }
    }

    /** The three libraries, opened. */
    record Loaded(NativeLibrary driver, NativeLibrary cublas, NativeLibrary nvrtc) {}

    private CudaLibraries() {}

    /**
     * The directories to search, in order: {@code cuda.lib_path} (colon-separated), {@code DIT_CUDA_LIB_PATH},
     * {@code LD_LIBRARY_PATH}, {@link #FIXED_DIRS}, then the existing matches of {@link #GLOB_DIRS}, without
     * duplicates. Absolute fixed and glob paths are resolved under {@code root} ("/" except in tests).
     */
    static List<Path> searchDirs(String optionValue, Map<String, String> env, Path root) {
        Set<Path> dirs = new LinkedHashSet<>();
        for (String list : new String[] {optionValue, env.get(LIB_PATH_ENV), env.get("LD_LIBRARY_PATH")}) {
            if (list != null) {
                for (String entry : list.split(":")) {
                    if (!entry.isBlank()) {
                        dirs.add(Path.of(entry.trim()));
                    }
                }
            }
        }
        for (String dir : FIXED_DIRS) {
            dirs.add(root.resolve(dir.substring(1)));
        }
        for (String pattern : GLOB_DIRS) {
            dirs.addAll(expand(root, pattern.substring(1).split("/")));
        }
        return List.copyOf(dirs);
    }

    /** The directories under {@code base} matching the path segments, where a segment may contain '*'. */
    private static List<Path> expand(Path base, String[] segments) {
        List<Path> current = List.of(base);
        for (String segment : segments) {
            List<Path> next = new ArrayList<>();
            for (Path dir : current) {
                if (!segment.contains("*")) {
                    Path p = dir.resolve(segment);
                    if (Files.isDirectory(p)) {
                        next.add(p);
                    }
                    continue;
                }
                try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir, segment)) {
                    for (Path p : ds) {
                        if (Files.isDirectory(p)) {
                            next.add(p);
                        }
                    }
                } catch (IOException e) {
                    // an unreadable or vanished directory contributes nothing
                }
            }
            next.sort(Comparator.naturalOrder());
            current = next;
        }
        return current;
    }

    /**
     * The companion of {@code fileName} in {@code dir}: a file named {@code companionBase.so.MAJOR…} with the
     * main library's major version (any version when the main name has none), the shortest such name.
     */
    static Optional<Path> companion(Path dir, String companionBase, String fileName) {
        int so = fileName.indexOf(".so");
        String version = so < 0 ? "" : fileName.substring(so + 3);
        String major = version.startsWith(".") ? version.substring(1).split("\\.")[0] : "";
        String prefix = companionBase + ".so" + (major.isEmpty() ? "" : "." + major);
        try (Stream<Path> files = Files.list(dir)) {
            return files.filter(p -> {
                        String n = p.getFileName().toString();
                        return n.equals(prefix) || n.startsWith(prefix + ".");
                    })
                    .min(Comparator.comparingInt((Path p) -> p.getFileName().toString().length())
                            .thenComparing(Comparator.naturalOrder()));
        } catch (IOException e) {
            return Optional.empty();
        }
    }

    /** Opens the three libraries; fails naming every one that is missing and where it was looked for. */
    static Loaded load(List<Path> dirs) throws BackendException {
        NativeLibrary.Loader loader = new NativeLibrary.Loader();
        List<String> problems = new ArrayList<>();
        NativeLibrary driver = open(loader, Lib.DRIVER, dirs, problems);
        NativeLibrary cublas = open(loader, Lib.CUBLAS, dirs, problems);
        NativeLibrary nvrtc = open(loader, Lib.NVRTC, dirs, problems);
        if (!problems.isEmpty()) {
            throw new BackendException(failureMessage(problems, dirs));
        }
        return new Loaded(driver, cublas, nvrtc);
    }

    /** Opens one library, or returns null after adding what went wrong to {@code problems}. */
    static NativeLibrary open(NativeLibrary.Loader loader, Lib lib, List<Path> dirs, List<String> problems) {
        List<String> failures = new ArrayList<>();
        for (String fileName : lib.fileNames) {
            for (Path dir : dirs) {
                Path file = dir.resolve(fileName);
                if (!Files.isRegularFile(file)) {
                    continue;
                }
                if (lib.companion != null) {
                    companion(dir, lib.companion, fileName).ifPresent(c -> {
                        try {
                            loader.open(c.toString());
                        } catch (NativeLibrary.LoadFailure e) {
                            failures.add(c + ": " + e.getMessage());
                        }
                    });
                }
                try {
                    return loader.open(file.toString());
                } catch (NativeLibrary.LoadFailure e) {
                    failures.add(file + ": " + e.getMessage());
                }
            }
        }
        for (String fileName : lib.fileNames) {
            try {
                return loader.open(fileName);
            } catch (NativeLibrary.LoadFailure e) {
                if (!e.getMessage().contains("No such file")) {
                    failures.add(fileName + " (system loader): " + e.getMessage());
                }
            }
        }
        problems.add(lib.title + " (" + String.join(", ", lib.fileNames) + ") "
                + (failures.isEmpty() ? "was not found" : "could not be loaded: " + String.join("; ", failures))
                + " — " + lib.hint);
        return null;
    }

    static String failureMessage(List<String> problems, List<Path> dirs) {
        StringBuilder sb = new StringBuilder("the cuda backend cannot run here: ");
        sb.append(String.join("; ", problems));
        sb.append(". Searched ");
        List<String> shown = new ArrayList<>();
        for (Path d : dirs) {
            shown.add(Files.isDirectory(d) ? d.toString() : d + " (absent)");
        }
        sb.append(String.join(", ", shown));
        sb.append(", then the system loader (LD_LIBRARY_PATH, /etc/ld.so.cache). Set ").append(LIB_PATH_OPTION)
                .append(" or ").append(LIB_PATH_ENV).append(" to the directories that hold the libraries.");
        return sb.toString();
    }
}
