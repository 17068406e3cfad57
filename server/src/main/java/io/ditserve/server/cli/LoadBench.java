package io.ditserve.server.cli;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
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
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * {@code ./dit bench --load}: a real server and N concurrent clients, each asking for single images (50 DDIM steps,
 * guidance 3, a preview every 5 steps), with step batching on (the backend's max_batch) and off (max_batch = one
 * generation's 2 samples, i.e. one generation per forward pass as before batching), side by side in one run.
 * Prints images/s, p50/p95 latency to the first preview and to completion, and the mean samples per forward pass;
 * then, from forward passes timed in the same process, the gain batching should give (time per sample at batch 2
 * ÷ time per sample at the mean pass size) against the gain measured.
 */
final class LoadBench {
    private final Path modelDir;
    private final List<String> backends;
    private final List<Integer> clients;
    private final int threads;
    private final int steps;

    LoadBench(Path modelDir, List<String> backends, List<Integer> clients, int threads, int steps) {
        this.modelDir = modelDir;
        this.backends = backends;
        this.clients = clients;
        this.threads = threads;
        this.steps = steps;
    }

    record Row(String backend, boolean batching, int clients, int images, double wallSeconds, double[] firstPreview,
            double[] done, double meanPass, double forwardBusy, double forwardPerSampleMs) {
        double imagesPerSecond() {
            return images / wallSeconds;
        }
    }

    void run() throws Exception {
        String model = modelDir.getFileName().toString();
        System.out.printf("load: model %s, %d DDIM steps, guidance 3, 1 image per request, previews every 5 steps, "
                + "%d threads; %s%n", model, steps, threads, Runtime.version());
        System.out.printf("%-6s %-8s %7s %7s %9s %11s %11s %9s %9s %9s %8s%n", "backend", "batching", "clients",
                "images", "images/s", "p50 1st pv", "p95 1st pv", "p50 done", "p95 done", "mean pass", "fwd busy");
        List<Row> rows = new ArrayList<>();
        for (String backend : backends) {
            for (boolean batching : new boolean[] {false, true}) {
                for (int n : clients) {
                    Row r = measure(backend, batching, n, model);
                    if (r == null) {
                        break;
                    }
                    rows.add(r);
                    System.out.printf("%-6s %-8s %7d %7d %9.2f %10.2fs %10.2fs %8.2fs %8.2fs %9.1f %7.0f%%%n", backend,
                            batching ? "on" : "off", n, r.images(), r.imagesPerSecond(), r.firstPreview()[0],
                            r.firstPreview()[1], r.done()[0], r.done()[1], r.meanPass(), 100 * r.forwardBusy());
                }
            }
            summary(backend, rows);
        }
    }

    /** Speed-up with batching at each client count, against what the same backend's forward-pass curve predicts. */
    private void summary(String backend, List<Row> rows) throws Exception {
        ModelSpec spec = ModelConfigs.load(modelDir);
        try (Backend b = new BackendRegistry().get(backend).create(spec, new BackendOptions(threads, Map.of()))) {
            for (Row on : rows) {
                if (!on.backend().equals(backend) || !on.batching()) {
                    continue;
                }
                Row off = rows.stream().filter(r -> r.backend().equals(backend) && !r.batching()
                        && r.clients() == on.clients()).findFirst().orElse(null);
                if (off == null) {
                    continue;
                }
                int pass = Math.max(1, (int) Math.round(on.meanPass()));
                // batch 2 and the pass size measured in alternation, five rounds, so that both see the same machine
                double[] two = new double[5];
                double[] big = new double[5];
                for (int round = 0; round < 5; round++) {
                    two[round] = perSampleMs(b, spec, 2);
                    big[round] = perSampleMs(b, spec, pass);
                }
                Arrays.sort(two);
                Arrays.sort(big);
                double ideal = two[2] / big[2];
                double gain = on.imagesPerSecond() / off.imagesPerSecond();
                // the same ratio from the passes the servers ran: forward seconds per sample, off vs on
                double servedIdeal = off.forwardPerSampleMs() / on.forwardPerSampleMs();
                System.out.printf("%-6s %3d clients: batching gives %.2fx images/s; the forward curve predicts %.2fx "
                        + "(%.2f ms/sample at batch 2, %.2f at batch %d): %.0f %% of ideal; the served passes predict "
                        + "%.2fx (%.2f vs %.2f ms/sample): %.0f %%; p95 done %.2fs vs %.2fs off%n",
                        backend, on.clients(), gain, ideal, two[2], big[2], pass, 100 * gain / ideal, servedIdeal,
                        off.forwardPerSampleMs(), on.forwardPerSampleMs(), 100 * gain / servedIdeal, on.done()[1],
                        off.done()[1]);
            }
        }
    }

    private static double perSampleMs(Backend backend, ModelSpec spec, int batch) throws Exception {
        int s = spec.inputSize();
        Tensor x = Tensor.zeros(batch, spec.inChannels(), s, s);
        Tensor out = Tensor.zeros(batch, spec.outChannels(), s, s);
        float[] t = new float[batch];
        int[] y = new int[batch];
        for (int i = 0; i < batch; i++) {
            t[i] = (i * 131 + 7) % 1000;
            y[i] = i % spec.numClasses();
            x.data()[i] = 0.1f * i;
        }
        for (int i = 0; i < 3; i++) {
            backend.forward(ForwardBatch.ofLabels(x, t, y), out, Cancellation.NEVER);
        }
        int runs = Math.max(3, 32 / batch);
        double[] ms = new double[runs];
        for (int i = 0; i < runs; i++) {
            long t0 = System.nanoTime();
            backend.forward(ForwardBatch.ofLabels(x, t, y), out, Cancellation.NEVER);
            ms[i] = (System.nanoTime() - t0) / 1e6;
        }
        Arrays.sort(ms);
        return ms[runs / 2] / batch;
    }

    private Row measure(String backend, boolean batching, int n, String model) throws Exception {
        ServerConfig c = new ServerConfig();
        c.port = 0;
        c.metricsPort = -1;
        c.models = modelDir.getParent().toString();
        c.backend = backend;
        c.threads = threads;
        c.maxActive = Math.max(64, n);
        c.maxQueued = 256;
        c.maxBatch = batching ? 0 : 2;
        DitServer server;
        try {
            server = Main.startServer(c);
        } catch (Main.StartupException e) {
            System.out.printf("%-6s unavailable: %s%n", backend, e.getMessage());
            return null;
        }
        int rounds = Math.max(1, 16 / n);
        try (DitClient client = DitClient.connect("localhost:" + server.port())) {
            request(client, model, 0); // warm-up: JIT, buffers
            double[] before = server.metrics().passesAndSamples(backend, model);
            ExecutorService pool = Executors.newFixedThreadPool(n);
            List<Future<double[][]>> futures = new ArrayList<>();
            long t0 = System.nanoTime();
            for (int i = 0; i < n; i++) {
                int id = i;
                futures.add(pool.submit(() -> {
                    double[][] lat = new double[rounds][];
                    for (int k = 0; k < rounds; k++) {
                        lat[k] = request(client, model, 1 + id * rounds + k);
                    }
                    return lat;
                }));
            }
            List<Double> first = new ArrayList<>();
            List<Double> done = new ArrayList<>();
            for (Future<double[][]> f : futures) {
                for (double[] l : f.get()) {
                    first.add(l[0]);
                    done.add(l[1]);
                }
            }
            double wall = (System.nanoTime() - t0) / 1e9;
            pool.shutdown();
            double[] after = server.metrics().passesAndSamples(backend, model);
            double meanPass = (after[1] - before[1]) / Math.max(1, after[0] - before[0]);
            return new Row(backend, batching, n, n * rounds, wall, percentiles(first), percentiles(done), meanPass,
                    (after[2] - before[2]) / wall, 1e3 * (after[2] - before[2]) / Math.max(1, after[1] - before[1]));
        } finally {
            server.stop();
        }
    }

    /** One request; returns seconds to the first preview and to the last event. */
    private double[] request(DitClient client, String model, long seed) {
        GenerateRequest req = GenerateRequest.newBuilder().setModel(model).setClassId((int) (seed % 10))
                .setNumImages(1).setSteps(steps).setSampler(Sampler.SAMPLER_DDIM).setGuidanceScale(3)
                .setSeed(seed + 1).setPreviewInterval(5).build();
        long t0 = System.nanoTime();
        double firstPreview = Double.NaN;
        try (DitClient.EventStream events = client.generate(req)) {
            while (events.hasNext()) {
                GenerateEvent e = events.next();
                if (e.hasPreview() && Double.isNaN(firstPreview)) {
                    firstPreview = (System.nanoTime() - t0) / 1e9;
                }
            }
        }
        return new double[] {firstPreview, (System.nanoTime() - t0) / 1e9};
    }

    private static double[] percentiles(List<Double> v) {
        double[] a = v.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        return new double[] {a[(int) Math.floor(0.5 * (a.length - 1))], a[(int) Math.ceil(0.95 * (a.length - 1))]};
    }
}
