package io.ditserve.backend.java;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Map;
import java.util.Random;

/**
 * Times the forward pass of a model folder on random inputs (mixed timesteps and labels, or random text
 * embeddings of {@code --context=N} tokens for an SD3 MMDiT transformer folder, default 333 = CLIP's 77 + T5's 256):
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp ... io.ditserve.backend.java.ForwardBench \
 *     MODEL_DIR [BATCH=1] [THREADS=2] [ITERATIONS=20] [--scalar] [--context=N]
 * </pre>
 *
 * Prints the median time of the vector path (and of the scalar path with {@code --scalar}) and the rate in
 * GFLOP/s, counting 2·{@link ModelSpec#macsPerSample()}·batch floating-point operations per forward. The first
 * iterations warm up the JIT and are not counted.
 */
public final class ForwardBench {
    private ForwardBench() {}

    public static void main(String[] args) throws BackendException {
        boolean scalar = Arrays.asList(args).contains("--scalar");
        int context = Arrays.stream(args).filter(a -> a.startsWith("--context=")).findFirst()
                .map(a -> Integer.parseInt(a.substring("--context=".length()))).orElse(333);
        String[] pos = Arrays.stream(args).filter(a -> !a.startsWith("--")).toArray(String[]::new);
        if (pos.length < 1) {
            System.err.println("usage: ForwardBench MODEL_DIR [BATCH=1] [THREADS=2] [ITERATIONS=20] [--scalar]"
                    + " [--context=N]");
            System.exit(2);
        }
        Path dir = Path.of(pos[0]);
        boolean mmdit = Files.exists(dir.resolve(MmditCheckpoint.SINGLE_FILE))
                || Files.exists(dir.resolve(MmditCheckpoint.INDEX_FILE));
        ModelSpec spec = mmdit
                ? ModelConfigs.loadMmdit(dir, dir.getFileName().toString(), "", ModelSpec.Space.LATENT, context,
                        new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0))
                : ModelConfigs.load(dir);
        int batch = pos.length > 1 ? Integer.parseInt(pos[1]) : 1;
        int threads = pos.length > 2 ? Integer.parseInt(pos[2]) : 2;
        int iterations = pos.length > 3 ? Integer.parseInt(pos[3]) : 20;

        Random rnd = new Random(42);
        float[] x = new float[batch * spec.inChannels() * spec.inputSize() * spec.inputSize()];
        for (int i = 0; i < x.length; i++) {
            x[i] = (float) rnd.nextGaussian();
        }
        float[] t = new float[batch];
        int[] y = new int[batch];
        for (int i = 0; i < batch; i++) {
            t[i] = rnd.nextInt(1000);
            y[i] = rnd.nextInt(spec.numClasses() + 1);
        }
        Tensor in = new Tensor(x, batch, spec.inChannels(), spec.inputSize(), spec.inputSize());
        ForwardBatch forward = mmdit ? new ForwardBatch(in, t, randomText(spec, batch, rnd), null)
                : ForwardBatch.ofLabels(in, t, y);
        Tensor out = Tensor.zeros(batch, spec.outChannels(), spec.inputSize(), spec.inputSize());
        double gflop = 2.0 * spec.macsPerSample() * batch / 1e9;
        System.out.printf("%s: %s, batch %d, %d threads, %.3f GFLOP per forward, %d lanes of float%s%n",
                spec.name(), spec.architecture(), batch, threads, gflop, MatMul.L,
                mmdit ? ", " + context + " context tokens" : "");
        for (String path : scalar && !mmdit ? new String[] {"scalar", "vector"} : new String[] {"vector"}) {
            BackendOptions options = new BackendOptions(threads,
                    Map.of(JavaDitBackend.PATH_OPTION, path, JavaDitBackend.MAX_BATCH_OPTION, Integer.toString(batch)));
            try (Backend backend = JavaDitBackend.create(spec, options)) {
                int runs = path.equals("scalar") ? Math.max(1, iterations / 5) : iterations;
                int warmup = Math.max(2, runs / 4);
                double[] ms = new double[runs];
                for (int i = -warmup; i < runs; i++) {
                    long start = System.nanoTime();
                    backend.forward(forward, out, Cancellation.NEVER);
                    if (i >= 0) {
                        ms[i] = (System.nanoTime() - start) / 1e6;
                    }
                }
                Arrays.sort(ms);
                double median = ms[runs / 2];
                System.out.printf("%-6s median %9.2f ms (min %9.2f)  %7.1f GFLOP/s%n",
                        path, median, ms[0], gflop / (median / 1e3));
            }
        }
    }

    /** N(0, 1) context [n, tokens, joint_attention_dim] and pooled vectors [n, pooled_projection_dim]. */
    private static Conditioning.TextEmbeddings randomText(ModelSpec spec, int n, Random rnd) {
        ModelSpec.TextConditioning text = spec.text();
        float[] context = new float[n * text.contextTokens() * text.jointAttentionDim()];
        float[] pooled = new float[n * text.pooledProjectionDim()];
        for (float[] a : new float[][] {context, pooled}) {
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) rnd.nextGaussian();
            }
        }
        return new Conditioning.TextEmbeddings(context, text.contextTokens(), text.jointAttentionDim(), pooled,
                text.pooledProjectionDim());
    }
}
