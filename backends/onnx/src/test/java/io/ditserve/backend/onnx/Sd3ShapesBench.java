package io.ditserve.backend.onnx;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Conditioning;
import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Sampler;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.java.JavaBackendProvider;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * SD3's components at real shapes on one backend, one process (tools/bench_sd3_shapes.sh runs it once per backend
 * on the folder tools/sd3/make_shaped_sd3.py writes): load time and resident memory of CLIP-L, CLIP-G, T5-XXL and
 * the MMDiT held together (the whole pipeline but the VAE), the time to encode one prompt with its empty negative
 * (batch 2) per encoder, and one transformer forward of one sample at 1024² (the config's sample_size, 128 latents)
 * and at 512² (64 latents: the same weights re-loaded under a config of sample_size 64, in a folder of links);
 * a guided step is two samples. The encoders and the 1024² transformer are closed before the 512² one loads. Random token ids and inputs: the figures are about shapes, not outputs.
 *
 * <pre>
 * java --add-modules jdk.incubator.vector -cp TEST_CLASSPATH io.ditserve.backend.onnx.Sd3ShapesBench \
 *     PIPELINE_DIR java|onnx [THREADS=2] [separate] [transformer-only]
 *     [key=value ...]
 * </pre>
 *
 * {@code separate}: load, time and close each component alone (for a backend whose pipeline does not fit in
 * memory at once); {@code transformer-only}: the MMDiT alone at 512² (to compare
 * options side by side, e.g. java.weights=stored and f32); {@code key=value}: backend options (java.weights=f32, onnx.optimization=none, ...).
 * Resident memory is VmRSS/VmHWM of /proc/self/status.
 */
public final class Sd3ShapesBench {
    private static final int CLIP_TOKENS = 77;
    private static final int T5_TOKENS = 256;

    private Sd3ShapesBench() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: Sd3ShapesBench PIPELINE_DIR java|onnx [THREADS=2] [separate] [key=value ...]");
            System.exit(2);
        }
        Path dir = Path.of(args[0]);
        String backend = args[1];
        int threads = 2;
        boolean separate = false;
        boolean transformerOnly = false;
        Map<String, String> opts = new LinkedHashMap<>();
        for (int i = 2; i < args.length; i++) {
            if (args[i].equals("separate")) {
                separate = true;
            } else if (args[i].equals("transformer-only")) {
                transformerOnly = true;
            } else if (args[i].contains("=")) {
                opts.put(args[i].substring(0, args[i].indexOf('=')), args[i].substring(args[i].indexOf('=') + 1));
            } else {
                threads = Integer.parseInt(args[i]);
            }
        }
        BackendProvider provider = backend.equals("java") ? new JavaBackendProvider() : new OnnxBackendProvider();
        BackendOptions options = new BackendOptions(threads, opts);
        System.out.printf("sd3-shapes %s: backend %s, %d threads, options %s, %s; %s%n", dir, backend, threads, opts,
                separate ? "components loaded one at a time" : "all components held together", Runtime.version());
        rss("start");

        String[][] encoders = {{"text_encoder", "" + CLIP_TOKENS}, {"text_encoder_2", "" + CLIP_TOKENS},
            {"text_encoder_3", "" + T5_TOKENS}};
        List<TextEncoder> held = new ArrayList<>();
        long loadStart = System.nanoTime();
        float[] pooled = null;
        for (String[] e : transformerOnly ? new String[0][] : encoders) {
            TextEncoderSpec spec = TextEncoderConfigs.load(dir.resolve(e[0]), e[0],
                    e[0].equals("text_encoder_3") ? T5_TOKENS : 0);
            long t0 = System.nanoTime();
            TextEncoder enc = provider.createTextEncoder(spec, options);
            System.out.printf("%-15s load %6.1f s%n", e[0], seconds(t0));
            rss(e[0] + " loaded");
            if (separate) {
                encode(e[0], enc, spec);
                enc.close();
                gc();
                rss(e[0] + " closed");
            } else {
                held.add(enc);
            }
        }
        ModelSpec big = mmdit(dir.resolve("transformer"));
        if (!transformerOnly) {
            long t0 = System.nanoTime();
            Backend mmdit = provider.create(big, options);
            System.out.printf("%-15s load %6.1f s (%dx%d latents, %d tokens)%n", "transformer", seconds(t0),
                    big.inputSize(), big.inputSize(), big.tokens());
            if (!separate) {
                System.out.printf("pipeline (3 text encoders + transformer) loaded in %.1f s%n", seconds(loadStart));
                gc();
                rss("pipeline loaded");
                for (int i = 0; i < encoders.length; i++) {
                    TextEncoderSpec spec = TextEncoderConfigs.load(dir.resolve(encoders[i][0]), encoders[i][0],
                            i == 2 ? T5_TOKENS : 0);
                    encode(encoders[i][0], held.get(i), spec);
                }
                rss("prompts encoded");
            } else {
                rss("transformer loaded");
            }
            step(mmdit, big);
            rss("big step");
            mmdit.close();
        }
        for (TextEncoder e : held) { // the 512² transformer is a second copy of the weights: make room first
            e.close();
        }
        held.clear(); // unreachable, so that the collector returns their native memory
        gc();
        Path small = linkedAt(dir.resolve("transformer"), big.inputSize() / 2);
        ModelSpec half = mmdit(small);
        long t0 = System.nanoTime();
        try (Backend m = provider.create(half, options)) {
            System.out.printf("%-15s load %6.1f s (%dx%d latents, %d tokens)%n", "transformer", seconds(t0),
                    half.inputSize(), half.inputSize(), half.tokens());
            step(m, half);
        } finally {
            delete(small);
        }
        rss("small step");
    }

    private static ModelSpec mmdit(Path transformer) throws Exception {
        return ModelConfigs.loadMmdit(transformer, "sd3-shapes", "", ModelSpec.Space.LATENT,
                CLIP_TOKENS + T5_TOKENS, new ModelSpec.Defaults(Sampler.EULER, 28, 7.0, 0.0));
    }

    /**
     * A transformer folder next to {@code src} whose config has {@code sample} as sample_size and whose weights are
     * hard links to {@code src}'s (ONNX Runtime refuses external data behind a link out of the model's folder).
     */
    private static Path linkedAt(Path src, int sample) throws IOException {
        Path out = Files.createTempDirectory(src.toAbsolutePath().getParent(), "transformer-at-" + sample + "-");
        try (var files = Files.list(src)) {
            for (Path f : files.toList()) {
                if (f.getFileName().toString().endsWith(".safetensors")
                        || f.getFileName().toString().endsWith(".index.json")) {
                    Files.createLink(out.resolve(f.getFileName()), f);
                }
            }
        }
        String config = Files.readString(src.resolve("config.json"))
                .replaceFirst("\"sample_size\"\\s*:\\s*\\d+", "\"sample_size\": " + sample);
        Files.writeString(out.resolve("config.json"), config);
        return out;
    }

    private static void delete(Path dir) throws IOException {
        try (var files = Files.list(dir)) {
            for (Path f : files.toList()) {
                Files.delete(f);
            }
        }
        Files.delete(dir);
    }

    /** One prompt and its empty negative: batch 2 of random ids. */
    private static void encode(String name, TextEncoder enc, TextEncoderSpec spec) throws Exception {
        SplittableRandom rnd = new SplittableRandom(3);
        int[][] ids = new int[2][spec.maxTokens()];
        for (int[] row : ids) {
            for (int t = 0; t < row.length; t++) {
                row[t] = rnd.nextInt(spec.vocab());
            }
        }
        long t0 = System.nanoTime();
        TextEncoder.Output out = enc.encode(ids, Cancellation.NEVER);
        System.out.printf("%-15s encode batch 2 x %d tokens: %6.2f s (first call)%n", name, out.tokens(),
                seconds(t0));
    }

    /** One forward of one sample: a guided sampling step is two. */
    private static void step(Backend b, ModelSpec spec) throws Exception {
        String label = 8 * spec.inputSize() + "x" + 8 * spec.inputSize(); // the image the VAE's 8x upsampling gives
        SplittableRandom rnd = new SplittableRandom(4);
        int s = spec.inputSize();
        Tensor x = Tensor.zeros(1, spec.inChannels(), s, s);
        float[] context = new float[spec.text().contextTokens() * spec.text().jointAttentionDim()];
        float[] pooledIn = new float[spec.text().pooledProjectionDim()];
        for (float[] a : new float[][] {x.data(), context, pooledIn}) {
            for (int i = 0; i < a.length; i++) {
                a[i] = (float) rnd.nextGaussian();
            }
        }
        Conditioning.TextEmbeddings text = new Conditioning.TextEmbeddings(context, spec.text().contextTokens(),
                spec.text().jointAttentionDim(), pooledIn, spec.text().pooledProjectionDim());
        Tensor out = Tensor.zeros(1, spec.outChannels(), s, s);
        long t0 = System.nanoTime();
        b.forward(new ForwardBatch(x, new float[] {500f}, text, null), out, Cancellation.NEVER);
        System.out.printf("transformer     step %s, 1 sample (%d + %d tokens): %6.1f s%n", label, spec.tokens(),
                spec.text().contextTokens(), seconds(t0));
    }

    private static double seconds(long t0) {
        return (System.nanoTime() - t0) / 1e9;
    }

    private static void gc() {
        for (int i = 0; i < 3; i++) {
            System.gc();
        }
    }

    /** VmRSS and VmHWM of this process, and the heap in use. */
    private static void rss(String when) throws IOException {
        String rss = "";
        String hwm = "";
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmRSS:")) {
                rss = gb(line);
            } else if (line.startsWith("VmHWM:")) {
                hwm = gb(line);
            }
        }
        Runtime rt = Runtime.getRuntime();
        System.out.printf("  memory %-22s VmRSS %s GB, VmHWM %s GB, heap used %.2f GB of %.2f GB committed%n", when,
                rss, hwm, (rt.totalMemory() - rt.freeMemory()) / 1e9, rt.totalMemory() / 1e9);
    }

    private static String gb(String statusLine) {
        long kb = Long.parseLong(statusLine.replaceAll("\\D+", ""));
        return String.format("%.2f", kb * 1024 / 1e9);
    }
}
