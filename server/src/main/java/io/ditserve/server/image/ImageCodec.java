package io.ditserve.server.image;

import java.awt.image.BufferedImage;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.UncheckedIOException;
import javax.imageio.ImageIO;

/**
 * Turns a sample [C, H, W] into an 8-bit PNG.
 *
 * <ul>
 *   <li>pixel space, 1 or 3 channels: value x ∈ [−1, 1] → clamp(⌊127.5·x + 128⌋, 0, 255), as the reference saves
 *       images;
 *   <li>latent space (4-channel SD-VAE latents): a cheap preview without the VAE, the published per-pixel linear
 *       map latent → RGB, then clamp((v + 1)/2, 0, 1)·255;
 *   <li>anything else: the first channel as grayscale.
 * </ul>
 */
public final class ImageCodec {
    /** SD 1.x latent → RGB factors: rows = latent channels 0..3, columns = R, G, B. */
    static final float[][] LATENT_RGB = {
        {0.3512f, 0.2297f, 0.3227f},
        {0.3250f, 0.4974f, 0.2350f},
        {-0.2829f, 0.1762f, 0.2721f},
        {-0.2120f, -0.2616f, -0.7177f},
    };

    static {
        // in memory, not ImageIO's default temporary-file cache: that cache registers a JVM shutdown hook when a
        // stream is first opened, which fails ("Shutdown in progress") for a PNG encoded while the server drains
        // after SIGTERM
        ImageIO.setUseCache(false);
    }

    private ImageCodec() {}

    public static int toByte(float x) {
        float v = 127.5f * x + 128f;
        if (!(v > 0)) {
            return 0; // also NaN
        }
        return v >= 255f ? 255 : (int) v;
    }

    /** Renders data[offset ..] laid out [C, H, W] as an image. */
    public static BufferedImage render(float[] data, int offset, int c, int h, int w, boolean latent) {
        int hw = h * w;
        if (latent && c == 4) {
            BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
            for (int p = 0; p < hw; p++) {
                int rgb = 0;
                for (int k = 0; k < 3; k++) {
                    float v = 0;
                    for (int ch = 0; ch < 4; ch++) {
                        v += LATENT_RGB[ch][k] * data[offset + ch * hw + p];
                    }
                    float u = Math.min(1f, Math.max(0f, (v + 1) / 2));
                    rgb = (rgb << 8) | (int) (u * 255f);
                }
                img.setRGB(p % w, p / w, rgb);
            }
            return img;
        }
        if (c == 3) {
            BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
            for (int p = 0; p < hw; p++) {
                int r = toByte(data[offset + p]);
                int g = toByte(data[offset + hw + p]);
                int b = toByte(data[offset + 2 * hw + p]);
                img.setRGB(p % w, p / w, (r << 16) | (g << 8) | b);
            }
            return img;
        }
        BufferedImage img = new BufferedImage(w, h, BufferedImage.TYPE_BYTE_GRAY);
        byte[] px = ((java.awt.image.DataBufferByte) img.getRaster().getDataBuffer()).getData();
        for (int p = 0; p < hw; p++) {
            px[p] = (byte) toByte(data[offset + p]);
        }
        return img;
    }

    public static byte[] png(BufferedImage img) {
        ByteArrayOutputStream bos = new ByteArrayOutputStream(4096);
        try {
            if (!ImageIO.write(img, "png", bos)) {
                throw new IllegalStateException("no PNG writer available");
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        return bos.toByteArray();
    }

    public static byte[] png(float[] data, int offset, int c, int h, int w, boolean latent) {
        return png(render(data, offset, c, h, w, latent));
    }
}
