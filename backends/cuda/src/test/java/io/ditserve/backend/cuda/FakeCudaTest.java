package io.ditserve.backend.cuda;

import static java.lang.foreign.ValueLayout.ADDRESS;
import static java.lang.foreign.ValueLayout.JAVA_LONG;
import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.BackendConformance;
import io.ditserve.backend.testkit.DecoderConformance;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.TextFixtures;
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
import org.junit.jupiter.api.Nested;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The whole backend, from {@code create} to {@code close}, through its real native bindings, against
 * fake_cuda.cpp: a CPU stand-in for libcuda, cuBLAS and NVRTC that runs the real dit_kernels.cu on the CPU and
 * checks prototypes (against cuda.h), kernel argument types, memory bounds, the current context and leaks. Built
 * with g++ against the CUDA toolkit's cuda.h; skipped where either is missing.
 *
 * <p>The shared conformance suites run here ({@link Backend}, {@link Decoder}), every test followed by the leak
 * check; the tests below are what the suites do not cover: precisions, buffer growth and budgets, threads, the
 * library calls a decoder makes, out of memory.
 */
class FakeCudaTest {
    @TempDir
    static Path dir;
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
        check = new CudaParityCheck(Map.of(CudaLibraries.LIB_PATH_OPTION, dir.toString()));
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

    /** Options that load the fake libraries. */
    private static BackendOptions fakeOptions() {
        return new BackendOptions(1, Map.of(CudaLibraries.LIB_PATH_OPTION, dir.toString()));
    }

    /**
     * The suite through the native bindings and the real kernel source, step caching included; the fake computes
     * each sample's rows the same wherever the sample is in the batch, so batch invariance holds bit for bit.
     */
    @Nested
    class Conformance extends BackendConformance {
        @Override
        protected Backend create(ModelSpec spec, int threads) throws BackendException {
            return new CudaBackendProvider().create(spec, fakeOptions());
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
    }

    @Nested
    class DecoderSuite extends DecoderConformance {
        @Override
        protected Decoder create(DecoderSpec spec) throws BackendException {
            return new CudaBackendProvider().createDecoder(spec, fakeOptions());
        }

        @Override
        protected double batchTolerance() {
            return 0;
        }
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

    /** The GPU check of step caching (CudaParityCheck, also run by tools/gpu/run_cuda_checks.sh). */
    @Test
    void theStepCacheCheckPasses() throws Exception {
        assertThat(check.cacheError("fashion-dit", Map.of())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
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
        Fixtures.Case c = Fixtures.forwardCase("pixel-tiny");
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
        assertThat(Fixtures.relativeError(out, c.out())).isLessThan(CudaParityCheck.FP32_TOLERANCE);
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

    // ---- SD3: the MMDiT and the text encoders ----

    /**
     * The GPU's SD3 checks ({@link CudaParityCheck#textChecks}: the MMDiT and text encoder fixtures against PyTorch
     * and the java backend) through the native bindings, the real kernel source compiled as C++ for the CPU.
     */
    @Test
    void theSd3ChecksPass() {
        List<CudaParityCheck.Outcome> outcomes = CudaParityCheck.run(check.textChecks());
        assertThat(outcomes).allSatisfy(o -> assertThat(o.passed()).as(o.line()).isTrue());
    }

    /** A batch of prompts, each alone, on the real kernels: the same bytes; and attention over 40 context tokens. */
    @Test
    void mmditSamplesOfABatchAreIndependent() throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec("mmdit-x-tiny");
        TextFixtures.MmditCase c = TextFixtures.randomCase(spec, 3, 40, 3);
        try (Backend b = check.mmdit("mmdit-x-tiny", Map.of())) {
            assertThat(((CudaMmditBackend) b).deviceDescription()).contains("Fake CUDA device (CPU)");
            Tensor batched = TextFixtures.run(b, c);
            for (int k = 0; k < 3; k++) {
                assertThat(TextFixtures.run(b, TextFixtures.sample(c, k)).data()).as("sample %d", k)
                        .isEqualTo(Fixtures.sample(batched, k).data());
            }
        }
    }

    // ---- decoders ----

    /** Runs of one sample, im2col in pixel tiles, attention scores in chunks of query rows. */
    @ParameterizedTest
    @ValueSource(strings = {"vae-small", "taesd-small"})
    void decodersInRunsTilesAndChunks(String fixture) throws Exception {
        Path dir = DecoderFixtures.small(fixture);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        DecoderBuffers.Budgets small = CudaParityCheck.smallBudgets(DecoderFixtures.spec(dir),
                (long) c.latent().dim(2) * c.latent().dim(3));
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
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(DecoderFixtures.small("vae-small"));
        CudaDecoder d = check.decoder(DecoderFixtures.small("vae-small"), Map.of(), DecoderBuffers.DEFAULT_BUDGETS);
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
        assertThat(Fixtures.relativeError(first, c.image())).isLessThan(CudaParityCheck.FP32_TOLERANCE);

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
        try (CudaDecoder d = check.decoder(DecoderFixtures.small("taesd-small"), Map.of(),
                DecoderBuffers.DEFAULT_BUDGETS)) {
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
        Path vae = DecoderFixtures.small("vae-small");
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(vae);
        long weightBytes = DevicePtr.floatBytes(new DecoderWeights(DecoderFixtures.spec(vae)).totalFloats());
        try (CudaDecoder d = check.decoder(vae, Map.of(), DecoderBuffers.DEFAULT_BUDGETS)) {
            failAllocOver.invokeExact(weightBytes + 4096);
            try {
                assertThatThrownBy(() -> CudaParityCheck.decode(d, Tensor.zeros(1, 4, 32, 32)))
                        .isInstanceOf(BackendException.class)
                        .hasMessageContaining("the activations of decoder AutoencoderKL")
                        .hasMessageContaining("CUDA_ERROR_OUT_OF_MEMORY");
            } finally {
                failAllocOver.invokeExact(-1L);
            }
            assertThat(Fixtures.relativeError(CudaParityCheck.decode(d, c.latent()), c.image()))
                    .isLessThan(CudaParityCheck.FP32_TOLERANCE);
            assertThat(Arrays.stream(c.image().shape()).sum()).isPositive();
        }
    }
}
