package io.ditserve.client;

import io.ditserve.proto.v1.DecoderInfo;
import io.ditserve.proto.v1.GenerateRequest;
import io.ditserve.proto.v1.ModelInfo;
import io.ditserve.proto.v1.OutputFormat;
import io.ditserve.proto.v1.PreviewDecoder;
import io.ditserve.proto.v1.Sampler;
import io.grpc.StatusRuntimeException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;
import picocli.CommandLine.TypeConversionException;

/** The client side of the {@code ./dit} command line: {@code generate} and {@code models}. */
public final class ClientCommands {
    private ClientCommands() {}

    @Command(name = "generate", mixinStandardHelpOptions = true,
            description = "Stream a generation from a server and write the images (and previews) to a folder.")
    public static final class Generate implements Callable<Integer> {
        @Option(names = "--target", defaultValue = "localhost:50051", description = "server host:port (default ${DEFAULT-VALUE})")
        String target;
        @Option(names = "--model", description = "model name (default: the server's first model)")
        String model;
        @Option(names = "--label", description = "class models: class name or id; 'none' for unconditional "
                + "(default: class 0)")
        String label;
        @Option(names = "--prompt", description = "text-to-image models: what to draw")
        String prompt;
        @Option(names = "--negative-prompt", description = "text-to-image models: what to steer away from (default: "
                + "the model's, normally empty)")
        String negativePrompt;
        @Option(names = "--count", defaultValue = "1", description = "number of images (default ${DEFAULT-VALUE})")
        int count;
        @Option(names = "--steps", defaultValue = "0", description = "denoising steps (default: the model's)")
        int steps;
        @Option(names = "--sampler", description = "VP models (DiT): ddpm, ddim or dpmpp-2m (DPM-Solver++(2M)); flow "
                + "models (SiT, REPA): euler, heun, euler-maruyama or dpmpp-2m (default: the model's)")
        String sampler;
        @Option(names = "--guidance-interval", paramLabel = "LOW,HIGH", split = ",",
                description = "flow models: guide only the steps whose start time lies in [LOW, HIGH], in the "
                        + "network's own time (default: the model's)")
        List<Float> guidanceInterval;
        @Option(names = "--timestep-shift", description = "flow models: shift the time grid, s -> k·s/(1+(k-1)·s) "
                + "(default: the model's; 1 = none)")
        Float timestepShift;
        @Option(names = "--step-cache", defaultValue = "0", paramLabel = "K",
                description = "step caching: run every transformer block only every K-th step (and the last), reuse "
                        + "blocks 1..depth-1 between (docs/STEP_CACHE.md); 0 = off (default)")
        int stepCache;
        @Option(names = "--eta", description = "DDIM eta in [0, 1] (default: the model's)")
        Float eta;
        @Option(names = "--guidance", description = "classifier-free guidance scale; 1 = none (default: the model's)")
        Float guidance;
        @Option(names = "--seed", defaultValue = "0", description = "base seed; 0 = random (image i uses seed + i)")
        long seed;
        @Option(names = "--initial-noise", paramLabel = "FILE", description = "start from this noise instead of the "
                + "seed's: little-endian float32, shape in the name (NAME.CxHxW.f32 or NAME.NxCxHxW.f32 for --count N)")
        Path initialNoise;
        @Option(names = "--out", defaultValue = "out", description = "output folder (default ${DEFAULT-VALUE})")
        Path out;
        @Option(names = "--previews", description = "save preview frames and an animated GIF per image")
        boolean previews;
        @Option(names = "--preview-interval", defaultValue = "0", description = "preview every k steps (default: about 10 frames)")
        int previewInterval;
        @Option(names = "--preview-decoder", paramLabel = "linear|tiny|full", converter = PreviewDecoderConverter.class,
                description = "latent models: how previews are decoded: linear (latent-sized, free), tiny (TAESD) "
                        + "or full (the VAE) (default: the server's choice, tiny when the model has TAESD)")
        PreviewDecoder previewDecoder;
        @Option(names = "--format", split = ",", paramLabel = "FORMAT", converter = FormatConverter.class,
                description = "what to save per image, repeatable or comma-separated (default: png): png; tensor = the "
                        + "raw float32 sample (the latent for latent models); image-tensor = the decoded float32 image. "
                        + "Tensors are written as little-endian .f32 files with the shape in the name")
        List<OutputFormat> formats = new ArrayList<>();
        @Option(names = "--tensor", description = "also save the raw float32 sample (same as adding --format tensor)")
        boolean tensor;
        @Option(names = "--deadline", defaultValue = "0", description = "seconds before the server gives up (0 = none)")
        long deadline;
        @picocli.CommandLine.Mixin
        Connection connection = new Connection();

