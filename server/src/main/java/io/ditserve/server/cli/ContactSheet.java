package io.ditserve.server.cli;

import java.awt.Color;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.IOException;
import java.nio.file.Path;
import java.util.List;
import javax.imageio.ImageIO;

/** The demo's overview: one row of labelled images per model, every image drawn at the same size. */
final class ContactSheet {
    /** One model's row: its name and its images with their labels. */
    record Row(String title, List<Path> images, List<String> labels) {}

    private static final int TITLE = 130;

    private ContactSheet() {}

    /** Draws every image as a {@code size}×{@code size} square (nearest neighbour: the pixels stay visible). */
    static void write(List<Row> rows, int size, Path out) throws IOException {
        int cell = Math.max(size, 96);
        int cols = rows.stream().mapToInt(r -> r.images().size()).max().orElse(0);
        int rowH = size + 48; // up to three lines of label (a prompt wraps at word boundaries)
        BufferedImage sheet = new BufferedImage(TITLE + cell * cols, rowH * rows.size(), BufferedImage.TYPE_INT_RGB);
        Graphics2D g = sheet.createGraphics();
        g.setRenderingHint(RenderingHints.KEY_INTERPOLATION, RenderingHints.VALUE_INTERPOLATION_NEAREST_NEIGHBOR);
        g.setColor(Color.WHITE);
        g.fillRect(0, 0, sheet.getWidth(), sheet.getHeight());
        g.setColor(Color.BLACK);
        for (int r = 0; r < rows.size(); r++) {
            Row row = rows.get(r);
            int y = r * rowH;
            g.drawString(row.title(), 4, y + size / 2);
            for (int i = 0; i < row.images().size(); i++) {
                BufferedImage img = ImageIO.read(row.images().get(i).toFile());
                g.drawImage(img, TITLE + i * cell + (cell - size) / 2, y, size, size, null);
                java.util.List<String> lines = wrap(row.labels().get(i), g.getFontMetrics(), cell - 8);
                for (int l = 0; l < Math.min(3, lines.size()); l++) {
                    g.drawString(lines.get(l), TITLE + i * cell + 4, y + size + 14 + 14 * l);
                }
            }
        }
        g.dispose();
        ImageIO.write(sheet, "png", out.toFile());
    }

    /** The words of {@code text} in lines no wider than {@code width} pixels (a longer word gets a line of its own). */
    static java.util.List<String> wrap(String text, java.awt.FontMetrics fm, int width) {
        java.util.List<String> lines = new java.util.ArrayList<>();
        StringBuilder line = new StringBuilder();
        for (String word : text.split(" ")) {
            String next = line.isEmpty() ? word : line + " " + word;
            if (fm.stringWidth(next) > width && !line.isEmpty()) {
                lines.add(line.toString());
                line = new StringBuilder(word);
            } else {
                line = new StringBuilder(next);
            }
        }
        if (!line.isEmpty()) {
            lines.add(line.toString());
        }
        return lines;
    }
}
