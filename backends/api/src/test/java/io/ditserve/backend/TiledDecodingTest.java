package io.ditserve.backend;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.junit.jupiter.api.Test;

/**
 * Tiled decoding's bookkeeping, with a decoder whose output pixel depends only on its own latent position (f×
 * nearest upsampling of a per-channel affine map): for such a decoder tiles and blending must reproduce the whole
 * decoding exactly, so any indexing or weighting error shows. Real decoders see one tile at a time (GroupNorm
 * statistics, receptive field); their difference is measured by {@code ./dit bench --decode}.
 */
class TiledDecodingTest {
    static final int F = 4;

    /** out[c, y, x] = (c + 1)·latent[c mod C, y / f, x / f] − 0.5; records the latent shapes it was called with. */
    static final class LocalDecoder implements Decoder {
        final DecoderSpec spec = new DecoderSpec(Path.of("/nowhere"), DecoderSpec.Kind.FULL, 2, 3, List.of(8, 8, 8),
                1, List.of(), 4, 1.0, 0.0, true, true, 2, 0);
        final List<String> calls = new ArrayList<>();

        @Override
        public String backendName() {
            return "test";
        }

        @Override
        public DecoderSpec spec() {
            return spec;
        }

        @Override
        public void decode(Tensor latent, Tensor out, Cancellation cancel) throws BackendException {
            DecoderArguments.check(spec, latent, out);
            if (cancel.isCancelled()) {
                throw new BackendException.Cancelled();
            }
            calls.add(latent.dim(2) + "x" + latent.dim(3));
            int c = latent.dim(1);
            int h = latent.dim(2);
            int w = latent.dim(3);
            for (int b = 0; b < latent.dim(0); b++) {
                for (int co = 0; co < 3; co++) {
                    for (int y = 0; y < F * h; y++) {
                        for (int x = 0; x < F * w; x++) {
                            float v = latent.data()[((b * c + co % c) * h + y / F) * w + x / F];
                            out.data()[((b * 3 + co) * F * h + y) * F * w + x] = (co + 1) * v - 0.5f;
                        }
                    }
                }
            }
        }

        @Override
        public void close() {}
    }

    static Tensor latent(int n, int h, int w) {
        Tensor t = Tensor.zeros(n, 2, h, w);
        SplittableRandom r = new SplittableRandom(7);
        for (int i = 0; i < t.size(); i++) {
            t.data()[i] = (float) r.nextGaussian();
        }
        return t;
    }

    @Test
    void tilesReproduceALocalDecoderExactlyAndStayWithinTheTileSize() throws Exception {
        LocalDecoder d = new LocalDecoder();
        Tensor lat = latent(2, 23, 17);
        Tensor whole = Tensor.zeros(2, 3, F * 23, F * 17);
        d.decode(lat, whole, Cancellation.NEVER);
        d.calls.clear();
        Tensor tiled = Tensor.zeros(2, 3, F * 23, F * 17);
        TiledDecoding.decode(d, lat, tiled, new TiledDecoding.Tiling(8, 3), Cancellation.NEVER);
        for (int i = 0; i < whole.size(); i++) {
            assertThat(tiled.data()[i]).as("value %d", i).isCloseTo(whole.data()[i],
                    org.assertj.core.data.Offset.offset(1e-5f));
        }
        // rows 23 → starts 0, 5, 10, 15 (last aligned to 23 − 8); columns 17 → 0, 5, 9: 4 × 3 tiles per image
        assertThat(d.calls).hasSize(2 * 12).allMatch(s -> s.equals("8x8"));
        assertThat(TiledDecoding.starts(23, 8, 3)).containsExactly(0, 5, 10, 15);
        assertThat(TiledDecoding.starts(17, 8, 3)).containsExactly(0, 5, 9);
    }

    @Test
    void smallLatentsAreDecodedWholeAndCancellationReachesTheDecoder() throws Exception {
        LocalDecoder d = new LocalDecoder();
        TiledDecoding.decode(d, latent(1, 8, 8), Tensor.zeros(1, 3, 32, 32), new TiledDecoding.Tiling(8, 3),
                Cancellation.NEVER);
        assertThat(d.calls).containsExactly("8x8");
        assertThatThrownBy(() -> TiledDecoding.decode(d, latent(1, 20, 20), Tensor.zeros(1, 3, 80, 80),
                new TiledDecoding.Tiling(8, 3), () -> true)).isInstanceOf(BackendException.Cancelled.class);
        assertThatThrownBy(() -> new TiledDecoding.Tiling(8, 8)).isInstanceOf(IllegalArgumentException.class);
    }
}
