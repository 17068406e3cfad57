package io.ditserve.backend.java;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.DecoderFixtures;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Times the Java decoders on random latents:
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -Xmx4g -cp ... io.ditserve.backend.java.DecoderBench \
 *     [--threads=2] [--sizes=32,64] [--iterations=3] [--scalar] DECODER_DIR...
 * </pre>
 *
 * (default folders: target/decoder-fixtures/vae and target/decoder-fixtures/taesd, which
 * {@value DecoderFixtures#REAL_COMMAND} writes). For each folder and latent size (32 → 256 px, 64 → 512 px for the
 * f = 8 decoders) it prints the median milliseconds per image, the rate in GFLOP/s counting
 * 2·{@link DecoderSpec#macsPerImage} operations (also per CPU-second of the process, which a busy machine does
 * not distort), and the memory of the activation buffers and of the weights.
 * The first decode warms up the JIT and is not counted.
 */
public final class DecoderBench {
    private DecoderBench() {}

    public static void main(String[] args) throws BackendException {
        int threads = 2;
        int iterations = 3;
        int[] sizes = {32, 64};
        String path = "vector";
        List<Path> dirs = new ArrayList<>();
        for (String a : args) {
            if (a.startsWith("--threads=")) {
                threads = Integer.parseInt(a.substring(10));
            } else if (a.startsWith("--iterations=")) {
                iterations = Integer.parseInt(a.substring(13));
            } else if (a.startsWith("--sizes=")) {
                sizes = Arrays.stream(a.substring(8).split(",")).mapToInt(Integer::parseInt).toArray();
            } else if (a.equals("--scalar")) {
                path = "scalar";
            } else if (a.startsWith("--")) {
                System.err.println("usage: DecoderBench [--threads=2] [--sizes=32,64] [--iterations=3] [--scalar]"
                        + " [DECODER_DIR...]");
                System.exit(2);
            } else {
                dirs.add(Path.of(a));
            }
        }
        if (dirs.isEmpty()) {
            dirs.add(Path.of("target/decoder-fixtures/vae"));
            dirs.add(Path.of("target/decoder-fixtures/taesd"));
        }
        System.out.printf("java decoders, %s path, %d threads, %d lanes of float%n", path, threads, MatMul.L);
        for (Path dir : dirs) {
            DecoderSpec spec = DecoderConfigs.load(dir);
            BackendOptions options = new BackendOptions(threads, Map.of(JavaDitBackend.PATH_OPTION, path));
            try (JavaDecoder decoder = JavaDecoder.create(spec, options)) {
                for (int size : sizes) {
                    run(decoder, spec, size, iterations);
                }
            }
        }
    }

    private static void run(JavaDecoder decoder, DecoderSpec spec, int size, int iterations) throws BackendException {
        int f = spec.scaleFactor();
        Random rnd = new Random(size);
        Tensor latent = Tensor.zeros(1, spec.latentChannels(), size, size);
        for (int i = 0; i < latent.size(); i++) {
            latent.data()[i] = (float) rnd.nextGaussian();
        }
        Tensor out = Tensor.zeros(1, spec.outChannels(), f * size, f * size);
        double gflop = 2.0 * spec.macsPerImage(size, size) / 1e9;
        double[] ms = new double[iterations];
        long cpu = 0;
        for (int i = -1; i < iterations; i++) {
            long cpu0 = processCpuNanos();
            long start = System.nanoTime();
            decoder.decode(latent, out, Cancellation.NEVER);
            if (i >= 0) {
                ms[i] = (System.nanoTime() - start) / 1e6;
                cpu += processCpuNanos() - cpu0;
            }
        }
        Arrays.sort(ms);
        double median = ms[iterations / 2];
        String memory = decoder.engine() instanceof VectorDecoder v
                ? String.format("  buffers %6.1f MB, weights %5.1f MB", v.bufferBytes() / 1e6, v.weightBytes() / 1e6)
                : "";
        System.out.printf("%-16s %3d×%-3d → %4d px: %9.1f ms/image (min %9.1f)  %6.1f GFLOP/s (%.1f GFLOP;"
                + " %.1f per CPU-second)%s%n", spec.kind().className(), size, size, f * size, median, ms[0],
                gflop / (median / 1e3), gflop, gflop * iterations / (cpu / 1e9), memory);
    }

    /** CPU time of the whole process: the rate per CPU-second shows the kernels' speed on a busy machine. */
    private static long processCpuNanos() {
        return ((com.sun.management.OperatingSystemMXBean) java.lang.management.ManagementFactory
                .getOperatingSystemMXBean()).getProcessCpuTime();
    }
}
