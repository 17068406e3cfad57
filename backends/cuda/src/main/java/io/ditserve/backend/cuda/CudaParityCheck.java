package io.ditserve.backend.cuda;

import io.ditserve.backend.Backend;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.BackendProvider;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.ServiceLoader;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The GPU checks of the cuda backend as a program, for a GPU machine without Maven or JUnit (tools/gpu/
 * run_cuda_checks.sh runs it from a bundle); the GPU unit tests call the same checks.
 *
 * <pre>
 * java --enable-native-access=ALL-UNNAMED -cp ... io.ditserve.backend.cuda.CudaParityCheck [REPO_ROOT]
 * </pre>
 *
 * Prints one PASS/FAIL line per check and exits 0 when all pass, 1 when one fails, 2 when the backend cannot run.
 */
public final class CudaParityCheck {
    /** max |error| / max |reference| allowed with float32 matrix products. */
    static final double FP32_TOLERANCE = 1e-4;
    /** The same with TF32 tensor-core products (10-bit mantissa inputs). */
    static final double TF32_TOLERANCE = 5e-3;
    /** The same with bfloat16 tensor-core products (8-bit mantissa inputs, float32 accumulation). */
    static final double BF16_TOLERANCE = 3e-2;

    private final FixtureCases fixtures;
    private final Map<String, String> baseOptions;

    /** {@code baseOptions}: backend options added to every check's own (e.g. {@code cuda.lib_path}). */
    CudaParityCheck(FixtureCases fixtures, Map<String, String> baseOptions) {
        this.fixtures = fixtures;
        this.baseOptions = Map.copyOf(baseOptions);
    }

    static double tolerance(String precision) {
        return switch (precision) {
            case "tf32" -> TF32_TOLERANCE;
            case "bf16" -> BF16_TOLERANCE;
            default -> FP32_TOLERANCE;
        };
    }

    Backend cuda(String model, Map<String, String> options) throws BackendException {
        Map<String, String> all = new HashMap<>(baseOptions);
        all.putAll(options);
        return new CudaBackendProvider().create(fixtures.spec(model), new BackendOptions(1, all));
    }

    /** Relative error of the backend on a model's PyTorch case. */
    double fixtureError(String model, Map<String, String> options) throws BackendException {
        FixtureCases.Case c = fixtures.forwardCase(model);
        try (Backend b = cuda(model, options)) {
            return FixtureCases.relativeError(run(b, c.x(), c.t(), c.y()), c.out());
        }
    }

    /**
     * Relative error against the java backend (found through ServiceLoader) on a batch of 6 random latents whose
     * samples all differ in t and y, the null class among them.
     */
    double javaBackendError(String model, Map<String, String> options) throws BackendException {
        ModelSpec spec = fixtures.spec(model);
        Random random = new Random(11);
        Tensor x = Tensor.zeros(6, spec.inChannels(), spec.inputSize(), spec.inputSize());
        for (int i = 0; i < x.size(); i++) {
            x.data()[i] = (float) random.nextGaussian();
        }
        int[] t = {0, 999, 500, 1, 250, 750};
        int[] y = {0, spec.nullClass(), spec.numClasses() - 1, 5 % spec.numClasses(), spec.nullClass(), 3};
        BackendProvider java = ServiceLoader.load(BackendProvider.class).stream().map(ServiceLoader.Provider::get)
                .filter(p -> p.name().equals("java")).findFirst()
                .orElseThrow(() -> new BackendException("the java backend is not on the class path"));
        Tensor expected;
        try (Backend b = java.create(spec, new BackendOptions(Runtime.getRuntime().availableProcessors(), Map.of()))) {
            expected = run(b, x, t, y);
        }
        try (Backend b = cuda(model, options)) {
            return FixtureCases.relativeError(run(b, x, t, y), expected);
        }
    }

