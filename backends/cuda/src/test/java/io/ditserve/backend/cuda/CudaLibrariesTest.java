package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class CudaLibrariesTest {
    @Test
    void searchOrderIsOptionThenEnvironmentThenFixedThenPythonWheels(@TempDir Path root) throws Exception {
        Path cu13 = Files.createDirectories(root.resolve("usr/local/lib/python3.12/site-packages/nvidia/cu13/lib"));
        // a virtual environment outside the standard locations is not searched: it is named by configuration
        Files.createDirectories(root.resolve("opt/venv/lib/python3.12/site-packages/nvidia/cu13/lib"));
        Path cublas = Files.createDirectories(root.resolve("usr/local/lib/python3.11/dist-packages/nvidia/cublas/lib"));
        Files.createDirectories(root.resolve("usr/local/lib/python3.11/dist-packages/nvidia/no-lib-here"));
        Map<String, String> env = Map.of(
                CudaLibraries.LIB_PATH_ENV, "/env/a::/env/b",
                "LD_LIBRARY_PATH", "/ld/one:/opt/option");
        List<Path> dirs = CudaLibraries.searchDirs("/opt/option: /opt/other", env, root);
        assertThat(dirs).containsExactly(
                Path.of("/opt/option"), Path.of("/opt/other"), Path.of("/env/a"), Path.of("/env/b"),
                Path.of("/ld/one"),
                root.resolve("usr/local/cuda/lib64"), root.resolve("usr/local/cuda/targets/x86_64-linux/lib"),
                root.resolve("usr/local/nvidia/lib64"), root.resolve("usr/lib/x86_64-linux-gnu"),
                cublas, cu13);
    }

    @Test
    void noConfigurationMeansTheFixedDirectoriesOnly(@TempDir Path root) {
        assertThat(CudaLibraries.searchDirs(null, Map.of(), root)).hasSize(CudaLibraries.FIXED_DIRS.size());
    }

    @Test
    void companionHasTheMainLibrarysMajorVersion(@TempDir Path dir) throws Exception {
        for (String f : List.of("libcublasLt.so.12", "libcublasLt.so.13.1.0.3", "libcublasLt.so.13",
                "libnvrtc-builtins.so.13.0", "libnvrtc-builtins.so.13.0.88", "libnvrtc-builtins.so.12.8")) {
            Files.createFile(dir.resolve(f));
        }
        assertThat(CudaLibraries.companion(dir, "libcublasLt", "libcublas.so.13"))
                .contains(dir.resolve("libcublasLt.so.13"));
        assertThat(CudaLibraries.companion(dir, "libcublasLt", "libcublas.so.12"))
                .contains(dir.resolve("libcublasLt.so.12"));
        assertThat(CudaLibraries.companion(dir, "libnvrtc-builtins", "libnvrtc.so.13"))
                .contains(dir.resolve("libnvrtc-builtins.so.13.0"));
        assertThat(CudaLibraries.companion(dir, "libnvrtc-builtins", "libnvrtc.so.11.2")).isEmpty();
        // an unversioned main library takes any version
        assertThat(CudaLibraries.companion(dir, "libnvrtc-builtins", "libnvrtc.so"))
                .contains(dir.resolve("libnvrtc-builtins.so.12.8"));
    }

    @Test
    void aFileThatIsNotALibraryIsReportedWithTheLoadersReason(@TempDir Path dir) throws Exception {
        Files.writeString(dir.resolve("libnvrtc.so.13"), "not an ELF file");
        List<String> problems = new ArrayList<>();
        NativeLibrary lib = CudaLibraries.open(new NativeLibrary.Loader(), CudaLibraries.Lib.NVRTC, List.of(dir),
                problems);
        if (lib == null) { // unless a real NVRTC is on the system loader's path
            assertThat(problems).singleElement().asString()
                    .contains("NVRTC")
                    .contains(dir.resolve("libnvrtc.so.13").toString())
                    .contains("could not be loaded");
        }
    }
}
