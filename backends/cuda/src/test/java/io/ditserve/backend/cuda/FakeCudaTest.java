package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Tensor;
import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.invoke.MethodHandle;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The whole backend, from {@code create} to {@code close}, through its real native bindings, against
 * fake_cuda.cpp: a CPU stand-in for libcuda, cuBLAS and NVRTC that runs the real dit_kernels.cu on the CPU and
 * checks prototypes (against cuda.h), kernel argument types, memory bounds, the current context and leaks. Built
 * with g++ against the CUDA toolkit's cuda.h; skipped where either is missing.
 */
class FakeCudaTest {
    @TempDir
    static Path dir;
    private static final FixtureCases FIXTURES = new FixtureCases(FixtureCases.findRepoRoot());
    private static CudaParityCheck check;
    private static MethodHandle stat;
    private static MethodHandle failAllocOver;

    private static Optional<Path> cudaInclude() {
        String home = System.getenv("CUDA_HOME");
        return (home == null ? List.of(Path.of("/usr/local/cuda/include")) : List.of(Path.of(home, "include"),
                Path.of("/usr/local/cuda/include"))).stream().filter(p -> Files.isRegularFile(p.resolve("cuda.h")))
                .findFirst();
    }

    private static void copyResource(String name, Path to) throws IOException {
        try (InputStream in = FakeCudaTest.class.getResourceAsStream(name)) {
            Files.copy(in, to, StandardCopyOption.REPLACE_EXISTING);
        }
    }

    @BeforeAll
    static void buildFake() throws Exception {
        Optional<Path> include = cudaInclude();
        assumeTrue(include.isPresent(), "fake CUDA test skipped: no cuda.h (CUDA_HOME/include, /usr/local/cuda/include)");
        assumeTrue(Files.isExecutable(Path.of("/usr/bin/g++")), "fake CUDA test skipped: no /usr/bin/g++");
        copyResource("fake_cuda.cpp", dir.resolve("fake_cuda.cpp"));
        copyResource(Nvrtc.KERNELS_RESOURCE, dir.resolve(Nvrtc.KERNELS_RESOURCE));
        Path lib = dir.resolve("libfakecuda.so");
        Process p = new ProcessBuilder("/usr/bin/g++", "-std=c++20", "-O2", "-shared", "-fPIC", "-Wall",
                "-Wno-unused-function", "-I" + include.get(), "-I" + dir, dir.resolve("fake_cuda.cpp").toString(),
                "-o", lib.toString(), "-lpthread").redirectErrorStream(true).start();
        String output = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertThat(p.waitFor(300, TimeUnit.SECONDS)).as("g++ finished").isTrue();
        assertThat(p.exitValue()).as("g++ exit status; output:\n%s", output).isZero();
        for (String name : List.of("libcuda.so.1", "libcublas.so.13", "libnvrtc.so.13")) {
            Files.createSymbolicLink(dir.resolve(name), lib.getFileName());
        }
        NativeLibrary fake = new NativeLibrary.Loader().open(lib.toString());
        stat = fake.function(FunctionDescriptor.of(JAVA_LONG, ADDRESS), "fake_cuda_stat");
        failAllocOver = fake.function(FunctionDescriptor.ofVoid(JAVA_LONG), "fake_cuda_fail_alloc_over");
        check = new CudaParityCheck(FIXTURES, Map.of(CudaLibraries.LIB_PATH_OPTION, dir.toString()));
    }

    static long stat(String what) throws Throwable {
        try (Arena a = Arena.ofConfined()) {
            return (long) stat.invokeExact(a.allocateFrom(what));
        }
    }

