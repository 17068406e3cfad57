package io.ditserve.client;

import io.ditserve.proto.v1.FloatTensor;
import io.ditserve.proto.v1.GenerateEvent;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.PreviewDecoder;
import java.awt.Graphics2D;
import java.awt.RenderingHints;
import java.awt.image.BufferedImage;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import javax.imageio.ImageIO;

/**
 * Streams one generation into a folder: one PNG per image ({@code MODEL-LABEL-SEED.png}); float tensors as raw
 * little-endian float32 files with the shape in the name ({@code MODEL-LABEL-SEED.tensor.4x32x32.f32} for the
 * sample, the latent of a latent model; {@code MODEL-LABEL-SEED.image.3x256x256.f32} for the decoded image); with
 * previews, every preview frame ({@code MODEL-LABEL-SEED-step0010.png}) and an animated GIF of the denoising per
 * image. Prints a progress bar (one line, redrawn; the decode time at the end) and the seeds to {@code out}.
 */
public final class GenerationWriter {
    /** GIF frames are scaled up by at most the given factor, and not beyond this many pixels per side. */
    static final int GIF_MAX_SIDE = 256;

    private final PrintStream out;
    private final int gifScale;
    private final boolean console;

    public GenerationWriter(PrintStream out, int gifScale) {
        this(out, gifScale, System.console() != null);
    }

    /** {@code console}: redraw one progress bar line; otherwise print a line per tenth of the run (logs, CI). */
    public GenerationWriter(PrintStream out, int gifScale, boolean console) {
        this.out = out;
        this.gifScale = gifScale;
        this.console = console;
    }

    /**
     * What a finished generation wrote.
     *
     * @param images the PNG files, in the order the results came
     * @param animations one GIF per image that had preview frames
     * @param seeds the seeds of the images, from the Accepted event
     * @param seconds wall time of the whole call
     * @param tensors the {@code .f32} files (samples and decoded images), in the order the results came
     * @param previewFrames the number of preview frames received
     * @param previewDecoder how the server rendered the previews, or null without previews
     * @param decodeSeconds the server's decode time (the VAE, latent models; 0 otherwise)
     */
    public record Written(List<Path> images, List<Path> animations, List<Long> seeds, double seconds,
                          List<Path> tensors, int previewFrames, PreviewDecoder previewDecoder,
                          double decodeSeconds) {}

    public Written run(DitClient client, GenerateRequest request, ModelInfo model, Path dir, long deadlineSeconds)
            throws IOException {
        try (DitClient.EventStream events = client.generate(request, deadlineSeconds)) {
            return write(events, request, model, dir);
        }
    }

    /** Writes the events of one generation (as {@link DitClient#generate} returns them) into {@code dir}. */
    public Written write(Iterator<GenerateEvent> events, GenerateRequest request, ModelInfo model, Path dir)
            throws IOException {
        Files.createDirectories(dir);
        String label = switch (request.getLabelCase()) {
            case CLASS_ID -> request.getClassId() >= 0 && request.getClassId() < model.getClassesCount()
                    ? safe(model.getClasses(request.getClassId()).getName()) : "class" + request.getClassId();
            case CLASS_NAME -> safe(request.getClassName());
            // a prompt: its words, cut to 60 characters (the seed keeps names apart)
            default -> request.getPrompt().isEmpty() ? "uncond" : promptSlug(request.getPrompt());
        };
        String prefix = safe(model.getName()) + "-" + label + "-";
        List<Path> images = new ArrayList<>();
        List<Path> tensors = new ArrayList<>();
        List<Path> gifs = new ArrayList<>();
        List<Long> seeds = new ArrayList<>();
        Map<Integer, List<BufferedImage>> frames = new TreeMap<>();
        int previewFrames = 0;
        PreviewDecoder previewDecoder = null;
        int lastStep = 0;
        int lastTotal = 0;
        double lastElapsed = 0;
        double decodeSeconds = 0;
        boolean decodeShown = false;
        boolean progressShown = false;
        long t0 = System.nanoTime();
        while (events.hasNext()) {
            GenerateEvent e = events.next();
            switch (e.getEventCase()) {
                case ACCEPTED -> {
                    var a = e.getAccepted();
                    seeds.addAll(a.getSeedsList());
                    out.printf("request %s on %s/%s: %d image(s), %d steps, %s, guidance %.2f, seeds %s%n",
                            a.getRequestId(), a.getModel(), a.getBackend(), seeds.size(), a.getSteps(),
                            a.getSampler(), a.getGuidanceScale(), seeds);
                    if (a.getQueuePosition() > 0) {
                        out.printf("queued at position %d%n", a.getQueuePosition());
                    }
                }
                case QUEUED -> out.printf("queued at position %d%n", e.getQueued().getQueuePosition());
                case PROGRESS -> {
                    var p = e.getProgress();
                    lastStep = p.getStep();
                    lastTotal = p.getTotalSteps();
                    lastElapsed = p.getElapsedSeconds();
                    progressShown |= progress(lastStep, lastTotal, lastElapsed, -1, false);
                }
                case PREVIEW -> {
                    var p = e.getPreview();
                    byte[] png = p.getPng().toByteArray();
                    frames.computeIfAbsent(p.getImageIndex(), k -> new ArrayList<>()).add(decode(png));
                    Files.write(dir.resolve(String.format("%s%d-step%04d.png", prefix,
                            seed(seeds, p.getImageIndex()), p.getStep())), png);
                    previewFrames++;
                    if (previewDecoder == null) {
                        previewDecoder = p.getDecoder();
                    }
                }
                case RESULT -> {
                    var r = e.getResult();
                    String base = prefix + r.getSeed();
                    if (!decodeShown && r.getTimings().getDecodeSeconds() > 0) {
                        decodeSeconds = r.getTimings().getDecodeSeconds();
                        progressShown |= progress(lastStep, lastTotal, lastElapsed, decodeSeconds, true);
                        decodeShown = true;
                    }
                    List<BufferedImage> fr = frames.remove(r.getImageIndex());
                    if (!r.getPng().isEmpty()) {
                        Path f = dir.resolve(base + ".png");
                        Files.write(f, r.getPng().toByteArray());
                        images.add(f);
                        if (fr != null) {
                            fr.add(decode(r.getPng().toByteArray()));
                        }
                    }
                    if (fr != null) {
                        Path g = dir.resolve(base + ".gif");
                        writeGif(fr, g);
                        gifs.add(g);
                    }
                    if (r.hasTensor()) {
                        tensors.add(writeTensor(r.getTensor(), dir, base + ".tensor"));
                    }
                    if (r.hasImageTensor()) {
                        tensors.add(writeTensor(r.getImageTensor(), dir, base + ".image"));
                    }
                }
                default -> { }
            }
        }
        // frames of images whose result never came (a cancelled stream ends with an error before this point)
        for (var entry : frames.entrySet()) {
            Path g = dir.resolve(prefix + seed(seeds, entry.getKey()) + ".gif");
            writeGif(entry.getValue(), g);
            gifs.add(g);
        }
        if (progressShown && console) {
            out.println();
        }
        return new Written(images, gifs, seeds, (System.nanoTime() - t0) / 1e9, tensors, previewFrames,
                previewDecoder, decodeSeconds);
    }

