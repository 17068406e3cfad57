package io.ditserve.server.cli;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.client.DitClient;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.Sampler;
import io.ditserve.server.DitServer;
import io.ditserve.server.config.ServerConfig;
import io.ditserve.server.model.BackendRegistry;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;

/**
 * {@code ./dit bench}: times one forward pass of every available backend side by side, in one process and one run,
 * then a whole generation through the server against the sum of its forward passes (the server's own overhead).
 */
@Command(name = "bench", mixinStandardHelpOptions = true,
        description = "Forward-pass benchmark of every backend side by side, plus a whole generation through the server.")
final class Bench implements Callable<Integer> {
    @Option(names = "--model", description = "model folder(s) (default: models/fashion-dit and runs/bench/dit-s2)")
    List<Path> models;
    @Option(names = "--backends", split = ",", description = "backends to compare (default: all installed)")
    List<String> backends;
    @Option(names = "--batches", split = ",", defaultValue = "1,8", description = "batch sizes (default ${DEFAULT-VALUE})")
    List<Integer> batches;
    @Option(names = "--threads", defaultValue = "2", description = "threads per backend (default ${DEFAULT-VALUE})")
    int threads;
    @Option(names = "--iterations", defaultValue = "10", description = "timed runs per case (default ${DEFAULT-VALUE})")
    int iterations;
    @Option(names = "--warmup", defaultValue = "3", description = "untimed runs per case (default ${DEFAULT-VALUE})")
    int warmup;
    // a plain flag: picocli's negatable form with a default of true kept the timing on for --no-generation
    @Option(names = "--no-generation",
            description = "skip timing a whole generation through the server (50 DDIM steps, CFG, 10 images)")
    boolean noGeneration;
    @Option(names = "--generation-images", defaultValue = "10")
    int generationImages;
    @Option(names = "--load", description = "load benchmark instead: a server and N concurrent single-image clients, "
            + "batching on and off (see --clients)")
    boolean load;
    @Option(names = "--clients", split = ",", defaultValue = "1,4,16,64",
            description = "concurrent clients for --load (default ${DEFAULT-VALUE})")
    List<Integer> clients;
    @Option(names = "--steps", defaultValue = "50", description = "DDIM steps per request for --load")
    int steps;
    @Option(names = "--step-cache", split = ",", paramLabel = "K",
            description = "step-caching benchmark instead: the --generation-images request (DDIM --steps, CFG) "
                    + "through a server per backend with each step-cache interval K (0 = off), interleaved rounds, "
                    + "median wall time and block evaluations (e.g. --step-cache 0,2,3,4)")
    List<Integer> stepCaches;
    @Option(names = "--rounds", defaultValue = "3", description = "timed rounds per setting for --step-cache")
    int rounds;
    @Option(names = "--decode", description = "decoder benchmark instead: ms per image of each model's vae/ and taesd/ "
            + "at 32x32 and 64x64 latents, per backend, with peak heap with and without tiles")
    boolean decode;