        @Override
        public Integer call() throws Exception {
            try (DitClient client = connection.open(target)) {
                ModelInfo info = model == null ? first(client.listModels()) : client.getModel(model);
                GenerateRequest request = buildRequest(info);
                GenerationWriter.Written w = new GenerationWriter(System.out, 4)
                        .run(client, request, info, out, deadline);
                System.out.printf("wrote %d image(s)%s to %s in %.1f s; seeds %s%n", w.images().size(),
                        w.tensors().isEmpty() ? "" : " and " + w.tensors().size() + " tensor file(s)",
                        out.toAbsolutePath(), w.seconds(), w.seeds());
                if (w.previewFrames() > 0) {
                    System.out.printf("previews: %d frame(s), %s%n", w.previewFrames(), previewKind(info, w.previewDecoder()));
                }
                w.animations().forEach(g -> System.out.println("animation: " + g));
                w.tensors().forEach(t -> System.out.println("tensor: " + t));
                return 0;
            } catch (StatusRuntimeException e) {
                System.err.println("error: " + e.getStatus().getCode() + ": " + e.getStatus().getDescription());
                return 1;
            }
        }

        GenerateRequest buildRequest(ModelInfo info) {
            GenerateRequest.Builder b = GenerateRequest.newBuilder().setModel(info.getName()).setNumImages(count)
                    .setSteps(steps).setSeed(seed);
            boolean text = info.getConditioning().equals("text");
            if (text || prompt != null || negativePrompt != null) {
                if (label != null) {
                    throw new IllegalArgumentException("--label is for class models; model " + info.getName()
                            + (text ? " takes --prompt" : " takes --label"));
                }
                b.setPrompt(prompt == null ? "" : prompt);
                if (negativePrompt != null) {
                    b.setNegativePrompt(negativePrompt);
                }
            } else if (label == null) {
                b.setClassId(0);
            } else if (label.equalsIgnoreCase("none")) {
                b.setUnconditional(true);
            } else if (label.matches("\\d+")) {
                b.setClassId(Integer.parseInt(label));
            } else {
                b.setClassName(label);
            }
            if (sampler != null) {
                b.setSampler(switch (sampler.toLowerCase()) {
                    case "ddpm" -> Sampler.SAMPLER_DDPM;
                    case "ddim" -> Sampler.SAMPLER_DDIM;
                    case "dpmpp-2m", "dpmpp_2m" -> Sampler.SAMPLER_DPMPP_2M;
                    case "euler" -> Sampler.SAMPLER_EULER;
                    case "heun" -> Sampler.SAMPLER_HEUN;
                    case "euler-maruyama", "euler_maruyama" -> Sampler.SAMPLER_EULER_MARUYAMA;
                    default -> throw new IllegalArgumentException("--sampler must be ddpm, ddim, dpmpp-2m, euler, heun "
                            + "or euler-maruyama, got " + sampler);
                });
            }
            if (guidanceInterval != null) {
                if (guidanceInterval.size() != 2) {
                    throw new IllegalArgumentException("--guidance-interval takes LOW,HIGH, got " + guidanceInterval);
                }
                b.setGuidanceInterval(io.ditserve.proto.v1.GuidanceInterval.newBuilder()
                        .setLow(guidanceInterval.get(0)).setHigh(guidanceInterval.get(1)));
            }
            if (timestepShift != null) {
                b.setTimestepShift(timestepShift);
            }
            if (eta != null) {
                b.setEta(eta);
            }
            if (stepCache != 0) {
                b.setStepCache(io.ditserve.proto.v1.StepCacheSettings.newBuilder()
                        .setMethod(io.ditserve.proto.v1.StepCacheMethod.STEP_CACHE_INTERVAL).setInterval(stepCache));
            }
            if (guidance != null) {
                b.setGuidanceScale(guidance);
            }
            if (previews || previewInterval > 0) {
                int total = steps > 0 ? steps : info.getDefaults().getSteps();
                b.setPreviewInterval(previewInterval > 0 ? previewInterval : Math.max(1, total / 10));
            }
            if (previewDecoder != null) {
                b.setPreviewDecoder(previewDecoder);
            }
            if (initialNoise != null) {
                try {
                    b.setInitialNoise(NoiseFile.read(initialNoise));
                } catch (java.io.IOException e) {
                    throw new IllegalArgumentException("--initial-noise " + initialNoise + ": " + e.getMessage(), e);
                }
            }
            b.addAllOutputFormats(outputFormats());
            return b.build();
        }

