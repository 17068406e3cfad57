package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.TextEncoderConfigs;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Load time of the onnx backend's built graphs with and without the graph cache (docs/TEXT_MODELS.md, "The graph
 * cache"): loads each component of a pipeline folder (transformer, text_encoder, text_encoder_2, text_encoder_3,
 * vae, those present), or one AutoencoderKL folder, one after the other, closing each, and prints the wall time of
 * each load (weights validation, graph build or cache read, ONNX Runtime session) with what the cache did, after
 * loading ONNX Runtime's native library (timed apart: once per process, cache or not). Meant to
 * run in a fresh JVM per measurement, as a server starts: the first run with an empty cache folder builds and
 * writes, the second reads.
 *
 * <pre>
 * java -cp TEST_CLASSPATH io.ditserve.backend.onnx.GraphCacheBench DIR [THREADS=2] [key=value ...]
 * </pre>
 *
 * {@code key=value}: backend options, e.g. {@code onnx.graph_cache=optimized onnx.graph_cache_dir=/tmp/c}.
 */
public final class GraphCacheBench {
    private GraphCacheBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: GraphCacheBench DIR [THREADS=2] [key=value ...]");
            System.exit(2);
        }
        Path dir = Path.of(args[0]);
        int threads = 2;
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 1; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq > 0) {
                opts.put(args[i].substring(0, eq), args[i].substring(eq + 1));
            } else {
                threads = Integer.parseInt(args[i]);
            }
        }
        BackendOptions options = new BackendOptions(threads, opts);
        long all = System.nanoTime();
        // loading ONNX Runtime's native library is once per process whatever the cache does: timed apart
        OnnxRunner.environment();
        System.out.printf("%-15s %8.0f ms%n", "onnxruntime", (System.nanoTime() - all) / 1e6);
        double total = 0;
        if (DecoderConfigs.isDecoderFolder(dir)) {
            total += vae(dir, options);
        } else {
            if (Files.isDirectory(dir.resolve("transformer"))) {
                ModelSpec spec = ModelConfigs.loadMmdit(dir.resolve("transformer"), "transformer", "",
                        ModelSpec.Space.LATENT, 77, new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
                long t0 = System.nanoTime();
                try (OnnxMmditBackend b = OnnxMmditBackend.create(spec, options)) {
                    total += report("transformer", t0, b.cacheReport());
                }
            }
            for (String role : new String[] {"text_encoder", "text_encoder_2", "text_encoder_3"}) {
                if (Files.isDirectory(dir.resolve(role))) {
                    var spec = TextEncoderConfigs.load(dir.resolve(role), role, role.endsWith("3") ? 256 : 0);
                    long t0 = System.nanoTime();
                    try (OnnxTextEncoder e = OnnxTextEncoder.create(spec, options)) {
                        total += report(role, t0, e.cacheReport());
                    }
                }
            }
            if (Files.isDirectory(dir.resolve("vae"))) {
                total += vae(dir.resolve("vae"), options);
            }
        }
        System.out.printf("%-15s %8.0f ms (process: %.0f ms since main)%n", "all loads", total,
                (System.nanoTime() - all) / 1e6);
    }

    private static double vae(Path dir, BackendOptions options) throws Exception {
        long t0 = System.nanoTime();
        try (OnnxDecoder d = OnnxDecoder.createBuilt(DecoderConfigs.load(dir), options)) {
            return report("vae", t0, d.cacheReport());
        }
    }

    private static double report(String what, long t0, GraphCache.Report r) {
        double ms = (System.nanoTime() - t0) / 1e6;
        System.out.printf("%-15s %8.0f ms  graph %s, optimized %s%n", what, ms, r.graph(), r.optimized());
        return ms;
    }
}