    /** Whatever a test did, everything it created was released. */
    @AfterEach
    void nothingLeaked() throws Throwable {
        for (String what : List.of("allocations", "contexts", "streams", "modules", "handles", "programs")) {
            assertThat(stat(what)).as("live " + what).isZero();
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"pixel-tiny", "latent-tiny", "fashion-dit"})
    void matchesPyTorch(String model) throws Exception {
        assertThat(check.fixtureError(model, Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void bf16RoutesEveryProductThroughGemmEx() throws Exception {
        // the fake's cublasGemmEx rejects any enum value but float32 matrices with CUBLAS_COMPUTE_32F_FAST_16BF, and
        // the fake has no tensor cores: the products are float32, so fp32's tolerance holds
        assertThat(check.fixtureError("latent-tiny", Map.of(CudaOptions.PRECISION, "bf16")))
                .isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void precisionSetsTheMathMode() throws Throwable {
        check.fixtureError("pixel-tiny", Map.of(CudaOptions.PRECISION, "tf32"));
        assertThat(stat("math_mode")).isEqualTo(Cublas.CUBLAS_TF32_TENSOR_OP_MATH);
        check.fixtureError("pixel-tiny", Map.of(CudaOptions.PRECISION, "fp32"));
        assertThat(stat("math_mode")).isEqualTo(Cublas.CUBLAS_DEFAULT_MATH);
    }

    @Test
    void matchesTheJavaBackendOnAMixedBatch() throws Exception {
        assertThat(check.javaBackendError("latent-tiny", Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void buffersGrowAndDebugSyncWorks() throws Exception {
        assertThat(check.fixtureError("latent-tiny", Map.of(CudaOptions.MAX_BATCH, "1", CudaOptions.DEBUG_SYNC,
                "true"))).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    @Test
    void cancellationStopsBetweenBlocks() throws Exception {
        assertThat(check.cancellationProblem("latent-tiny")).isNull();
    }

    @Test
    void forwardWorksFromAnyThreadAndCloseIsIdempotent() throws Throwable {
        FixtureCases.Case c = FIXTURES.forwardCase("pixel-tiny");
        Backend b = check.cuda("pixel-tiny", Map.of());
        assertThat(((CudaDitBackend) b).deviceDescription())
                .contains("Fake CUDA device (CPU)", "compute capability 9.0", "--gpu-architecture=sm_90",
                        "precision fp32");
        Tensor out = CompletableFuture.supplyAsync(() -> {
            try {
                return CudaParityCheck.run(b, c.x(), c.t(), c.y());
            } catch (BackendException e) {
                throw new IllegalStateException(e);
            }
        }).get(60, TimeUnit.SECONDS);
        assertThat(FixtureCases.relativeError(out, c.out())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
        assertThat(stat("contexts")).isEqualTo(1);
        b.close();
        b.close();
        assertThatThrownBy(() -> CudaParityCheck.run(b, c.x(), c.t(), c.y())).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void outOfMemoryNamesTheAllocationAndReleasesWhatWasTaken() throws Throwable {
        failAllocOver.invokeExact(10_000L);
        try {
            assertThatThrownBy(() -> check.cuda("pixel-tiny", Map.of()))
                    .isInstanceOf(BackendException.class)
                    .hasMessageContaining("cuMemAlloc_v2(")
                    .hasMessageContaining("the weights of pixel-tiny")
                    .hasMessageContaining("CUDA_ERROR_OUT_OF_MEMORY (out of memory)")
                    .hasMessageContaining("MiB free");
        } finally {
            failAllocOver.invokeExact(-1L);
        }
    }

    @Test
    void argumentsAreCheckedLikeTheOtherBackends() throws Exception {
        FixtureCases.Case c = FIXTURES.forwardCase("pixel-tiny");
        try (Backend b = check.cuda("pixel-tiny", Map.of())) {
            int[] badLabel = c.y().clone();
            badLabel[0] = b.model().nullClass() + 1;
            assertThatThrownBy(() -> CudaParityCheck.run(b, c.x(), c.t(), badLabel))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("y[0]");
            int[] badTime = c.t().clone();
            badTime[2] = 1000;
            assertThatThrownBy(() -> CudaParityCheck.run(b, c.x(), badTime, c.y()))
                    .isInstanceOf(IllegalArgumentException.class).hasMessageContaining("t[2]");
        }
    }

    // ---- decoders ----

    private static final DecoderFixtures DECODERS = new DecoderFixtures(FixtureCases.findRepoRoot());

    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "vae-small-legacy", "taesd-small"})
    void decodersMatchPyTorch(String fixture) throws Exception {
        assertThat(check.decoderError(fixture, Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    /** The real architectures (sd-vae-ft-*, TAESD; random weights, 5×4 latent) through the real kernel source. */
    @ParameterizedTest
    @ValueSource(strings = {"vae", "taesd"})
    void realShapeDecodersMatchPyTorch(String fixture) throws Exception {
        if (!DECODERS.exists(fixture)) {
            throw new AssertionError("the real-shape decoder fixtures are missing: run `"
                    + DecoderFixtures.REAL_COMMAND + "` from the repository root (about 20 s)");
        }
        double err = check.decoderError(fixture, Map.of());
        System.out.printf("fake CUDA %s: relative error %.3e%n", fixture, err);
        assertThat(err).isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    /** Runs of one sample, im2col in pixel tiles, attention scores in chunks of query rows. */
    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void decodersInRunsTilesAndChunks(String fixture) throws Exception {
        DecoderFixtures.Case c = DECODERS.decodeCase(fixture);
        DecoderBuffers.Budgets small = CudaParityCheck.smallBudgets(DECODERS.spec(fixture),
                (long) c.latent().dim(2) * c.latent().dim(3));
        Path dir = DECODERS.dir(fixture);
        assertThat(check.decoderError(dir, dir.resolve("cases.safetensors"), Map.of(), small))
                .isLessThan(CudaParityCheck.FP32_TOLERANCE);
    }

    /**
     * create: one allocation (the weights) and the device's context, stream, cuBLAS handle and module; the first
     * decode allocates the buffers, a repeat reuses them, a larger latent replaces them (freed first); close frees
     * everything exactly once, and a second close does nothing.
     */
    @Test
    void decoderCreateDecodeCloseCallTheLibraryAsExpected() throws Throwable {
        long allocs = stat("alloc_calls");
        long frees = stat("free_calls");
        long badFrees = stat("bad_frees");
        DecoderFixtures.Case c = DECODERS.decodeCase("vae-small");
        CudaDecoder d = check.decoder(DECODERS.dir("vae-small"), Map.of(), DecoderBuffers.DEFAULT_BUDGETS);
        assertThat(d.backendName()).isEqualTo("cuda");
        assertThat(d.deviceDescription()).contains("Fake CUDA device (CPU)", "precision fp32");
        for (String what : List.of("allocations", "contexts", "streams", "modules", "handles")) {
            assertThat(stat(what)).as(what + " after create").isEqualTo(1);
        }
        assertThat(stat("programs")).isZero();

        long launches = stat("launches");
        long gemms = stat("gemms");
        CudaParityCheck.decode(d, Tensor.zeros(1, 4, 3, 2));
        assertThat(stat("allocations")).as("weights and buffers").isEqualTo(2);
        assertThat(stat("launches")).isGreaterThan(launches);
        assertThat(stat("gemms")).isGreaterThan(gemms);

        Tensor first = CudaParityCheck.decode(d, c.latent()); // larger: the buffers are replaced
        assertThat(stat("allocations")).isEqualTo(2);
        assertThat(stat("alloc_calls") - allocs).isEqualTo(3);
        assertThat(stat("free_calls") - frees).isEqualTo(1);
        Tensor again = CudaParityCheck.decode(d, c.latent()); // reused
        assertThat(stat("alloc_calls") - allocs).isEqualTo(3);
        assertThat(again.data()).containsExactly(first.data());
        assertThat(FixtureCases.relativeError(first, c.image())).isLessThan(CudaParityCheck.FP32_TOLERANCE);

        d.close();
        d.close();
        assertThat(stat("allocations")).isZero();
        assertThat(stat("free_calls") - frees).isEqualTo(3);
        assertThat(stat("bad_frees")).isEqualTo(badFrees);
        assertThatThrownBy(() -> CudaParityCheck.decode(d, c.latent())).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
    }

    @Test
    void decoderArgumentsAreCheckedBeforeAnyWork() throws Throwable {
        try (CudaDecoder d = check.decoder(DECODERS.dir("taesd-small"), Map.of(), DecoderBuffers.DEFAULT_BUDGETS)) {
            long launches = stat("launches");
            assertThatThrownBy(() -> d.decode(Tensor.zeros(1, 3, 4, 4), Tensor.zeros(1, 3, 32, 32),
                    Cancellation.NEVER)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("latent");
            assertThatThrownBy(() -> d.decode(Tensor.zeros(1, 4, 4, 4), Tensor.zeros(1, 3, 32, 31),
                    Cancellation.NEVER)).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("out")
                    .hasMessageContaining("[1, 3, 32, 32]");
            assertThatThrownBy(() -> d.decode(Tensor.zeros(4, 4, 4), Tensor.zeros(1, 3, 32, 32),
                    Cancellation.NEVER)).isInstanceOf(IllegalArgumentException.class);
            assertThat(stat("launches")).isEqualTo(launches);
            assertThat(stat("allocations")).as("no buffers yet").isEqualTo(1);
        }
    }

    @Test
    void decoderCancellationStopsBetweenLayers() throws Exception {
        assertThat(check.decoderCancellationProblem("taesd-small")).isNull();
    }

    @Test
    void decoderOutOfMemoryNamesTheBuffersAndTheDecoderStaysUsable() throws Throwable {
        DecoderFixtures.Case c = DECODERS.decodeCase("vae-small");
        long weightBytes = 4 * new DecoderWeights(DECODERS.spec("vae-small")).totalFloats();
        try (CudaDecoder d = check.decoder(DECODERS.dir("vae-small"), Map.of(), DecoderBuffers.DEFAULT_BUDGETS)) {
            failAllocOver.invokeExact(weightBytes + 4096);
            try {
                assertThatThrownBy(() -> CudaParityCheck.decode(d, Tensor.zeros(1, 4, 32, 32)))
                        .isInstanceOf(BackendException.class)
                        .hasMessageContaining("the activations of decoder AutoencoderKL")
                        .hasMessageContaining("CUDA_ERROR_OUT_OF_MEMORY");
            } finally {
                failAllocOver.invokeExact(-1L);
            }
            assertThat(FixtureCases.relativeError(CudaParityCheck.decode(d, c.latent()), c.image()))
                    .isLessThan(CudaParityCheck.FP32_TOLERANCE);
            assertThat(Arrays.stream(c.image().shape()).sum()).isPositive();
        }
    }
}