    /** The file name of a tensor: {@code base.CxHxW.f32}. */
    static String tensorFileName(String base, List<Integer> shape) {
        return base + "." + shape.stream().map(String::valueOf).collect(Collectors.joining("x")) + ".f32";
    }

    private static Path writeTensor(FloatTensor t, Path dir, String base) throws IOException {
        long values = 1;
        for (int d : t.getShapeList()) {
            if (d < 0) {
                throw new IOException("server sent a tensor with shape " + t.getShapeList());
            }
            values *= d;
        }
        if (t.getShapeCount() == 0 || values * 4 != t.getData().size()) {
            throw new IOException("server sent " + t.getData().size() + " bytes for a float32 tensor of shape "
                    + t.getShapeList());
        }
        Path f = dir.resolve(tensorFileName(base, t.getShapeList()));
        Files.write(f, t.getData().toByteArray()); // already little-endian float32, row-major
        return f;
    }

    private static long seed(List<Long> seeds, int index) {
        return index >= 0 && index < seeds.size() ? seeds.get(index) : index;
    }

    /** Returns whether it printed anything. */
    private boolean progress(int step, int total, double elapsed, double decode, boolean force) {
        String tail = decode >= 0 ? String.format(", decode %.2fs", decode) : "";
        if (!console) {
            // not a terminal (logs, CI): one line per tenth of the run instead of a redrawn bar
            if (force || total == 0 || step == total || step * 10 / total != (step - 1) * 10 / total) {
                out.printf("step %d/%d %.1fs%s%n", step, total, elapsed, tail);
                return true;
            }
            return false;
        }
        int width = 30;
        int filled = total == 0 ? width : Math.min(width, step * width / total);
        out.printf("\r[%s%s] %d/%d steps %.1fs%s", "#".repeat(filled), ".".repeat(width - filled), step, total,
                elapsed, tail);
        out.flush();
        return true;
    }

    /** Frames of different sizes (latent-sized linear previews, a full-size result) are scaled to the largest. */
    private void writeGif(List<BufferedImage> frames, Path file) throws IOException {
        int w = 0;
        int h = 0;
        for (BufferedImage f : frames) {
            w = Math.max(w, f.getWidth());
            h = Math.max(h, f.getHeight());
        }
        int k = Math.max(1, Math.min(gifScale, GIF_MAX_SIDE / Math.max(w, h)));
        int gw = w * k;
        int gh = h * k;
        AnimatedGif.write(frames.stream().map(f -> resize(f, gw, gh)).toList(), 120, file);
    }

    private static BufferedImage resize(BufferedImage src, int w, int h) {
        BufferedImage dst = new BufferedImage(w, h, BufferedImage.TYPE_INT_RGB);
        Graphics2D g = dst.createGraphics();
        try {
            g.setRenderingHint(RenderingHints.KEY_INTERPOLATION, RenderingHints.VALUE_INTERPOLATION_NEAREST_NEIGHBOR);
            g.drawImage(src, 0, 0, w, h, null);
        } finally {
            g.dispose();
        }
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

    /** A file-name part from a prompt: lower-case words joined by '_', at most 60 characters. */
    static String promptSlug(String prompt) {
        String s = prompt.toLowerCase(java.util.Locale.ROOT).replaceAll("[^a-z0-9]+", "_").replaceAll("^_+|_+$", "");
        s = s.length() > 60 ? s.substring(0, 60).replaceAll("_+$", "") : s;
        return s.isEmpty() ? "prompt" : s;
    }

    static String safe(String s) {
        return s.replaceAll("[^A-Za-z0-9._-]+", "_");
    }
}