        /** The requested formats without repeats, in the order given; PNG when none is given. */
        Set<OutputFormat> outputFormats() {
            Set<OutputFormat> f = new LinkedHashSet<>();
            if (formats.isEmpty()) {
                f.add(OutputFormat.OUTPUT_FORMAT_PNG);
            }
            f.addAll(formats);
            if (tensor) {
                f.add(OutputFormat.OUTPUT_FORMAT_TENSOR);
            }
            return f;
        }
    }

    /** {@code png}, {@code tensor}, {@code image-tensor} (case and {@code -}/{@code _} insensitive). */
    static final class FormatConverter implements ITypeConverter<OutputFormat> {
        @Override
        public OutputFormat convert(String value) {
            return switch (value.trim().toLowerCase(Locale.ROOT).replace('_', '-')) {
                case "png" -> OutputFormat.OUTPUT_FORMAT_PNG;
                case "tensor" -> OutputFormat.OUTPUT_FORMAT_TENSOR;
                case "image-tensor" -> OutputFormat.OUTPUT_FORMAT_IMAGE_TENSOR;
                default -> throw new TypeConversionException(
                        "expected png, tensor or image-tensor, got '" + value + "'");
            };
        }
    }

    /** {@code linear}, {@code tiny} ({@code taesd}), {@code full} ({@code vae}), case-insensitive. */
    static final class PreviewDecoderConverter implements ITypeConverter<PreviewDecoder> {
        @Override
        public PreviewDecoder convert(String value) {
            return switch (value.trim().toLowerCase(Locale.ROOT)) {
                case "linear" -> PreviewDecoder.PREVIEW_DECODER_LINEAR;
                case "tiny", "taesd" -> PreviewDecoder.PREVIEW_DECODER_TINY;
                case "full", "vae" -> PreviewDecoder.PREVIEW_DECODER_FULL;
                default -> throw new TypeConversionException("expected linear, tiny or full, got '" + value + "'");
            };
        }
    }

    @Command(name = "models", mixinStandardHelpOptions = true, description = "List the models a server serves.")
    public static final class Models implements Callable<Integer> {
        @Option(names = "--target", defaultValue = "localhost:50051", description = "server host:port (default ${DEFAULT-VALUE})")
        String target;

        @picocli.CommandLine.Mixin
        Connection connection = new Connection();