    /**
     * Cancellation: a flag that fires at the second poll stops the pass with {@link BackendException.Cancelled}
     * after exactly 2 polls; a pass that is not cancelled polls depth + 1 times; the backend stays usable.
     * Returns null when all holds, else what did not.
     */
    String cancellationProblem(String model) throws BackendException {
        ModelSpec spec = fixtures.spec(model);
        FixtureCases.Case c = fixtures.forwardCase(model);
        try (Backend b = cuda(model, Map.of())) {
            AtomicInteger polls = new AtomicInteger();
            Tensor out = Tensor.zeros(c.out().shape());
            try {
                b.forward(c.x(), c.t(), c.y(), out, () -> polls.incrementAndGet() == 2);
                return "a forward pass whose cancellation fired did not throw";
            } catch (BackendException.Cancelled expected) {
                if (polls.get() != 2) {
                    return "cancelled after " + polls.get() + " polls, expected 2";
                }
            }
            polls.set(0);
            b.forward(c.x(), c.t(), c.y(), out, () -> polls.incrementAndGet() < 0);
            if (polls.get() != spec.depth() + 1) {
                return "an uncancelled pass polled " + polls.get() + " times, expected " + (spec.depth() + 1);
            }
            double err = FixtureCases.relativeError(out, c.out());
            return err < FP32_TOLERANCE ? null : "after a cancelled pass the error is " + err;
        }
    }

    static Tensor run(Backend b, Tensor x, int[] t, int[] y) throws BackendException {
        ModelSpec s = b.model();
        Tensor out = Tensor.zeros(x.dim(0), s.outChannels(), s.inputSize(), s.inputSize());
        b.forward(x, t, y, out, Cancellation.NEVER);
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
    private record Check(String name, Run run) {
        interface Run {
            Outcome apply(String name) throws BackendException;
        }
    }

    private static Check measured(String name, double tolerance, Measure m) {
        return new Check(name, n -> {
            double err = m.error();
            return new Outcome(n, err, err < tolerance, "tolerance " + tolerance);
        });
    }

    private interface Measure {
        double error() throws BackendException;
    }

    /** Every check, in the order a first GPU run should see them: the simplest first, with per-kernel syncs. */
    List<Outcome> runAll() {
        List<Check> checks = new ArrayList<>();
        checks.add(measured("pixel-tiny fp32, synchronised after every kernel", FP32_TOLERANCE,
                () -> fixtureError("pixel-tiny", Map.of(CudaOptions.DEBUG_SYNC, "true"))));
        for (String precision : List.of("fp32", "tf32", "bf16")) {
            for (String model : FixtureCases.MODELS) {
                checks.add(measured(model + " " + precision + " vs PyTorch", tolerance(precision),
                        () -> fixtureError(model, Map.of(CudaOptions.PRECISION, precision))));
            }
        }
        checks.add(measured("latent-tiny fp32 vs the java backend, batch 6 of mixed t and y", FP32_TOLERANCE,
                () -> javaBackendError("latent-tiny", Map.of())));
        checks.add(measured("fashion-dit fp32, buffers for batch 1 grown to 4", FP32_TOLERANCE,
                () -> fixtureError("fashion-dit", Map.of(CudaOptions.MAX_BATCH, "1"))));
        checks.add(new Check("latent-tiny cancellation between blocks", n -> {
            String problem = cancellationProblem("latent-tiny");
            return new Outcome(n, -1, problem == null, problem == null ? "" : problem);
        }));
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
        Path root = args.length > 0 ? Path.of(args[0]) : FixtureCases.findRepoRoot();
        CudaParityCheck check = new CudaParityCheck(new FixtureCases(root), Map.of());
        try (Backend b = check.cuda("pixel-tiny", Map.of())) {
            System.out.println("cuda backend: " + ((CudaDitBackend) b).deviceDescription());
        } catch (BackendException e) {
            System.out.println("FAIL the cuda backend cannot be created: " + e.getMessage());
            System.exit(2);
        }
        List<Outcome> outcomes = check.runAll();
        long failed = outcomes.stream().filter(o -> !o.passed()).count();
        System.out.println(failed == 0 ? "all " + outcomes.size() + " cuda checks passed"
                : failed + " of " + outcomes.size() + " cuda checks FAILED");
        System.exit(failed == 0 ? 0 : 1);
    }
}
