package io.ditserve.backend.cuda;

import io.ditserve.backend.ForwardBatch;
import io.ditserve.backend.Conditioning;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderConfigs;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.StepCache;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.TextFixtures;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;

/**
 * The GPU checks of the cuda backend, as a program for a GPU machine without Maven or JUnit and as the helpers of
 * {@link CudaGpuTest} and {@link FakeCudaTest}. It lives in the test sources (it reads the fixtures with
 * backends/testkit's {@link Fixtures}, {@link TextFixtures} and {@link DecoderFixtures}); tools/gpu/make_bundle.sh
 * packs the compiled test classes with the jars, and tools/gpu/run_cuda_checks.sh runs it from that bundle
 * (docs/gpu/README.md):
 *
 * <pre>
 * java --enable-native-access=ALL-UNNAMED --add-modules jdk.incubator.vector -cp '.bundle/lib/*' \
 *     io.ditserve.backend.cuda.CudaParityCheck [REPO_ROOT] [--decoder-cases DIR] [--decoders-only | --only MODEL]
 * </pre>
 *
 * With Maven on the GPU machine: the same class on the module's test class path (backends/cuda/README.md, "Tests"
 * gives the two commands), or {@code mvn -o -pl backends/cuda test -Dtest=CudaGpuTest}, the same checks as JUnit
 * tests.
 *
 * <p>REPO_ROOT (default: {@link Fixtures#repoRoot}) holds tools/fixtures and models/fashion-dit. A DiT fixture model
 * whose files are not there is skipped with a SKIP line naming them (the device tool carries at most 64 MiB a call:
 * tools/gpu/slim_tree.sh and docs/gpu/README.md, "Carrying the checks"); {@code --only MODEL} runs the DiT checks
 * of that model alone.
 *
 * The DiT checks, SD3's MMDiT and text encoders ({@link #textChecks}), then the latent decoders'
 * ({@link #decoderChecks}): the committed small fixtures, the real-shape fixtures of target/decoder-fixtures when
 * they were made, and with {@code --decoder-cases} the folders of tools/gpu/make_decoder_cases.py (the sd-vae-ft-*
 * and TAESD architectures with random weights, latents of 32×32 and 64×64: 256 and 512 px images, against a float64
 * PyTorch reference). {@code --decoders-only} skips the DiT and SD3 checks.
 *
 * <p>Prints one PASS/FAIL line per check and exits 0 when all pass, 1 when one fails, 2 when the backend cannot run.
 */
public final class CudaParityCheck {
    /** max |error| / max |reference| allowed with float32 matrix products. */
    static final double FP32_TOLERANCE = 1e-4;
    /** The same with TF32 tensor-core products (10-bit mantissa inputs). */
    static final double TF32_TOLERANCE = 5e-3;
    /** The same with bfloat16 tensor-core products (8-bit mantissa inputs, float32 accumulation). */
    static final double BF16_TOLERANCE = 3e-2;
    /**
     * The decoders' tolerances with TF32 and bfloat16 products: about 30 convolutions in a row, so looser than the
     * DiT's. First guesses, to be set from the errors a GPU run prints (fp32 keeps {@link #FP32_TOLERANCE}).
     */
    static final double DECODER_TF32_TOLERANCE = 2e-2;
    static final double DECODER_BF16_TOLERANCE = 6e-2;

    private final Map<String, String> baseOptions;

    /** {@code baseOptions}: backend options added to every check's own (e.g. {@code cuda.lib_path}). */
    CudaParityCheck(Map<String, String> baseOptions) {
        this.baseOptions = Map.copyOf(baseOptions);
    }

    static double decoderTolerance(String precision) {
        return switch (precision) {
            case "tf32" -> DECODER_TF32_TOLERANCE;
            case "bf16" -> DECODER_BF16_TOLERANCE;
            default -> FP32_TOLERANCE;
        };
    }

    static double tolerance(String precision) {
        return switch (precision) {
            case "tf32" -> TF32_TOLERANCE;
            case "bf16" -> BF16_TOLERANCE;
            default -> FP32_TOLERANCE;
        };
    }

