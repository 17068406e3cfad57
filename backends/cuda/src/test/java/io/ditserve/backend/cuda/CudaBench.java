package io.ditserve.backend.cuda;

import io.ditserve.backend.ForwardBatch;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.Random;

/**
 * Forward-pass timings of the cuda backend on a GPU machine. A program in the test sources, like
 * {@link CudaParityCheck} (run from tools/gpu/make_bundle.sh's bundle by tools/gpu/run_cuda_checks.sh, or on the
 * module's test class path: backends/cuda/README.md, "Tests"):
 *
 * <pre>
 * java --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -cp '.bundle/lib/*' \
 *     io.ditserve.backend.cuda.CudaBench \
 *     [--batches 1,8,16] [--precisions fp32,tf32,bf16] [--iters 10] [--warmup 3] [--steps 50] MODEL_DIR...
 * </pre>
 *
 * For each model and precision: the load time, then per batch the median wall time of one {@code forward} (inputs
 * up, outputs down and the stream synchronised, as a caller sees it) and the rate 2·macsPerSample·batch / time;
 * then "DDIM steps with CFG for 8 images": {@code --steps} forwards at batch 16 (8 conditional + 8 unconditional),
 * total seconds (the sampler's own arithmetic is negligible next to them).
 *
 * <p>With {@code --decoders}, the folders are latent decoders (diffusers AutoencoderKL / AutoencoderTiny) and each
 * is timed per precision, latent side ({@code --latents 32,64}: 256 and 512 px images) and batch: the median wall
 * time of one {@code decode} (latent up, image down) and its rate from {@link DecoderSpec#macsPerImage}.
 */
public final class CudaBench {
    private CudaBench() {}

