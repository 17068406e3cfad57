package io.ditserve.backend;

import java.util.Objects;

/**
 * Decodes latents larger than a set size in overlapping tiles, so that a decoder's activation memory stays bounded
 * by the tile size rather than growing with the square of the image (128 MB for one 512 px activation of the SD VAE).
 *
 * <p>Tiles are {@code tile × tile} latent positions (smaller only where the latent is smaller), start every
 * {@code tile − overlap} positions, and the last tile of a row or column is aligned to the edge. Decoded tiles are
 * blended with weights that ramp linearly across the overlap (1 elsewhere and at the image's own edges), so seams
 * fade instead of cutting. The result is not identical to untiled decoding: the decoder's GroupNorm statistics and
 * receptive field see one tile at a time; docs/DECODERS.md gives the measured difference.
 */
public final class TiledDecoding {
    /**
     * @param tile largest latent side decoded in one call; larger latents are tiled
     * @param overlap latent positions shared by neighbouring tiles (less than tile)
     */
    public record Tiling(int tile, int overlap) {
        public static final Tiling NEVER = new Tiling(Integer.MAX_VALUE, 0);

        public Tiling {
            if (tile < 1 || overlap < 0 || (tile != Integer.MAX_VALUE && overlap >= tile)) {
                throw new IllegalArgumentException("tiling needs tile >= 1 and 0 <= overlap < tile, got tile " + tile
                        + ", overlap " + overlap);
            }
        }

        /** Whether a latent of this size is decoded in tiles. */
        public boolean tiles(int h, int w) {
            return h > tile || w > tile;
        }
    }

    private TiledDecoding() {}

    /** Decodes {@code latent} into {@code out} ({@link Decoder#decode} shapes), tiled when it exceeds the tiling. */
    public static void decode(Decoder decoder, Tensor latent, Tensor out, Tiling tiling, Cancellation cancel)
            throws BackendException {
        Objects.requireNonNull(tiling, "tiling");
        int n = DecoderArguments.check(decoder.spec(), latent, out);
        int h = latent.dim(2);
        int w = latent.dim(3);
        if (!tiling.tiles(h, w) || n == 0) {
            decoder.decode(latent, out, cancel);
            return;
        }
        int c = latent.dim(1);
        int f = decoder.spec().scaleFactor();
        int co = out.dim(1);
        int th = Math.min(tiling.tile(), h);
        int tw = Math.min(tiling.tile(), w);
        int[] rows = starts(h, th, tiling.overlap());
        int[] cols = starts(w, tw, tiling.overlap());
        Tensor tileIn = Tensor.zeros(1, c, th, tw);
        Tensor tileOut = Tensor.zeros(1, co, f * th, f * tw);
        int oh = f * h;
        int ow = f * w;
        float[] acc = new float[co * oh * ow];
        float[] weight = new float[oh * ow];
        float[] wy = new float[f * th];
        float[] wx = new float[f * tw];
        for (int b = 0; b < n; b++) {
            java.util.Arrays.fill(acc, 0f);
            java.util.Arrays.fill(weight, 0f);
            for (int r0 : rows) {
                ramp(wy, r0 > 0, r0 + th < h, f * tiling.overlap());
                for (int c0 : cols) {
                    ramp(wx, c0 > 0, c0 + tw < w, f * tiling.overlap());
                    float[] ti = tileIn.data();
                    float[] src = latent.data();
                    int base = b * latent.stride0();
                    for (int ch = 0; ch < c; ch++) {
                        for (int y = 0; y < th; y++) {
                            System.arraycopy(src, base + (ch * h + r0 + y) * w + c0, ti, (ch * th + y) * tw, tw);
                        }
                    }
                    decoder.decode(tileIn, tileOut, cancel);
                    float[] to = tileOut.data();
                    int ph = f * th;
                    int pw = f * tw;
                    for (int y = 0; y < ph; y++) {
                        int oy = f * r0 + y;
                        for (int x = 0; x < pw; x++) {
                            float wgt = wy[y] * wx[x];
                            int op = oy * ow + f * c0 + x;
                            weight[op] += wgt;
                            for (int ch = 0; ch < co; ch++) {
                                acc[ch * oh * ow + op] += wgt * to[(ch * ph + y) * pw + x];
                            }
                        }
                    }
                }
            }
            float[] dst = out.data();
            int ob = b * out.stride0();
            for (int ch = 0; ch < co; ch++) {
                for (int p = 0; p < oh * ow; p++) {
                    dst[ob + ch * oh * ow + p] = acc[ch * oh * ow + p] / weight[p];
                }
            }
        }
    }

    /** Tile origins along one side: every (tile − overlap), the last aligned to the end. */
    static int[] starts(int size, int tile, int overlap) {
        if (size <= tile) {
            return new int[] {0};
        }
        int stride = tile - overlap;
        int count = (size - tile + stride - 1) / stride + 1;
        int[] s = new int[count];
        for (int i = 0; i < count; i++) {
            s[i] = Math.min(i * stride, size - tile);
        }
        return s;
    }

    /** Blend weights along one side of a tile: a linear ramp over {@code ramp} pixels at edges shared with a neighbour. */
    private static void ramp(float[] wts, boolean fadeIn, boolean fadeOut, int ramp) {
        int len = wts.length;
        for (int p = 0; p < len; p++) {
            float v = 1f;
            if (fadeIn && ramp > 0) {
                v = Math.min(v, (p + 0.5f) / ramp);
            }
            if (fadeOut && ramp > 0) {
                v = Math.min(v, (len - p - 0.5f) / ramp);
            }
            wts[p] = v;
        }
    }
}
