package io.ditserve.server.cli;

import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;

/** One row of labelled, upscaled images: the demo's overview. */
final class ContactSheet {
    private ContactSheet() {}

    static void write(List<Path> images, List<String> labels, int scale, Path out) throws IOException {
        BufferedImage first = ImageIO.read(images.get(0).toFile());
        int w = first.getWidth() * scale;
        int h = first.getHeight() * scale;
        int cell = Math.max(w, 96);
        BufferedImage sheet = new BufferedImage(cell * images.size(), h + 18, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = sheet.createGraphics();
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, sheet.getWidth(), sheet.getHeight());
        g.setColor(Color.BLACK);
        for (int i = 0; i < images.size(); i++) {
            BufferedImage img = ImageIO.read(images.get(i).toFile());
            g.drawImage(img, i * cell + (cell - w) / 2, 0, w, h, null);
            g.drawString(labels.get(i), i * cell + 4, h + 14);
        }
        g.dispose();
        ImageIO.write(sheet, "png", out.toFile());
    }
}
