package io.ditserve.client;

import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import java.awt.Image;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.imageio.ImageIO;

/**
 * Streams one generation into a folder: one PNG per image; with previews, every preview frame and an animated GIF
 * of the denoising per image. Prints a progress bar (one line, redrawn) and the seeds to {@code out}.
 */
public final class GenerationWriter {
    private final PrintStream out;
    private final int gifScale;

    public GenerationWriter(PrintStream out, int gifScale) {
        this.out = out;
        this.gifScale = gifScale;
    }

    /** What a finished generation wrote. */
    public record Written(List<Path> images, List<Path> animations, List<Long> seeds, double seconds) {}

    public Written run(DitClient client, GenerateRequest request, ModelInfo model, Path dir, long deadlineSeconds)
            throws IOException {
        Files.createDirectories(dir);
        String label = switch (request.getLabelCase()) {
            case CLASS_ID -> request.getClassId() >= 0 && request.getClassId() < model.getClassesCount()
                    ? safe(model.getClasses(request.getClassId()).getName()) : "class" + request.getClassId();
            case CLASS_NAME -> safe(request.getClassName());
            default -> "uncond";
        };
        List<Path> images = new ArrayList<>();
        List<Path> gifs = new ArrayList<>();
        List<Long> seeds = new ArrayList<>();
        Map<Integer, List<BufferedImage>> frames = new HashMap<>();
        long t0 = System.nanoTime();
        try (DitClient.EventStream events = client.generate(request, deadlineSeconds)) {
            while (events.hasNext()) {
                GenerateEvent e = events.next();
                switch (e.getEventCase()) {
                    case ACCEPTED -> {
                        seeds.addAll(e.getAccepted().getSeedsList());
                        out.printf("request %s on %s/%s: %d image(s), %d steps, %s, guidance %.2f, seeds %s%n",
                                e.getAccepted().getRequestId(), e.getAccepted().getModel(), e.getAccepted().getBackend(),
                                seeds.size(), e.getAccepted().getSteps(), e.getAccepted().getSampler(),
                                e.getAccepted().getGuidanceScale(), seeds);
                        if (e.getAccepted().getQueuePosition() > 0) {
                            out.printf("queued at position %d%n", e.getAccepted().getQueuePosition());
                        }
                    }
                    case QUEUED -> out.printf("queued at position %d%n", e.getQueued().getQueuePosition());
                    case PROGRESS -> progress(e.getProgress().getStep(), e.getProgress().getTotalSteps(),
                            e.getProgress().getElapsedSeconds());
                    case PREVIEW -> {
                        var p = e.getPreview();
                        BufferedImage img = decode(p.getPng().toByteArray());
                        frames.computeIfAbsent(p.getImageIndex(), k -> new ArrayList<>()).add(img);
                        Path f = dir.resolve(String.format("%s-%s-%d-step%04d.png", model.getName(), label,
                                seeds.get(p.getImageIndex()), p.getStep()));
                        Files.write(f, p.getPng().toByteArray());
                    }
                    case RESULT -> {
                        var r = e.getResult();
                        String base = String.format("%s-%s-%d", model.getName(), label, r.getSeed());
                        if (!r.getPng().isEmpty()) {
                            Path f = dir.resolve(base + ".png");
                            Files.write(f, r.getPng().toByteArray());
                            images.add(f);
                            List<BufferedImage> fr = frames.get(r.getImageIndex());
                            if (fr != null) {
                                fr.add(decode(r.getPng().toByteArray()));
                                Path g = dir.resolve(base + ".gif");
                                AnimatedGif.write(fr.stream().map(this::scale).toList(), 120, g);
                                gifs.add(g);
                            }
                        }
                        if (r.hasTensor()) {
                            Path f = dir.resolve(base + ".f32");
                            Files.write(f, r.getTensor().getData().toByteArray());
                            images.add(f);
                        }
                    }
                    default -> { }
                }
            }
        }
        out.println();
        return new Written(images, gifs, seeds, (System.nanoTime() - t0) / 1e9);
    }

    private void progress(int step, int total, double elapsed) {
        if (System.console() == null) {
            // not a terminal (logs, CI): one line per tenth of the run instead of a redrawn bar
            if (step == total || step * 10 / total != (step - 1) * 10 / total) {
                out.printf("step %d/%d %.1fs%n", step, total, elapsed);
            }
            return;
        }
        int width = 30;
        int filled = total == 0 ? width : step * width / total;
        out.printf("\r[%s%s] %d/%d steps %.1fs", "#".repeat(filled), ".".repeat(width - filled), step, total, elapsed);
        out.flush();
    }

    private BufferedImage scale(BufferedImage src) {
        if (gifScale <= 1) {
            return src;
        }
        int w = src.getWidth() * gifScale;
        int h = src.getHeight() * gifScale;
        BufferedImage dst = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        Image scaled = src.getScaledInstance(w, h, Image.SCALE_FAST);
        dst.getGraphics().drawImage(scaled, 0, 0, null);
        return dst;
    }

    private static BufferedImage decode(byte[] png) {
        try {
            BufferedImage img = ImageIO.read(new ByteArrayInputStream(png));
            if (img == null) {
                throw new IOException("server sent an undecodable PNG");
            }
            return img;
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    static String safe(String s) {
        return s.replaceAll("[^A-Za-z0-9._-]+", "_");
    }
}
