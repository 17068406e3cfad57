package io.ditserve.server.cli;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.Decoder;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelConfigs;
import io.ditserve.backend.ModelDecoders;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TiledDecoding;
import io.ditserve.server.model.BackendRegistry;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;

/**
 * {@code ./dit bench --decode}: ms per image of each model's decoders (vae/ and taesd/) at 32×32 and 64×64 latents
 * (256 and 512 px with f = 8), per backend, side by side in one process; and the resident memory the decoder grew
 * by for its first decode at each size, tiled (tile 32, overlap 8) before untiled, since buffers only grow.
 */
final class DecodeBench {
    private final List<Path> models;
    private final List<String> backends;
    private final int threads;

    DecodeBench(List<Path> models, List<String> backends, int threads) {
        this.models = models;
        this.backends = backends;
        this.threads = threads;
    }

    void run() throws Exception {
        System.out.printf("decode: %d threads, median of 3 after 1 warm-up; RSS growth = resident memory added by the"
                + " decoder's first decode at that size (buffers are kept); %s%n", threads, Runtime.version());
        System.out.printf("%-10s %-6s %-6s %-7s %-10s %10s %9s %12s%n", "model", "decoder", "backend", "latent",
                "mode", "ms/image", "GFLOP/s", "RSS growth");
        boolean any = false;
        for (Path dir : models) {
            ModelDecoders d = ModelConfigs.loadDecoders(ModelConfigs.load(dir));
            for (DecoderSpec spec : java.util.stream.Stream.of(d.vae(), d.taesd()).flatMap(java.util.Optional::stream)
                    .toList()) {
                any = true;
                for (String backend : backends) {
                    bench(dir.getFileName().toString(), spec, backend);
                }
            }
        }
        if (!any) {
            System.out.println("no model among " + models + " has a vae/ or taesd/ decoder; make one with"
                    + " /usr/bin/python3 tools/make_latent_model.py runs/bench/latent and pass --model runs/bench/latent");
        }
    }

    private void bench(String model, DecoderSpec spec, String backend) throws Exception {
        Decoder decoder;
        try {
            decoder = new BackendRegistry().get(backend).createDecoder(spec, new BackendOptions(threads, Map.of()));
        } catch (BackendException e) {
            System.out.printf("%-10s %-6s %-6s unavailable: %s%n", model, role(spec), backend, e.getMessage());
            return;
        }
        try (decoder) {
            record Case(int size, TiledDecoding.Tiling tiling, String mode) {}
            List<Case> cases = new ArrayList<>(List.of(new Case(32, TiledDecoding.Tiling.NEVER, "whole")));
            if (spec.kind() == DecoderSpec.Kind.FULL) {
                cases.add(new Case(64, new TiledDecoding.Tiling(32, 8), "tiles 32/8"));
            }
            cases.add(new Case(64, TiledDecoding.Tiling.NEVER, "whole"));
            Tensor tiled = null;
            for (Case c : cases) {
                int f = spec.scaleFactor();
                Tensor latent = Tensor.zeros(1, spec.latentChannels(), c.size(), c.size());
                SplittableRandom r = new SplittableRandom(3);
                for (int i = 0; i < latent.size(); i++) {
                    latent.data()[i] = (float) r.nextGaussian();
                }
                Tensor out = Tensor.zeros(1, spec.outChannels(), f * c.size(), f * c.size());
                long rss0 = rssBytes();
                TiledDecoding.decode(decoder, latent, out, c.tiling(), Cancellation.NEVER);
                long grown = rssBytes() - rss0;
                double[] ms = new double[3];
                for (int i = 0; i < ms.length; i++) {
                    long t0 = System.nanoTime();
                    TiledDecoding.decode(decoder, latent, out, c.tiling(), Cancellation.NEVER);
                    ms[i] = (System.nanoTime() - t0) / 1e6;
                }
                Arrays.sort(ms);
                double gflops = 2.0 * spec.macsPerImage(c.size(), c.size()) / (ms[1] / 1e3) / 1e9;
                System.out.printf("%-10s %-6s %-6s %-7s %-10s %10.1f %9.1f %9.0f MB%n", model, role(spec), backend,
                        c.size() + "x" + c.size(), c.mode(), ms[1], gflops, grown / 1e6);
                if (c.tiling() != TiledDecoding.Tiling.NEVER) {
                    tiled = out.copy();
                } else if (tiled != null && c.size() == 64) {
                    tileError(tiled, out);
                }
            }
        }
    }

    /** How far tiled decoding lands from whole-image decoding: in [−1, 1] units and in 8-bit PNG levels. */
    private static void tileError(Tensor tiled, Tensor whole) {
        double maxAbs = 0;
        double sumAbs = 0;
        long offByMore = 0;
        float[] a = tiled.data();
        float[] b = whole.data();
        for (int i = 0; i < a.length; i++) {
            double d = Math.abs(a[i] - b[i]);
            maxAbs = Math.max(maxAbs, d);
            sumAbs += d;
            if (Math.abs(io.ditserve.server.image.ImageCodec.toByte(a[i])
                    - io.ditserve.server.image.ImageCodec.toByte(b[i])) > 1) {
                offByMore++;
            }
        }
        System.out.printf("           tiles vs whole: max |diff| %.4f, mean |diff| %.5f (image in [-1, 1]); %.2f %% of"
                + " 8-bit values differ by more than one level%n", maxAbs, sumAbs / a.length,
                100.0 * offByMore / a.length);
    }

    private static String role(DecoderSpec spec) {
        return spec.kind() == DecoderSpec.Kind.FULL ? "vae" : "taesd";
    }

    /** Resident set size of this process (Linux), or 0 where /proc is not there. */
    private static long rssBytes() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmRSS:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", "")) * 1024;
                }
            }
        } catch (IOException | NumberFormatException e) {
            return 0;
        }
        return 0;
    }
}