        @Override
        public Integer call() throws Exception {
            try (DitClient client = connection.open(target)) {
                for (ModelInfo m : client.listModels()) {
                    describe(m).forEach(System.out::println);
                }
                return 0;
            } catch (StatusRuntimeException e) {
                System.err.println("error: " + e.getStatus().getCode() + ": " + e.getStatus().getDescription());
                return 1;
            }
        }
    }

    /** The lines {@code ./dit models} prints for one model. */
    static List<String> describe(ModelInfo m) {
        List<String> lines = new ArrayList<>();
        lines.add(String.format(Locale.ROOT,
                "%s  backend=%s  %dx%d x%d ch (%s)  patch %d, depth %d, width %d, heads %d, %.1f M params",
                m.getName(), m.getBackend(), m.getImageSize(), m.getImageSize(), m.getInChannels(), m.getSpace(),
                m.getPatchSize(), m.getDepth(), m.getHiddenSize(), m.getNumHeads(), m.getParameters() / 1e6));
        // a server from before decoders does not fill output_image_size: its images are the samples
        int px = m.getOutputImageSize() > 0 ? m.getOutputImageSize() : m.getImageSize();
        String how = !"latent".equals(m.getSpace()) ? ""
                : px != m.getImageSize() ? String.format(" (the %dx%d latent decoded by the vae)", m.getImageSize(),
                        m.getImageSize())
                : " (the latent itself: no vae)";
        lines.add(String.format(Locale.ROOT, "  output: %dx%d px%s", px, px, how));
        for (DecoderInfo d : m.getDecodersList()) {
            lines.add(String.format(Locale.ROOT, "  decoder %s: %s, f=%d, channels %s, %.2f M params%s",
                    d.getRole(), d.getClassName(), d.getScaleFactor(), d.getBlockOutChannelsList(),
                    d.getParameters() / 1e6, d.getBackend().isEmpty() ? "" : " (backend " + d.getBackend() + ")"));
        }
        lines.add(String.format(Locale.ROOT, "  defaults: %s, %d steps, guidance %.2f (%s), eta %.2f",
                m.getDefaults().getSampler(), m.getDefaults().getSteps(), m.getDefaults().getGuidanceScale(),
                m.getDefaults().getGuidanceMode(), m.getDefaults().getEta()));
        lines.add("  classes: " + m.getClassesList().stream().map(c -> c.getId() + "=" + c.getName()).limit(20)
                .toList() + (m.getClassesCount() > 20 ? " … (" + m.getClassesCount() + ")" : ""));
        return lines;
    }

    /** How the previews of a model were rendered, in words (pixel models: always the clean-image estimate). */
    static String previewKind(ModelInfo model, PreviewDecoder d) {
        if (!"latent".equals(model.getSpace()) || d == null) {
            return "the clean-image estimate";
        }
        return switch (d) {
            case PREVIEW_DECODER_LINEAR -> "linear latent-to-RGB map (latent-sized)";
            case PREVIEW_DECODER_TINY -> "tiny decoder (TAESD)";
            case PREVIEW_DECODER_FULL -> "full decoder (VAE)";
            default -> "rendered as the server chose";
        };
    }

    /** TLS and authentication options shared by the commands. */
    public static final class Connection {
        @Option(names = "--ca", description = "PEM CA certificate: connect with TLS")
        java.io.File ca;
        @Option(names = "--cert", description = "PEM client certificate (mutual TLS)")
        java.io.File cert;
        @Option(names = "--key", description = "PEM client private key (mutual TLS)")
        java.io.File key;
        @Option(names = "--token", description = "bearer token (default: $DIT_TOKEN)")
        String token;

        DitClient open(String target) throws java.io.IOException {
            String t = token != null ? token : System.getenv("DIT_TOKEN");
            if (ca == null && t == null) {
                return DitClient.connect(target);
            }
            return DitClient.connect(target, ca, cert, key, t);
        }
    }

    static ModelInfo first(List<ModelInfo> models) {
        if (models.isEmpty()) {
            throw new IllegalStateException("the server has no models");
        }
        return models.get(0);
    }
}