    public static void main(String[] args) throws BackendException {
        int[] batches = {1, 8, 16};
        List<String> precisions = List.of("fp32", "tf32", "bf16");
        int iters = 10;
        int warmup = 3;
        int steps = 50;
        List<Path> models = new ArrayList<>();
        boolean decoders = false;
        int[] latents = {32, 64};
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--decoders" -> decoders = true;
                case "--latents" -> latents = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                case "--batches" -> batches = Arrays.stream(args[++i].split(",")).mapToInt(Integer::parseInt).toArray();
                case "--precisions" -> precisions = List.of(args[++i].split(","));
                case "--iters" -> iters = Integer.parseInt(args[++i]);
                case "--warmup" -> warmup = Integer.parseInt(args[++i]);
                case "--steps" -> steps = Integer.parseInt(args[++i]);
                default -> models.add(Path.of(args[i]));
            }
        }
        if (models.isEmpty()) {
            System.err.println("usage: CudaBench [--batches 1,8,16] [--precisions fp32,tf32,bf16] [--iters 10]"
                    + " [--warmup 3] [--steps 50] MODEL_DIR...\n"
                    + "       CudaBench --decoders [--latents 32,64] [--batches 1,4] [--precisions fp32,tf32]"
                    + " [--iters 10] [--warmup 3] DECODER_DIR...");
            System.exit(2);
        }
        if (decoders) {
            for (Path dir : models) {
                benchDecoder(DecoderConfigs.load(dir), precisions, latents, batches, warmup, iters);
            }
            return;
        }
        int maxBatch = Math.max(16, Arrays.stream(batches).max().orElse(16));
        for (Path dir : models) {
            ModelSpec spec = ModelConfigs.load(dir);
            System.out.printf("%n== %s: %dx%dx%d, patch %d, D %d, depth %d, heads %d, %.4g GMAC per sample%n",
                    spec.name(), spec.inChannels(), spec.inputSize(), spec.inputSize(), spec.patchSize(),
                    spec.hiddenSize(), spec.depth(), spec.numHeads(), spec.macsPerSample() / 1e9);
            for (String precision : precisions) {
                long t0 = System.nanoTime();
                try (Backend b = new CudaBackendProvider().create(spec, new BackendOptions(1, Map.of(
                        CudaOptions.PRECISION, precision, CudaOptions.MAX_BATCH, Integer.toString(maxBatch))))) {
                    System.out.printf("%s: loaded in %.2f s on %s%n", precision, (System.nanoTime() - t0) / 1e9,
                            ((CudaDitBackend) b).deviceDescription());
                    for (int batch : batches) {
                        double ms = medianForwardMs(b, batch, warmup, iters);
                        double tflops = 2.0 * spec.macsPerSample() * batch / (ms / 1e3) / 1e12;
                        System.out.printf("%s batch %3d: median %9.3f ms per forward, %7.2f TFLOP/s, %8.1f"
                                + " samples/s%n", precision, batch, ms, tflops, batch / (ms / 1e3));
                    }
                    Inputs in = Inputs.random(spec, 16);
                    long s0 = System.nanoTime();
                    for (int i = 0; i < steps; i++) {
                        b.forward(ForwardBatch.ofLabels(in.x, in.t, in.y), in.out, Cancellation.NEVER);
                    }
                    System.out.printf("%s: %d DDIM steps with CFG for 8 images (%d forwards at batch 16): %.3f s"
                            + " (last output max |v| %.4g)%n", precision, steps, steps, (System.nanoTime() - s0) / 1e9,
                            in.out.maxAbs());
                }
            }
        }
    }

    /** Random inputs of one batch. */
    private record Inputs(Tensor x, float[] t, int[] y, Tensor out) {
        static Inputs random(ModelSpec spec, int batch) {
            Random r = new Random(batch);
            Tensor x = Tensor.zeros(batch, spec.inChannels(), spec.inputSize(), spec.inputSize());
            for (int i = 0; i < x.size(); i++) {
                x.data()[i] = (float) r.nextGaussian();
            }
            float[] t = new float[batch];
            int[] y = new int[batch];
            for (int i = 0; i < batch; i++) {
                t[i] = r.nextInt(1000);
                y[i] = r.nextInt(spec.numClasses() + 1);
            }
            return new Inputs(x, t, y, Tensor.zeros(batch, spec.outChannels(), spec.inputSize(), spec.inputSize()));
        }
    }

    private static double medianForwardMs(Backend b, int batch, int warmup, int iters) throws BackendException {
        Inputs in = Inputs.random(b.model(), batch);
        for (int i = 0; i < warmup; i++) {
            b.forward(ForwardBatch.ofLabels(in.x, in.t, in.y), in.out, Cancellation.NEVER);
        }
        double[] ms = new double[iters];
        for (int i = 0; i < iters; i++) {
            long s = System.nanoTime();
            b.forward(ForwardBatch.ofLabels(in.x, in.t, in.y), in.out, Cancellation.NEVER);
            ms[i] = (System.nanoTime() - s) / 1e6;
        }
        Arrays.sort(ms);
        return iters % 2 == 1 ? ms[iters / 2] : (ms[iters / 2 - 1] + ms[iters / 2]) / 2;
    }

    private static void benchDecoder(DecoderSpec spec, List<String> precisions, int[] latents, int[] batches,
            int warmup, int iters) throws BackendException {
        System.out.printf("%n== decoder %s (%s), %d parameters%n", spec.summary(), spec.directory(),
                io.ditserve.backend.DecoderCheckpoint.parameterCount(spec));
        for (String precision : precisions) {
            long t0 = System.nanoTime();
            try (CudaDecoder d = (CudaDecoder) new CudaBackendProvider().createDecoder(spec,
                    new BackendOptions(1, Map.of(CudaOptions.PRECISION, precision)))) {
                System.out.printf("%s: loaded in %.2f s on %s%n", precision, (System.nanoTime() - t0) / 1e9,
                        d.deviceDescription());
                for (int side : latents) {
                    for (int batch : batches) {
                        Random r = new Random(side * 31L + batch);
                        Tensor latent = Tensor.zeros(batch, spec.latentChannels(), side, side);
                        for (int i = 0; i < latent.size(); i++) {
                            latent.data()[i] = (float) r.nextGaussian();
                        }
                        int f = spec.scaleFactor();
                        Tensor out = Tensor.zeros(batch, spec.outChannels(), f * side, f * side);
                        for (int i = 0; i < warmup; i++) {
                            d.decode(latent, out, Cancellation.NEVER);
                        }
                        double[] ms = new double[iters];
                        for (int i = 0; i < iters; i++) {
                            long s = System.nanoTime();
                            d.decode(latent, out, Cancellation.NEVER);
                            ms[i] = (System.nanoTime() - s) / 1e6;
                        }
                        Arrays.sort(ms);
                        double median = iters % 2 == 1 ? ms[iters / 2] : (ms[iters / 2 - 1] + ms[iters / 2]) / 2;
                        double tflops = 2.0 * spec.macsPerImage(side, side) * batch / (median / 1e3) / 1e12;
                        System.out.printf("%s latent %dx%d (%d px) batch %2d: median %9.3f ms per decode, %7.2f"
                                + " TFLOP/s, %7.1f images/s (max |v| %.3g)%n", precision, side, side, f * side, batch,
                                median, tflops, batch / (median / 1e3), out.maxAbs());
                    }
                }
            }
        }
    }
}
