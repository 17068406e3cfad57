package io.ditserve.backend.cuda;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.ditserve.backend.BackendException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * dit_kernels.cu against its Java mirror ({@link Kernel}) and against the CUDA compilers that can run without a
 * GPU: nvcc (when installed) and NVRTC (when its library is found, e.g. with DIT_CUDA_LIB_PATH).
 */
class KernelSourceTest {
    private static final Pattern KERNEL =
            Pattern.compile("extern \"C\" __global__ void (\\w+)\\(([^)]*)\\)", Pattern.DOTALL);

    private static Map<String, String> kernelsInSource() throws BackendException {
        Map<String, String> found = new LinkedHashMap<>();
        Matcher m = KERNEL.matcher(Nvrtc.kernelSource());
        while (m.find()) {
            found.put(m.group(1), m.group(2).replaceAll("\\s+", " ").trim());
        }
        return found;
    }

    @Test
    void javaMirrorMatchesTheSource() throws Exception {
        Map<String, String> expected = new LinkedHashMap<>();
        for (Kernel k : Kernel.values()) {
            expected.put(k.symbol, k.parameters);
        }
        assertThat(kernelsInSource()).containsExactlyInAnyOrderEntriesOf(expected);
    }

    @Test
    void sourceIncludesNoHeader() throws Exception {
        // NVRTC has no system headers on its own include path; the source must rely on built-ins only
        assertThat(Nvrtc.kernelSource()).doesNotContain("#include");
    }

    /** nvcc from CUDA_HOME, /usr/local/cuda or the PATH, if any. */
    private static Optional<Path> nvcc() {
        List<Path> candidates = new ArrayList<>();
        String home = System.getenv("CUDA_HOME");
        if (home != null) {
            candidates.add(Path.of(home, "bin", "nvcc"));
        }
        candidates.add(Path.of("/usr/local/cuda/bin/nvcc"));
        String path = System.getenv("PATH");
        if (path != null) {
            Arrays.stream(path.split(":")).filter(s -> !s.isBlank()).forEach(d -> candidates.add(Path.of(d, "nvcc")));
        }
        return candidates.stream().filter(Files::isExecutable).findFirst();
    }

    @Test
    void compilesWithNvcc(@TempDir Path tmp) throws Exception {
        Optional<Path> nvcc = nvcc();
        assumeTrue(nvcc.isPresent(), "nvcc not found (CUDA_HOME, /usr/local/cuda/bin, PATH): compile check skipped");
        Path src = tmp.resolve(Nvrtc.KERNELS_RESOURCE);
        Files.writeString(src, Nvrtc.kernelSource());
        Path ptx = tmp.resolve("dit_kernels.ptx");
        Process p = new ProcessBuilder(nvcc.get().toString(), "-ptx", "-arch=compute_80", src.toString(), "-o",
                ptx.toString()).redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(120, TimeUnit.SECONDS)).as("nvcc finished").isTrue();
        assertThat(p.exitValue()).as("nvcc exit status; output:\n%s", output).isZero();
        String text = Files.readString(ptx);
        for (Kernel k : Kernel.values()) {
            assertThat(text).as("PTX entry of %s", k.symbol).contains(".entry " + k.symbol + "(");
        }
    }

    @Test
    void compilesWithNvrtcToCubins() throws Exception {
        NativeLibrary.Loader loader = new NativeLibrary.Loader();
        List<String> problems = new ArrayList<>();
        NativeLibrary lib = CudaLibraries.open(loader, CudaLibraries.Lib.NVRTC,
                CudaLibraries.searchDirs(null, System.getenv(), Path.of("/")), problems);
        assumeTrue(lib != null, "NVRTC compile check skipped: " + problems);
        Nvrtc nvrtc = new Nvrtc(lib);
        System.out.println("NVRTC " + nvrtc.version() + " from " + lib.name());
        for (int[] cc : new int[][] {{8, 0}, {9, 0}}) {
            byte[] cubin = nvrtc.compileToCubin(Nvrtc.kernelSource(), Nvrtc.KERNELS_RESOURCE,
                    Nvrtc.options(cc[0], cc[1]));
            assertThat(cubin).as("an ELF image for sm_%d%d", cc[0], cc[1]).startsWith(0x7f, 'E', 'L', 'F');
            String symbols = new String(cubin, StandardCharsets.ISO_8859_1);
            for (Kernel k : Kernel.values()) {
                assertThat(symbols).contains(k.symbol);
            }
        }
    }

    @Test
    void nvrtcCompileErrorsCarryTheLog() throws Exception {
        NativeLibrary.Loader loader = new NativeLibrary.Loader();
        List<String> problems = new ArrayList<>();
        NativeLibrary lib = CudaLibraries.open(loader, CudaLibraries.Lib.NVRTC,
                CudaLibraries.searchDirs(null, System.getenv(), Path.of("/")), problems);
        assumeTrue(lib != null, "NVRTC check skipped: " + problems);
        Nvrtc nvrtc = new Nvrtc(lib);
        String bad = "extern \"C\" __global__ void k(float* x) { x[0] = undefined_name; }";
        assertThatThrownBy(() -> nvrtc.compileToCubin(bad, "bad.cu", Nvrtc.options(9, 0)))
                .isInstanceOf(BackendException.class)
                .hasMessageContaining("nvrtcCompileProgram(bad.cu")
                .hasMessageContaining("undefined_name");
    }
}