    @Override
    public Integer call() throws Exception {
        String root = System.getenv().getOrDefault("DIT_MODELS", "models");
        if (models == null) {
            models = new ArrayList<>(List.of(Path.of(root, "fashion-dit")));
            Path s2 = Path.of(root).toAbsolutePath().getParent().resolve("runs/bench/dit-s2");
            if (Files.isDirectory(s2)) {
                models.add(s2);
            }
        }
        BackendRegistry registry = new BackendRegistry();
        List<String> names = backends != null ? backends : new ArrayList<>(registry.names());
        if (load) {
            List<String> which = backends != null ? backends : List.of("java", "onnx");
            new LoadBench(models.get(0).toAbsolutePath(), which, clients, threads, steps).run();
            return 0;
        }
        if (decode) {
            new DecodeBench(models, names, threads).run();
            return 0;
        }
        if (stepCaches != null) {
            List<String> which = backends != null ? backends : List.of("java", "onnx");
            for (String name : which) {
                withModelRoot(models.get(0), (dir, model) -> cacheTiming(dir, name, model));
            }
            return 0;
        }
        System.out.printf("threads %d, %d warm-up + %d timed runs per case, median reported; %s%n", threads, warmup,
                iterations, Runtime.version());
        System.out.printf("%-14s %-6s %5s %12s %10s %10s%n", "model", "backend", "batch", "median ms", "GFLOP/s", "ms/image");
        Map<String, Double> medians = new LinkedHashMap<>();
        for (Path dir : models) {
            ModelSpec spec = ModelConfigs.load(dir);
            for (String name : names) {
                BackendProvider provider = registry.get(name);
                Backend backend;
                try {
                    backend = provider.create(spec, new BackendOptions(threads, Map.of()));
                } catch (BackendException e) {
                    System.out.printf("%-14s %-6s unavailable: %s%n", spec.name(), name, firstClause(e.getMessage()));
                    continue;
                }
                try (backend) {
                    for (int batch : batches) {
                        double ms = time(backend, spec, batch);
                        double gflops = 2.0 * spec.macsPerSample() * batch / (ms / 1e3) / 1e9;
                        medians.put(spec.name() + "/" + batch + "/" + name, ms);
                        System.out.printf("%-14s %-6s %5d %12.2f %10.1f %10.2f%n", spec.name(), name, batch, ms, gflops,
                                ms / batch);
                    }
                }
            }
        }
        for (Path dir : models) {
            String m = ModelConfigs.load(dir).name();
            for (int batch : batches) {
                Double j = medians.get(m + "/" + batch + "/java");
                Double o = medians.get(m + "/" + batch + "/onnx");
                if (j != null && o != null) {
                    System.out.printf("ratio java/onnx  %-14s batch %d: %.2f%n", m, batch, j / o);
                }
            }
        }
        if (!noGeneration) {
            for (String name : names) {
                generationTiming(models.get(0), name);
            }
        }
        return 0;
    }

    private static String firstClause(String message) {
        int cut = message.indexOf("; ");
        return cut > 0 ? message.substring(0, cut) : message;
    }

