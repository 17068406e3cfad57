package io.ditserve.backend.onnx;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.testkit.Fixtures;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;

/**
 * Times the onnx and java backends on the same model, batches and inputs in one JVM (run from the test class path):
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp ... io.ditserve.backend.onnx.OnnxVsJavaBench \
 *     MODEL_DIR [THREADS=2] [ITERATIONS=20] [BATCH...=1 20]
 * </pre>
 *
 * For each batch size each backend runs its iterations as one block (ONNX Runtime's pool keeps spinning briefly
 * after a run, which would slow a java run interleaved with it) after a few uncounted warm-up runs; the median
 * is printed.
 */
public final class OnnxVsJavaBench {
    private OnnxVsJavaBench() {}

    public static void main(String[] args) throws BackendException {
        if (args.length < 1) {
            System.err.println("usage: OnnxVsJavaBench MODEL_DIR [THREADS=2] [ITERATIONS=20] [BATCH...=1 20]");
            System.exit(2);
        }
        ModelSpec spec = ModelConfigs.load(Path.of(args[0]));
        int threads = args.length > 1 ? Integer.parseInt(args[1]) : 2;
        int iterations = args.length > 2 ? Integer.parseInt(args[2]) : 20;
        int[] batches = args.length > 3
                ? Arrays.stream(args, 3, args.length).mapToInt(Integer::parseInt).toArray()
                : new int[] {1, 20};
        int maxBatch = Arrays.stream(batches).max().orElseThrow();
        BackendOptions javaOptions = new BackendOptions(threads, Map.of("java.max_batch", Integer.toString(maxBatch)));
        try (Backend onnx = Fixtures.provider("onnx").create(spec, BackendOptions.ofThreads(threads));
                Backend java = Fixtures.provider("java").create(spec, javaOptions)) {
            System.out.printf("%s, %d threads, median of %d runs (ms)%n", spec.name(), threads, iterations);
            for (int batch : batches) {
                Fixtures.Case c = Fixtures.randomCase(spec, batch, batch);
                double onnxMs = median(onnx, c, iterations);
                double javaMs = median(java, c, iterations);
                System.out.printf("batch %3d: onnx %8.2f   java %8.2f   java/onnx %5.2f%n",
                        batch, onnxMs, javaMs, javaMs / onnxMs);
            }
        }
    }

    private static double median(Backend b, Fixtures.Case c, int iterations) throws BackendException {
        Tensor out = c.out();
        int warmup = Math.max(3, iterations / 4);
        double[] ms = new double[iterations];
        for (int i = -warmup; i < iterations; i++) {
            long start = System.nanoTime();
            b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, Cancellation.NEVER);
            if (i >= 0) {
                ms[i] = (System.nanoTime() - start) / 1e6;
            }
        }
        Arrays.sort(ms);
        return ms[iterations / 2];
    }
}