    /** The options of every check's backend: one thread, the base options and {@code options} over them. */
    BackendOptions options(Map<String, String> options) {
        Map<String, String> all = new HashMap<>(baseOptions);
        all.putAll(options);
        return new BackendOptions(1, all);
    }

    Backend cuda(String model, Map<String, String> options) throws BackendException {
        return new CudaBackendProvider().create(Fixtures.spec(model), options(options));
    }

    /** Relative error of the backend on a model's PyTorch case. */
    double fixtureError(String model, Map<String, String> options) throws BackendException {
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = cuda(model, options)) {
            return Fixtures.relativeError(run(b, c.x(), c.t(), c.y()), c.out());
        }
    }

    /**
     * Relative error of a pass with a step cache on a model's PyTorch cache case (some samples run the cached span
     * and store their residual, the others reuse a given one): the larger of the output's and the stored
     * residuals' errors.
     */
    double cacheError(String model, Map<String, String> options) throws BackendException {
        Fixtures.CacheCase c = Fixtures.cacheCase(model);
        int len = c.residual().stride0();
        StepCache cache = c.stepCache();
        try (Backend b = cuda(model, options)) {
            Tensor out = Tensor.zeros(c.out().shape());
            b.forward(new ForwardBatch(c.x(), c.t(), new Conditioning.ClassLabels(c.y()), cache), out, Cancellation.NEVER);
            double err = Fixtures.relativeError(out, c.out());
            for (int k : c.run()) {
                float[] expected = Arrays.copyOfRange(c.residualOut().data(), k * len, (k + 1) * len);
                err = Math.max(err, Fixtures.relativeError(cache.residual(k), expected));
            }
            return err;
        }
    }

    /**
     * Relative error against the java backend (found through ServiceLoader) on a batch of 6 random latents whose
     * samples all differ in t and y, the null class among them.
     */
    double javaBackendError(String model, Map<String, String> options) throws BackendException {
        ModelSpec spec = Fixtures.spec(model);
        Random random = new Random(11);
        Tensor x = Tensor.zeros(6, spec.inChannels(), spec.inputSize(), spec.inputSize());
        for (int i = 0; i < x.size(); i++) {
            x.data()[i] = (float) random.nextGaussian();
        }
        float[] t = {0, 999, 500, 1, 250, 750};
        int[] y = {0, spec.nullClass(), spec.numClasses() - 1, 5 % spec.numClasses(), spec.nullClass(), 3};
        BackendProvider java = Fixtures.provider("java");
        Tensor expected;
        try (Backend b = java.create(spec, new BackendOptions(Runtime.getRuntime().availableProcessors(), Map.of()))) {
            expected = run(b, x, t, y);
        }
        try (Backend b = cuda(model, options)) {
            return Fixtures.relativeError(run(b, x, t, y), expected);
        }
    }

    /**
     * Cancellation: a flag that fires at the second poll stops the pass with {@link BackendException.Cancelled}
     * after exactly 2 polls; a pass that is not cancelled polls depth + 1 times; the backend stays usable.
     * Returns null when all holds, else what did not.
     */
    String cancellationProblem(String model) throws BackendException {
        ModelSpec spec = Fixtures.spec(model);
        Fixtures.Case c = Fixtures.forwardCase(model);
        try (Backend b = cuda(model, Map.of())) {
            AtomicInteger polls = new AtomicInteger();
            Tensor out = Tensor.zeros(c.out().shape());
            try {
                b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> polls.incrementAndGet() == 2);
                return "a forward pass whose cancellation fired did not throw";
            } catch (BackendException.Cancelled expected) {
                if (polls.get() != 2) {
                    return "cancelled after " + polls.get() + " polls, expected 2";
                }
            }
            polls.set(0);
            b.forward(ForwardBatch.ofLabels(c.x(), c.t(), c.y()), out, () -> polls.incrementAndGet() < 0);
            if (polls.get() != spec.depth() + 1) {
                return "an uncancelled pass polled " + polls.get() + " times, expected " + (spec.depth() + 1);
            }
            double err = Fixtures.relativeError(out, c.out());
            return err < FP32_TOLERANCE ? null : "after a cancelled pass the error is " + err;
        }
    }

    // ---- decoders ----

    /**
     * The folder of a decoder fixture: a name of {@link DecoderFixtures#SMALL} or of {@link DecoderFixtures#REAL}
     * (a missing real-shape one fails, naming the command that makes it).
     */
    static Path decoderDir(String fixture) {
        return Arrays.asList(DecoderFixtures.REAL).contains(fixture) ? DecoderFixtures.real(fixture)
                : DecoderFixtures.small(fixture);
    }

    /** A cuda decoder of a folder, through the provider (or with other buffer budgets, to force tiling). */
    CudaDecoder decoder(Path dir, Map<String, String> options, DecoderBuffers.Budgets budgets)
            throws BackendException {
        DecoderSpec spec = DecoderConfigs.load(dir);
        BackendOptions o = options(options);
        return budgets == DecoderBuffers.DEFAULT_BUDGETS
                ? (CudaDecoder) new CudaBackendProvider().createDecoder(spec, o)
                : CudaDecoder.create(spec, o, budgets);
    }

    /** Relative error of a decoder on a cases file's latent. */
    double decoderError(Path dir, Path cases, Map<String, String> options, DecoderBuffers.Budgets budgets)
            throws BackendException {
        DecoderFixtures.Case c = DecoderFixtures.readCase(cases);
        try (CudaDecoder d = decoder(dir, options, budgets)) {
            return Fixtures.relativeError(decode(d, c.latent()), c.image());
        }
    }

    /** Relative error of a decoder on a fixture's case (a name of {@link DecoderFixtures#SMALL} or REAL). */
    double decoderError(String fixture, Map<String, String> options) throws BackendException {
        return decoderError(fixture, options, DecoderBuffers.DEFAULT_BUDGETS);
    }

    double decoderError(String fixture, Map<String, String> options, DecoderBuffers.Budgets budgets)
            throws BackendException {
        Path dir = decoderDir(fixture);
        return decoderError(dir, dir.resolve("cases.safetensors"), options, budgets);
    }

    /**
     * Buffer growth: a decoder that first decodes a smaller latent (one sample, the top-left corner) and then the
     * fixture's case gives the case's image. Returns the error of the second decode.
     */
    double decoderGrowthError(String fixture) throws BackendException {
        Path dir = decoderDir(fixture);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        try (CudaDecoder d = decoder(dir, Map.of(), DecoderBuffers.DEFAULT_BUDGETS)) {
            int h = Math.max(1, c.latent().dim(2) / 2);
            int w = Math.max(1, c.latent().dim(3) / 2);
            decode(d, Tensor.zeros(1, c.latent().dim(1), h, w));
            return Fixtures.relativeError(decode(d, c.latent()), c.image());
        }
    }

    /**
     * Cancellation: a flag that fires at the third poll stops the decode with {@link BackendException.Cancelled}
     * after exactly 3 polls; a decode that is not cancelled polls {@link DecoderProgram#pollsPerRun} times per run;
     * the decoder stays usable. Returns null when all holds, else what did not.
     */
    String decoderCancellationProblem(String fixture) throws BackendException {
        Path dir = decoderDir(fixture);
        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
        try (CudaDecoder d = decoder(dir, Map.of(), DecoderBuffers.DEFAULT_BUDGETS)) {
            AtomicInteger polls = new AtomicInteger();
            Tensor out = Tensor.zeros(c.image().shape());
            try {
                d.decode(c.latent(), out, () -> polls.incrementAndGet() == 3);
                return "a decode whose cancellation fired did not throw";
            } catch (BackendException.Cancelled expected) {
                if (polls.get() != 3) {
                    return "cancelled after " + polls.get() + " polls, expected 3";
                }
            }
            polls.set(0);
            d.decode(c.latent(), out, () -> polls.incrementAndGet() < 0);
            int expected = DecoderProgram.pollsPerRun(d.spec());
            if (polls.get() != expected) {
                return "an uncancelled decode polled " + polls.get() + " times, expected " + expected;
            }
            double err = Fixtures.relativeError(out, c.image());
            return err < FP32_TOLERANCE ? null : "after a cancelled decode the error is " + err;
        }
    }

    /** Budgets that make a decoder run one sample at a time, build columns in small tiles, chunk the scores. */
    static DecoderBuffers.Budgets smallBudgets(DecoderSpec spec, long pixels) {
        DecoderBuffers.Needs n = DecoderBuffers.needs(spec, pixels);
        return new DecoderBuffers.Budgets(n.activation(), Math.max(n.columnRows() * 3, n.columns() / 7),
                Math.max(1, n.scores() / 5));
    }

    static Tensor decode(CudaDecoder d, Tensor latent) throws BackendException {
        return DecoderFixtures.decode(d, latent);
    }

    /**
     * The decoder checks: the small fixtures first (the first with a synchronisation after every kernel), in every
     * precision; small buffers (runs of one sample, column tiles, score chunks); growth; cancellation; then the
     * real-shape fixtures when present, and the folders of {@code decoderCases} (may be null).
     */
    List<Check> decoderChecks(Path decoderCases) {
        List<Check> checks = new ArrayList<>();
        checks.add(measured("decoder vae-small fp32, synchronised after every kernel", FP32_TOLERANCE,
                () -> decoderError("vae-small", Map.of(CudaOptions.DEBUG_SYNC, "true"))));
        for (String precision : List.of("fp32", "tf32", "bf16")) {
            for (String name : DecoderFixtures.SMALL) {
                checks.add(measured("decoder " + name + " " + precision + " vs PyTorch", decoderTolerance(precision),
                        () -> decoderError(name, Map.of(CudaOptions.PRECISION, precision))));
            }
        }
        for (String name : List.of("vae-small", "taesd-small")) {
            checks.add(measured("decoder " + name + " fp32, runs of one sample, column tiles, score chunks",
                    FP32_TOLERANCE, () -> {
                        Path dir = DecoderFixtures.small(name);
                        DecoderFixtures.Case c = DecoderFixtures.decodeCase(dir);
                        DecoderSpec spec = DecoderFixtures.spec(dir);
                        return decoderError(dir, dir.resolve("cases.safetensors"), Map.of(),
                                smallBudgets(spec, (long) c.latent().dim(2) * c.latent().dim(3)));
                    }));
        }
        checks.add(measured("decoder vae-small fp32, buffers grown from a smaller latent", FP32_TOLERANCE,
                () -> decoderGrowthError("vae-small")));
        checks.add(new Check("decoder taesd-small cancellation between layers", n -> {
            String problem = decoderCancellationProblem("taesd-small");
            return new Outcome(n, -1, problem == null, problem == null ? "" : problem);
        }));
        for (String name : DecoderFixtures.REAL) {
            if (DecoderFixtures.hasReal(name)) {
                for (String precision : List.of("fp32", "tf32")) {
                    checks.add(measured("decoder " + name + " (real shapes, 5×4 latent) " + precision + " vs PyTorch",
                            decoderTolerance(precision),
                            () -> decoderError(name, Map.of(CudaOptions.PRECISION, precision))));
                }
            }
        }
        if (decoderCases != null) {
            for (String name : DecoderFixtures.REAL) {
                Path dir = decoderCases.resolve(name);
                List<Path> files = casesFiles(dir);
                if (files.isEmpty()) {
                    checks.add(new Check("decoder " + name + " cases in " + dir, n -> new Outcome(n, -1, false,
                            "no cases*.safetensors (make them with tools/gpu/make_decoder_cases.py)")));
                }
                for (Path file : files) {
                    // every precision on the largest case (the last), fp32 on the others
                    boolean last = file.equals(files.getLast());
                    for (String precision : last ? List.of("fp32", "tf32", "bf16") : List.of("fp32")) {
                        checks.add(measured("decoder " + name + " (real shapes, " + caseShape(file) + ") "
                                + precision + " vs PyTorch float64", decoderTolerance(precision),
                                () -> decoderError(dir, file, Map.of(CudaOptions.PRECISION, precision),
                                        DecoderBuffers.DEFAULT_BUDGETS)));
                    }
                }
            }
        }
        return checks;
    }

    // ---- SD3: the MMDiT and the text encoders ----

    /** A cuda MMDiT of a fixture folder ({@link TextFixtures#MMDITS}), through the provider. */
    Backend mmdit(String fixture, Map<String, String> options) throws BackendException {
        return new CudaBackendProvider().create(TextFixtures.mmditSpec(fixture), options(options));
    }

    /** Relative error of the MMDiT on the fixture's PyTorch case. */
    double mmditError(String fixture, Map<String, String> options) throws BackendException {
        TextFixtures.MmditCase c = TextFixtures.mmditCase(fixture);
        try (Backend b = mmdit(fixture, options)) {
            return Fixtures.relativeError(TextFixtures.run(b, c), c.out());
        }
    }

    /**
     * Relative error against the java backend's MMDiT (found through ServiceLoader) on n random samples, each with
     * its own time, context of {@code tokens} tokens and pooled vector.
     */
    double mmditJavaError(String fixture, int n, int tokens) throws BackendException {
        ModelSpec spec = TextFixtures.mmditSpec(fixture);
        TextFixtures.MmditCase c = TextFixtures.randomCase(spec, n, tokens, 17L * n + tokens);
        Tensor expected;
        try (Backend b = Fixtures.provider("java").create(spec,
                new BackendOptions(Runtime.getRuntime().availableProcessors(), Map.of()))) {
            expected = TextFixtures.run(b, c);
        }
        try (Backend b = mmdit(fixture, Map.of())) {
            return Fixtures.relativeError(TextFixtures.run(b, c), expected);
        }
    }

    /** A cuda text encoder of a fixture folder ({@link TextFixtures#ENCODERS}), through the provider. */
    TextEncoder encoder(String fixture, Map<String, String> options) throws BackendException {
        return new CudaBackendProvider().createTextEncoder(TextFixtures.encoderSpec(fixture), options(options));
    }

    /** Relative error of a text encoder on its fixture's cases: the larger of the hidden state's and CLIP's pooled. */
    double encoderError(String fixture, Map<String, String> options) throws BackendException {
        TextFixtures.EncoderCases c = TextFixtures.encoderCases(fixture);
        try (TextEncoder e = encoder(fixture, options)) {
            TextEncoder.Output out = e.encode(c.ids(), Cancellation.NEVER);
            double err = Fixtures.relativeError(out.hidden(), c.hidden());
            if (c.pooled() != null) {
                err = Math.max(err, Fixtures.relativeError(out.pooled(), c.pooled()));
            }
            return err;
        }
    }

    /**
     * The SD3 checks (issue 24): the MMDiT fixtures (SD3-medium's structure; SD3.5's RMS qk-norm and dual attention
     * with BF16 shards) and the text encoders (CLIP-L-like with quick_gelu, CLIP-G-like with the exact GELU and F16
     * shards, T5 v1.1 with BF16) against PyTorch in fp32 and tf32, the first synchronised after every kernel; the
     * MMDiT against the java backend on batches of several prompts and on an empty context. The tf32 tolerance is
     * the DiT's, a first guess for these models.
     */
    List<Check> textChecks() {
        List<Check> checks = new ArrayList<>();
        checks.add(measured("mmdit-x-tiny fp32, synchronised after every kernel", FP32_TOLERANCE,
                () -> mmditError("mmdit-x-tiny", Map.of(CudaOptions.DEBUG_SYNC, "true"))));
        for (String precision : List.of("fp32", "tf32")) {
            for (String fixture : TextFixtures.MMDITS) {
                checks.add(measured(fixture + " " + precision + " vs PyTorch", tolerance(precision),
                        () -> mmditError(fixture, Map.of(CudaOptions.PRECISION, precision))));
            }
        }
        checks.add(measured("mmdit-x-tiny fp32 vs the java backend, 5 samples with their own prompts of 40 tokens",
                FP32_TOLERANCE, () -> mmditJavaError("mmdit-x-tiny", 5, 40)));
        checks.add(measured("mmdit-tiny fp32 vs the java backend, 2 samples without context tokens", FP32_TOLERANCE,
                () -> mmditJavaError("mmdit-tiny", 2, 0)));
        for (String precision : List.of("fp32", "tf32")) {
            for (String fixture : TextFixtures.ENCODERS) {
                checks.add(measured("text encoder " + fixture + " " + precision + " vs PyTorch", tolerance(precision),
                        () -> encoderError(fixture, Map.of(CudaOptions.PRECISION, precision))));
            }
        }
        return checks;
    }

    /** cases.safetensors, then cases-S.safetensors by increasing S. */
    private static List<Path> casesFiles(Path dir) {
        List<Path> out = new ArrayList<>();
        if (Files.isRegularFile(dir.resolve("cases.safetensors"))) {
            out.add(dir.resolve("cases.safetensors"));
        }
        try (var s = Files.list(dir)) {
            s.map(p -> p.getFileName().toString()).filter(f -> f.matches("cases-\\d+\\.safetensors"))
                    .sorted(java.util.Comparator.comparingInt(f -> Integer.parseInt(f.replaceAll("\\D", ""))))
                    .forEach(f -> out.add(dir.resolve(f)));
        } catch (java.io.IOException e) {
            // reported by the caller as "no cases"
        }
        return out;
    }

    /** "latent [N, C, h, w]" of a cases file, for a check's name. */
    private static String caseShape(Path cases) {
        try (io.ditserve.backend.Safetensors st = io.ditserve.backend.Safetensors.open(cases)) {
            return "latent " + Arrays.toString(st.entry("decode.latent").shape());
        } catch (BackendException e) {
            return cases.getFileName().toString();
        }
    }

    static Tensor run(Backend b, Tensor x, float[] t, int[] y) throws BackendException {
        ModelSpec s = b.model();
        Tensor out = Tensor.zeros(x.dim(0), s.outChannels(), s.inputSize(), s.inputSize());
        b.forward(ForwardBatch.ofLabels(x, t, y), out, Cancellation.NEVER);
        return out;
    }

    /** One named check: its measured error (or -1 for a yes/no check) and whether it passed. */
    record Outcome(String name, double error, boolean passed, String detail) {
        String line() {
            return (passed ? "PASS " : "FAIL ") + name + (error >= 0 ? String.format(" error %.3e", error) : "")
                    + (detail.isEmpty() ? "" : " (" + detail + ")");
        }
    }

    /** A check: its name and how to run it. */
    record Check(String name, Run run) {
        interface Run {
            Outcome apply(String name) throws BackendException;
        }
    }

    static Check measured(String name, double tolerance, Measure m) {
        return new Check(name, n -> {
            double err = m.error();
            return new Outcome(n, err, err < tolerance, "tolerance " + tolerance);
        });
    }

    interface Measure {
        double error() throws BackendException;
    }

    /**
     * The DiT checks, the SD3 checks ({@link #textChecks}) and the decoder checks ({@link #decoderChecks}); prints
     * and returns the outcomes.
     */
    List<Outcome> runAll(Path decoderCases, boolean decodersOnly) {
        List<Check> checks = new ArrayList<>();
        if (!decodersOnly) {
            checks.addAll(ditChecks(List.of(Fixtures.MODELS)));
            checks.addAll(textChecks());
        }
        checks.addAll(decoderChecks(decoderCases));
        return run(checks);
    }

    /**
     * The files of a DiT fixture model that are not under the root: its config, weights and PyTorch case; empty
     * when it can be checked.
     */
    static List<Path> missingFiles(String model) {
        return Stream.of(Fixtures.modelDir(model).resolve("config.json"),
                Fixtures.modelDir(model).resolve("weights.safetensors"), Fixtures.casesFile(model))
                .filter(f -> !Files.isRegularFile(f)).toList();
    }

    /**
     * The DiT checks of those of {@code models} whose files are here, in the order a first GPU run should see them:
     * the simplest first, with per-kernel syncs; a SKIP line for each of the others.
     */
    List<Check> ditChecks(List<String> models) {
        List<String> here = new ArrayList<>();
        for (String model : models) {
            List<Path> missing = missingFiles(model);
            if (missing.isEmpty()) {
                here.add(model);
            } else {
                System.out.println("SKIP the DiT checks of " + model + ": not here: " + missing);
            }
        }
        List<Check> checks = new ArrayList<>();
        if (here.contains("pixel-tiny")) {
            checks.add(measured("pixel-tiny fp32, synchronised after every kernel", FP32_TOLERANCE,
                    () -> fixtureError("pixel-tiny", Map.of(CudaOptions.DEBUG_SYNC, "true"))));
        }
        for (String precision : List.of("fp32", "tf32", "bf16")) {
            for (String model : here) {
                checks.add(measured(model + " " + precision + " vs PyTorch", tolerance(precision),
                        () -> fixtureError(model, Map.of(CudaOptions.PRECISION, precision))));
            }
        }
        for (String model : here) {
            checks.add(measured(model + " fp32 with a step cache (samples that store, samples that reuse) vs PyTorch",
                    FP32_TOLERANCE, () -> cacheError(model, Map.of())));
        }
        if (here.contains("latent-tiny")) {
            checks.add(measured("latent-tiny fp32 vs the java backend, batch 6 of mixed t and y", FP32_TOLERANCE,
                    () -> javaBackendError("latent-tiny", Map.of())));
        }
        if (here.contains("fashion-dit")) {
            checks.add(measured("fashion-dit fp32, buffers for batch 1 grown to 4", FP32_TOLERANCE,
                    () -> fixtureError("fashion-dit", Map.of(CudaOptions.MAX_BATCH, "1"))));
        }
        if (here.contains("latent-tiny")) {
            checks.add(new Check("latent-tiny cancellation between blocks", n -> {
                String problem = cancellationProblem("latent-tiny");
                return new Outcome(n, -1, problem == null, problem == null ? "" : problem);
            }));
        }
        return checks;
    }

    static List<Outcome> run(List<Check> checks) {
        List<Outcome> out = new ArrayList<>();
        for (Check c : checks) {
            Outcome o;
            try {
                o = c.run().apply(c.name());
            } catch (BackendException | RuntimeException e) {
                o = new Outcome(c.name(), -1, false, e.toString());
            }
            System.out.println(o.line());
            out.add(o);
        }
        return out;
    }

    public static void main(String[] args) {
        Path root = null;
        Path decoderCases = null;
        boolean decodersOnly = false;
        String only = null;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--decoder-cases" -> decoderCases = Path.of(args[++i]);
                case "--decoders-only" -> decodersOnly = true;
                case "--only" -> only = args[++i];
                default -> root = Path.of(args[i]);
            }
        }
        if (only != null && !List.of(Fixtures.MODELS).contains(only)) {
            System.out.println("FAIL --only " + only + ": not one of " + List.of(Fixtures.MODELS));
            System.exit(2);
        }
        if (root != null) {
            System.setProperty("repo.root", root.toString()); // where Fixtures and DecoderFixtures read
        }
        if (decoderCases != null && !Files.isDirectory(decoderCases)) {
            System.out.println("FAIL --decoder-cases " + decoderCases + " is not a folder (make it with"
                    + " tools/gpu/make_decoder_cases.py)");
            decoderCases = null;
        }
        CudaParityCheck check = new CudaParityCheck(Map.of());
        String probe = only != null ? only : "pixel-tiny";
        try (Backend b = check.cuda(probe, Map.of())) {
            System.out.println("cuda backend: " + ((CudaDitBackend) b).deviceDescription());
        } catch (BackendException e) {
            System.out.println("FAIL the cuda backend cannot be created: " + e.getMessage());
            System.exit(2);
        }
        List<Outcome> outcomes = only != null ? run(check.ditChecks(List.of(only)))
                : check.runAll(decoderCases, decodersOnly);
        if (outcomes.isEmpty()) {
            System.out.println("FAIL no check could run: the files they read are not under " + Fixtures.repoRoot());
            System.exit(1);
        }
        long failed = outcomes.stream().filter(o -> !o.passed()).count();
        System.out.println(failed == 0 ? "all " + outcomes.size() + " cuda checks passed"
                : failed + " of " + outcomes.size() + " cuda checks FAILED");
        System.exit(failed == 0 ? 0 : 1);
    }
}