    private double time(Backend backend, ModelSpec spec, int batch) throws BackendException {
        int s = spec.inputSize();
        Tensor x = Tensor.zeros(batch, spec.inChannels(), s, s);
        SplittableRandom rnd = new SplittableRandom(1);
        float[] d = x.data();
        for (int i = 0; i < d.length; i++) {
            d[i] = (float) rnd.nextGaussian();
        }
        float[] t = new float[batch];
        int[] y = new int[batch];
        for (int b = 0; b < batch; b++) {
            t[b] = (b * 137 + 11) % 1000;
            y[b] = b % (spec.numClasses() + 1);
        }
        Tensor out = Tensor.zeros(batch, spec.outChannels(), s, s);
        for (int i = 0; i < warmup; i++) {
            backend.forward(ForwardBatch.ofLabels(x, t, y), out, Cancellation.NEVER);
        }
        double[] ms = new double[iterations];
        for (int i = 0; i < iterations; i++) {
            long t0 = System.nanoTime();
            backend.forward(ForwardBatch.ofLabels(x, t, y), out, Cancellation.NEVER);
            ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(ms);
        return ms[ms.length / 2];
    }

    /**
     * A whole generation of the model in {@code modelDir} through a server. The server serves a models folder, and
     * {@code --model} may name a folder anywhere: it gets a temporary models folder holding one link to it, under
     * the folder's name (so only this model is loaded, and its name is the one a client asks for).
     */
    private void generationTiming(Path modelDir, String backend) throws Exception {
        withModelRoot(modelDir, (root, model) -> generationTiming(root, backend, model));
    }

    private interface ModelRootTask {
        void run(Path root, String model) throws Exception;
    }

    /** Runs {@code task} with a temporary models folder that holds only a link to {@code modelDir}. */
    private static void withModelRoot(Path modelDir, ModelRootTask task) throws Exception {
        Path dir = modelDir.toAbsolutePath().normalize();
        String model = dir.getFileName().toString();
        Path root = Files.createTempDirectory("dit-bench-models");
        Path link = Files.createSymbolicLink(root.resolve(model), dir);
        try {
            task.run(root, model);
        } finally {
            Files.deleteIfExists(link);
            Files.deleteIfExists(root);
        }
    }

    private DitServer server(Path modelRoot, String backend) throws Exception {
        ServerConfig c = new ServerConfig();
        c.port = 0;
        c.metricsPort = -1;
        c.models = modelRoot.toString();
        c.backend = backend;
        c.threads = threads;
        c.maxImages = Math.max(c.maxImages, generationImages);
        try {
            return Main.startServer(c);
        } catch (Main.StartupException e) {
            System.out.printf("generation on %s: unavailable: %s%n", backend, firstClause(e.getMessage()));
            return null;
        }
    }

    /**
     * The same request with each step-cache interval, through one server: a warm-up round, then {@link #rounds}
     * rounds that each run every interval once (interleaved, so that a noisy neighbour slows all settings alike);
     * median wall time per interval, and its ratio to the uncached one.
     */
    private void cacheTiming(Path modelRoot, String backend, String model) throws Exception {
        DitServer server = server(modelRoot, backend);
        if (server == null) {
            return;
        }
        try (DitClient client = DitClient.connect("localhost:" + server.port())) {
            Map<Integer, double[]> walls = new LinkedHashMap<>();
            Map<Integer, Long> blocks = new LinkedHashMap<>();
            for (int round = -1; round < rounds; round++) {
                for (int k : stepCaches) {
                    GenerateRequest.Builder req = GenerateRequest.newBuilder().setModel(model).setClassId(0)
                            .setNumImages(generationImages).setSteps(steps).setSampler(Sampler.SAMPLER_DDIM)
                            .setGuidanceScale(3).setSeed(1);
                    if (k > 0) {
                        req.setStepCache(io.ditserve.proto.v1.StepCacheSettings.newBuilder()
                                .setMethod(io.ditserve.proto.v1.StepCacheMethod.STEP_CACHE_INTERVAL).setInterval(k));
                    }
                    long t0 = System.nanoTime();
                    try (DitClient.EventStream events = client.generate(req.build())) {
                        while (events.hasNext()) {
                            GenerateEvent e = events.next();
                            if (e.hasAccepted()) {
                                blocks.put(k, e.getAccepted().getBlockEvaluations());
                            }
                        }
                    }
                    if (round >= 0) {
                        walls.computeIfAbsent(k, x -> new double[rounds])[round] = (System.nanoTime() - t0) / 1e9;
                    }
                }
            }
            double base = median(walls.get(stepCaches.getFirst()));
            long baseBlocks = blocks.get(stepCaches.getFirst());
            System.out.printf("step caching on %s, %s: %d images, %d DDIM steps, CFG; median of %d interleaved rounds%n",
                    backend, model, generationImages, steps, rounds);
            for (int k : stepCaches) {
                double m = median(walls.get(k));
                System.out.printf("  interval %-3s block evals/image %5d (%.2fx fewer)  wall %7.2f s  (%.2fx faster)%n",
                        k == 0 ? "off" : k, blocks.get(k), (double) baseBlocks / blocks.get(k), m, base / m);
            }
        } finally {
            server.stop();
        }
    }

    private static double median(double[] v) {
        double[] c = v.clone();
        Arrays.sort(c);
        return c[c.length / 2];
    }

    private void generationTiming(Path modelRoot, String backend, String model) throws Exception {
        DitServer server = server(modelRoot, backend);
        if (server == null) {
            return;
        }
        try (DitClient client = DitClient.connect("localhost:" + server.port())) {
            GenerateRequest req = GenerateRequest.newBuilder().setModel(model).setClassId(0).setNumImages(generationImages)
                    .setSteps(50).setSampler(Sampler.SAMPLER_DDIM).setGuidanceScale(3).setSeed(1).build();
            for (int round = 0; round < 2; round++) { // the first round warms up
                long t0 = System.nanoTime();
                GenerateEvent last = null;
                try (DitClient.EventStream events = client.generate(req)) {
                    while (events.hasNext()) {
                        last = events.next();
                    }
                }
                double wall = (System.nanoTime() - t0) / 1e9;
                if (round == 1 && last != null && last.hasResult()) {
                    var tm = last.getResult().getTimings();
                    System.out.printf("generation on %-5s %s: %d images, 50 DDIM steps, CFG (batch %d): wall %.2f s, "
                            + "sampling %.2f s, of which forward %.2f s; server overhead %.2f s (%.1f %%)%n", backend,
                            model, generationImages, 2 * generationImages, wall, tm.getSamplingSeconds(),
                            tm.getForwardSeconds(), wall - tm.getForwardSeconds(),
                            100 * (wall - tm.getForwardSeconds()) / wall);
                }
            }
        } finally {
            server.stop();
        }
    }
}
