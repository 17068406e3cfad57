package io.ditserve.backend.onnx;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import io.ditserve.backend.Cancellation;
import io.ditserve.backend.DecoderSpec;
import io.ditserve.backend.ModelSpec;
import io.ditserve.backend.Tensor;
import io.ditserve.backend.TextEncoder;
import io.ditserve.backend.TextEncoderConfigs;
import io.ditserve.backend.TextEncoderSpec;
import io.ditserve.backend.onnx.GraphCache.Outcome;
import io.ditserve.backend.onnx.GraphCache.Report;
import io.ditserve.backend.testkit.DecoderFixtures;
import io.ditserve.backend.testkit.Fixtures;
import io.ditserve.backend.testkit.TextFixtures;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileTime;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.CyclicBarrier;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The graph cache (GraphCache) with real files and real ONNX Runtime sessions on the committed fixtures: a first
 * load builds and writes the entry, a second one takes it and computes the same bits; whatever the graph depends
 * on (config.json, a safetensors header or size, the folder's place; for an optimised entry also the weights'
 * file times and the ONNX Runtime options) is a miss; a truncated or corrupt entry is one WARN line and a rebuild
 * with the same outputs; {@code onnx.graph_cache=off} writes nothing; concurrent loads leave one good entry; the
 * least recently used entries go first when the cap is passed. Every test has its own cache folder
 * ({@code onnx.graph_cache_dir}); a fixture a test changes is a copy.
 */
class GraphCacheTest {
    private static final double TOLERANCE = 1e-4;

    @TempDir
    Path tmp;

    private Path cache;
    private final List<LogRecord> warnings = Collections.synchronizedList(new ArrayList<>());
    private final Logger jul = Logger.getLogger(GraphCache.class.getName());
    private final Handler handler = new Handler() {
        @Override
        public void publish(LogRecord r) {
            if (r.getLevel().intValue() >= Level.WARNING.intValue()) {
                warnings.add(r);
            }
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
    };

    @BeforeEach
    void setUp() {
        cache = tmp.resolve("cache");
        jul.addHandler(handler);
    }

    @AfterEach
    void tearDown() {
        jul.removeHandler(handler);
    }

    // ---- loading the four kinds of component, with a fixed input

    /** A component on onnx, loaded: what its cache report says, and its output for the fixed input. */
    record Run(float[] out, Report report, int nodes, ExternalData.Summary external) {}

    private BackendOptions options(String... keyValues) {
        Map<String, String> o = new LinkedHashMap<>();
        o.put(GraphCache.DIR_OPTION, cache.toString());
        for (int i = 0; i < keyValues.length; i += 2) {
            o.put(keyValues[i], keyValues[i + 1]);
        }
        return new BackendOptions(2, o);
    }

    private static Path fixture(String path) {
        return Fixtures.repoRoot().resolve(path);
    }

    /** A copy of a fixture folder under the test's folder (its files only: components have no subfolders). */
    private Path copy(String path, String as) throws IOException {
        Path from = fixture(path);
        Path to = tmp.resolve(as);
        Files.createDirectories(to);
        try (Stream<Path> files = Files.list(from)) {
            for (Path f : files.filter(Files::isRegularFile).toList()) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
        return to;
    }

    static Run load(String kind, Path dir, BackendOptions options) throws Exception {
        return switch (kind) {
            case "mmdit" -> {
                ModelSpec spec = TextFixtures.mmditSpec(dir);
                TextFixtures.MmditCase c = TextFixtures.randomCase(spec, 2, 5, 11);
                try (OnnxMmditBackend b = OnnxMmditBackend.create(spec, options)) {
                    yield new Run(TextFixtures.run(b, c).data(), b.cacheReport(), b.graphNodes(),
                            b.externalData());
                }
            }
            case "clip", "t5" -> {
                boolean t5 = kind.equals("t5");
                TextEncoderSpec spec = t5 ? TextEncoderConfigs.load(dir, "text_encoder_3", 16)
                        : TextEncoderConfigs.load(dir, "text_encoder", 0);
                Random rnd = new Random(5);
                int[][] ids = new int[2][spec.maxTokens()];
                for (int[] row : ids) {
                    for (int i = 0; i < row.length; i++) {
                        row[i] = rnd.nextInt(spec.vocab());
                    }
                }
                try (OnnxTextEncoder e = OnnxTextEncoder.create(spec, options)) {
                    TextEncoder.Output out = e.encode(ids, Cancellation.NEVER);
                    float[] all = out.pooled() == null ? out.hidden() : concat(out.hidden(), out.pooled());
                    yield new Run(all, e.cacheReport(), -1, e.externalData());
                }
            }
            case "vae" -> {
                DecoderSpec spec = DecoderFixtures.spec(dir);
                Tensor latent = DecoderFixtures.randomLatent(3, 1, spec.latentChannels(), 3, 2);
                try (OnnxDecoder d = OnnxDecoder.createBuilt(spec, options)) {
                    yield new Run(DecoderFixtures.decode(d, latent).data(), d.cacheReport(), -1, d.externalData());
                }
            }
            default -> throw new IllegalArgumentException(kind);
        };
    }

    private static float[] concat(float[] a, float[] b) {
        float[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    /** mmdit-tiny's reference case (tools/sd3/mmdit.py) on a folder holding its files. */
    private static Tensor referenceForward(Path dir, BackendOptions options, Report[] report) throws Exception {
        ModelSpec spec = TextFixtures.mmditSpec(dir);
        TextFixtures.MmditCase c = TextFixtures.mmditCase("mmdit-tiny");
        try (OnnxMmditBackend b = OnnxMmditBackend.create(spec, options)) {
            report[0] = b.cacheReport();
            Tensor out = TextFixtures.run(b, c);
            assertThat(Fixtures.relativeError(out, c.out())).as("vs tools/sd3/mmdit.py").isLessThan(TOLERANCE);
            return out;
        }
    }

    private List<Path> cacheFiles() throws IOException {
        if (!Files.exists(cache)) {
            return List.of();
        }
        try (Stream<Path> s = Files.list(cache)) {
            return s.sorted().toList();
        }
    }

    // ---- hits and misses

    @ParameterizedTest(name = "{0} {1}")
    @CsvSource({"mmdit, tools/fixtures/mmdit-tiny", "mmdit, tools/pipeline-fixtures/sd3-tiny-full/transformer",
        "clip, tools/fixtures/clip-tiny", "clip, tools/pipeline-fixtures/sd3-tiny-full/text_encoder_2",
        "t5, tools/fixtures/t5-tiny", "t5, tools/pipeline-fixtures/sd3-tiny-full/text_encoder_3",
        "vae, tools/fixtures/vae-small", "vae, tools/pipeline-fixtures/sd3-tiny-full/vae"})
    void theFirstLoadWritesTheEntryTheSecondTakesItWithTheSameBits(String kind, String path) throws Exception {
        Path dir = fixture(path);
        Run built = load(kind, dir, options(GraphCache.OPTION, "off"));
        assertThat(built.report()).isEqualTo(Report.NONE);
        assertThat(cacheFiles()).as("off writes nothing").isEmpty();

        Run first = load(kind, dir, options());
        assertThat(first.report().graph()).isEqualTo(Outcome.MISS);
        assertThat(first.report().optimized()).isEqualTo(Outcome.OFF);
        assertThat(first.report().graphEntry()).isRegularFile().hasParent(cache);
        assertThat(cacheFiles()).containsExactly(first.report().graphEntry());

        Run second = load(kind, dir, options());
        assertThat(second.report().graph()).isEqualTo(Outcome.HIT);
        assertThat(second.report().graphEntry()).isEqualTo(first.report().graphEntry());
        assertThat(second.out()).as("cached graph, same bits").isEqualTo(first.out()).isEqualTo(built.out());
        assertThat(second.nodes()).isEqualTo(built.nodes());
        assertThat(second.external()).isEqualTo(built.external());
        assertThat(warnings).isEmpty();
    }

    @Test
    void offWritesNothingForAnyComponent() throws Exception {
        for (String[] c : new String[][] {{"mmdit", "tools/fixtures/mmdit-tiny"}, {"clip", "tools/fixtures/clip-tiny"},
            {"t5", "tools/fixtures/t5-tiny"}, {"vae", "tools/fixtures/vae-small"}}) {
            assertThat(load(c[0], fixture(c[1]), options(GraphCache.OPTION, "off")).report()).isEqualTo(Report.NONE);
        }
        assertThat(cache).doesNotExist();
    }

    /**
     * The graph depends on the weights only through their headers: a touched weights file is a hit; config.json
     * rewritten (one more newline) is a miss; a safetensors header rewritten with 8 bytes of padding, which moves
     * every tensor's offset by 8 and the file's size, is a miss, and the rebuilt graph reads the right bytes (a
     * stale one would read each tensor 8 bytes early).
     */
    @Test
    void configAndHeaderChangesAreMissesATouchIsNot() throws Exception {
        Path dir = copy("tools/fixtures/mmdit-tiny", "mmdit-tiny");
        Report[] r = new Report[1];
        Tensor first = referenceForward(dir, options(), r);
        assertThat(r[0].graph()).isEqualTo(Outcome.MISS);

        Path weights = dir.resolve("diffusion_pytorch_model.safetensors");
        Files.setLastModifiedTime(weights, FileTime.from(Instant.now().plus(Duration.ofMinutes(5))));
        assertThat(referenceForward(dir, options(), r).data()).isEqualTo(first.data());
        assertThat(r[0].graph()).as("touched weights: same header, same graph").isEqualTo(Outcome.HIT);

        Files.writeString(dir.resolve("config.json"), "\n", StandardOpenOption.APPEND);
        assertThat(referenceForward(dir, options(), r).data()).isEqualTo(first.data());
        assertThat(r[0].graph()).as("config.json changed").isEqualTo(Outcome.MISS);
        assertThat(referenceForward(dir, options(), r).data()).isEqualTo(first.data());
        assertThat(r[0].graph()).isEqualTo(Outcome.HIT);

        long size = Files.size(weights);
        padHeader(weights, 8);
        assertThat(Files.size(weights)).isEqualTo(size + 8);
        Tensor padded = referenceForward(dir, options(), r); // within the reference's tolerance, checked inside
        assertThat(r[0].graph()).as("header and size changed").isEqualTo(Outcome.MISS);
        assertThat(padded.data()).isEqualTo(first.data());
        assertThat(cacheFiles()).hasSize(3); // one entry per state of the folder, none overwritten
        assertThat(warnings).isEmpty();
    }

    /** Rewrites a safetensors file with {@code n} spaces appended to its JSON header (a valid file, data moved). */
    static void padHeader(Path file, int n) throws IOException {
        byte[] b = Files.readAllBytes(file);
        long len = ByteBuffer.wrap(b, 0, 8).order(ByteOrder.LITTLE_ENDIAN).getLong();
        ByteBuffer out = ByteBuffer.allocate(b.length + n).order(ByteOrder.LITTLE_ENDIAN);
        out.putLong(len + n).put(b, 8, (int) len);
        out.put(" ".repeat(n).getBytes(StandardCharsets.US_ASCII));
        out.put(b, 8 + (int) len, b.length - 8 - (int) len);
        Files.write(file, out.array());
    }

    /** The key holds the folder's path: the same files moved elsewhere are a miss, with the same outputs. */
    @Test
    void aMovedFolderIsAMiss() throws Exception {
        Path a = copy("tools/fixtures/mmdit-tiny", "a");
        Run first = load("mmdit", a, options());
        assertThat(load("mmdit", a, options()).report().graph()).isEqualTo(Outcome.HIT);
        Path b = Files.move(a, tmp.resolve("b"));
        Run moved = load("mmdit", b, options());
        assertThat(moved.report().graph()).isEqualTo(Outcome.MISS);
        assertThat(moved.out()).isEqualTo(first.out());
        assertThat(moved.report().graphEntry()).isNotEqualTo(first.report().graphEntry());
    }

    // ---- bad entries

    @Test
    void aTruncatedOrCorruptEntryIsOneWarningAndARebuild() throws Exception {
        Path dir = fixture("tools/fixtures/mmdit-tiny");
        Report[] r = new Report[1];
        Tensor first = referenceForward(dir, options(), r);
        Path entry = r[0].graphEntry();
        long size = Files.size(entry);

        try (var ch = java.nio.channels.FileChannel.open(entry, StandardOpenOption.WRITE)) {
            ch.truncate(size / 2);
        }
        Tensor afterTruncation = referenceForward(dir, options(), r); // checked against the reference inside
        assertThat(r[0].graph()).isEqualTo(Outcome.CORRUPT);
        assertThat(afterTruncation.data()).isEqualTo(first.data());
        assertThat(warnings).hasSize(1);
        assertThat(warnings.getFirst().getMessage()).contains(entry.toString()).contains("rebuilding")
                .doesNotContain("\n");
        assertThat(Files.size(entry)).as("rewritten whole").isEqualTo(size);
        referenceForward(dir, options(), r);
        assertThat(r[0].graph()).isEqualTo(Outcome.HIT);

        // one flipped byte in the middle of the graph
        byte[] bytes = Files.readAllBytes(entry);
        bytes[bytes.length / 2] ^= 0x10;
        Files.write(entry, bytes);
        assertThat(referenceForward(dir, options(), r).data()).isEqualTo(first.data());
        assertThat(r[0].graph()).isEqualTo(Outcome.CORRUPT);

        // an empty file, and a file of something else
        for (byte[] junk : new byte[][] {new byte[0], "not a graph".getBytes(StandardCharsets.US_ASCII)}) {
            Files.write(entry, junk);
            assertThat(referenceForward(dir, options(), r).data()).isEqualTo(first.data());
            assertThat(r[0].graph()).isEqualTo(Outcome.CORRUPT);
        }
        assertThat(warnings).hasSize(4);
        referenceForward(dir, options(), r);
        assertThat(r[0].graph()).isEqualTo(Outcome.HIT);
    }

    /** A cache folder that cannot be made (a file is in the way) is one WARN line; loads go on without it. */
    @Test
    void anUnusableCacheFolderLoadsWithoutIt() throws Exception {
        Files.writeString(tmp.resolve("file"), "in the way");
        cache = tmp.resolve("file").resolve("cache");
        Run a = load("clip", fixture("tools/fixtures/clip-tiny"), options());
        Run b = load("clip", fixture("tools/fixtures/clip-tiny"), options());
        assertThat(a.report().graph()).isEqualTo(Outcome.UNAVAILABLE);
        assertThat(b.report().graph()).isEqualTo(Outcome.UNAVAILABLE);
        assertThat(b.out()).isEqualTo(a.out());
        assertThat(warnings).as("one line per folder and process").hasSize(1);
    }

    // ---- ONNX Runtime's optimised graph

    /**
     * {@code onnx.graph_cache=optimized}: the graph ONNX Runtime optimised is saved with its weights and loaded as
     * it is next time, computing the same bits as the graph optimised at load (MMDiT; the VAE's convolutions, which
     * the level {@code all} lays out for this CPU).
     */
    @ParameterizedTest
    @CsvSource({"mmdit, tools/fixtures/mmdit-tiny", "vae, tools/fixtures/vae-small", "t5, tools/fixtures/t5-tiny"})
    void anOptimizedEntryComputesTheSameBits(String kind, String path) throws Exception {
        Path dir = copy(path, "component");
        Run online = load(kind, dir, options(GraphCache.OPTION, "off"));
        Run first = load(kind, dir, options(GraphCache.OPTION, "optimized"));
        assertThat(first.report().graph()).isEqualTo(Outcome.MISS);
        assertThat(first.report().optimized()).isEqualTo(Outcome.MISS);
        Path entry = first.report().optimizedEntry();
        assertThat(entry).isDirectory().hasParent(cache);
        try (Stream<Path> files = Files.list(entry)) {
            assertThat(files.map(p -> p.getFileName().toString())).containsExactlyInAnyOrder(GraphCache.MODEL_FILE,
                    GraphCache.DATA_FILE, GraphCache.MANIFEST_FILE);
        }
        Run second = load(kind, dir, options(GraphCache.OPTION, "optimized"));
        assertThat(second.report().graph()).isEqualTo(Outcome.HIT);
        assertThat(second.report().optimized()).isEqualTo(Outcome.HIT);
        assertThat(second.out()).isEqualTo(first.out()).isEqualTo(online.out());
        assertThat(second.external()).as("messages still name the checkpoint's files").isEqualTo(online.external());
        assertThat(warnings).isEmpty();
    }

    /**
     * An optimised entry holds copies of the weights: a weights file with a new modification time (same header)
     * is a miss there, though the built graph is a hit; so is another optimisation level or thread count. A
     * truncated data file is one WARN line and a rebuild with the same bits.
     */
    @Test
    void optimizedEntriesFollowTheWeightsFilesAndTheOptions() throws Exception {
        Path dir = copy("tools/fixtures/mmdit-tiny", "mmdit-tiny");
        BackendOptions optimized = options(GraphCache.OPTION, "optimized");
        Run first = load("mmdit", dir, optimized);
        assertThat(first.report().optimized()).isEqualTo(Outcome.MISS);

        Files.setLastModifiedTime(dir.resolve("diffusion_pytorch_model.safetensors"),
                FileTime.from(Instant.now().plus(Duration.ofMinutes(5))));
        Run touched = load("mmdit", dir, optimized);
        assertThat(touched.report().graph()).isEqualTo(Outcome.HIT);
        assertThat(touched.report().optimized()).isEqualTo(Outcome.MISS);
        assertThat(touched.out()).isEqualTo(first.out());

        Run extended = load("mmdit", dir, options(GraphCache.OPTION, "optimized", OnnxRunner.OPTIMIZATION_OPTION,
                "extended"));
        assertThat(extended.report().graph()).isEqualTo(Outcome.HIT);
        assertThat(extended.report().optimized()).as("another level").isEqualTo(Outcome.MISS);
        Map<String, String> oneThread = new LinkedHashMap<>(optimized.options());
        Run single = load("mmdit", dir, new BackendOptions(1, oneThread));
        assertThat(single.report().optimized()).as("another thread count").isEqualTo(Outcome.MISS);
        Run none = load("mmdit", dir, options(GraphCache.OPTION, "optimized", OnnxRunner.OPTIMIZATION_OPTION,
                "none"));
        assertThat(none.report().optimized()).as("nothing to save: the graph as built").isEqualTo(Outcome.OFF);

        Run hit = load("mmdit", dir, optimized);
        assertThat(hit.report().optimized()).isEqualTo(Outcome.HIT);
        Path data = hit.report().optimizedEntry().resolve(GraphCache.DATA_FILE);
        try (var ch = java.nio.channels.FileChannel.open(data, StandardOpenOption.WRITE)) {
            ch.truncate(ch.size() - 100);
        }
        Run rebuilt = load("mmdit", dir, optimized);
        assertThat(rebuilt.report().optimized()).isEqualTo(Outcome.CORRUPT);
        assertThat(rebuilt.out()).isEqualTo(first.out());
        assertThat(warnings).hasSize(1);
        assertThat(warnings.getFirst().getMessage()).contains(GraphCache.DATA_FILE).contains("rebuilding");
        assertThat(load("mmdit", dir, optimized).report().optimized()).isEqualTo(Outcome.HIT);
    }

    /** An optimised graph estimated over the cap is not written: the load goes on as if uncached. */
    @Test
    void anOptimizedGraphOverTheCapIsNotWritten() throws Exception {
        Run r = load("mmdit", fixture("tools/fixtures/mmdit-tiny"), options(GraphCache.OPTION, "optimized",
                GraphCache.MAX_MB_OPTION, "0"));
        assertThat(r.report().optimized()).isEqualTo(Outcome.TOO_BIG);
        assertThat(cacheFiles()).as("the graph entry too is evicted under a cap of 0").isEmpty();
    }

    // ---- concurrency and eviction

    /** Loads of one model started together each build, and what they leave is one good entry, no temporaries. */
    @ParameterizedTest
    @ValueSource(strings = {"on", "optimized"})
    void concurrentLoadsLeaveOneGoodEntry(String mode) throws Exception {
        Path dir = copy("tools/fixtures/mmdit-tiny", "mmdit-tiny");
        int n = 4;
        CyclicBarrier start = new CyclicBarrier(n);
        ExecutorService pool = Executors.newFixedThreadPool(n);
        try {
            List<Future<Run>> runs = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                runs.add(pool.submit(() -> {
                    start.await();
                    return load("mmdit", dir, options(GraphCache.OPTION, mode));
                }));
            }
            float[] out = runs.getFirst().get().out();
            for (Future<Run> f : runs) {
                assertThat(f.get().out()).isEqualTo(out);
            }
            Run after = load("mmdit", dir, options(GraphCache.OPTION, mode));
            assertThat(after.report().graph()).isEqualTo(Outcome.HIT);
            assertThat(after.report().optimized()).isEqualTo(mode.equals("on") ? Outcome.OFF : Outcome.HIT);
            assertThat(after.out()).isEqualTo(out);
        } finally {
            pool.shutdownNow();
        }
        assertThat(cacheFiles()).hasSize(mode.equals("on") ? 1 : 2)
                .noneMatch(p -> p.getFileName().toString().startsWith(GraphCache.TEMP_PREFIX));
        assertThat(warnings).isEmpty();
    }

    /**
     * Past the cap, the entries used longest ago go first (a hit counts as a use), until the rest fits; temporary
     * files older than a day (a writer that died) go too, younger ones (a writer at work) stay.
     */
    @Test
    void evictionDropsTheLeastRecentlyUsedFirst() throws Exception {
        Run clip = load("clip", fixture("tools/fixtures/clip-tiny"), options());
        Run vae = load("vae", fixture("tools/fixtures/vae-small"), options());
        Run t5 = load("t5", fixture("tools/fixtures/t5-tiny"), options());
        Path clipEntry = clip.report().graphEntry();
        Path vaeEntry = vae.report().graphEntry();
        Path t5Entry = t5.report().graphEntry();
        Instant now = Instant.now();
        Files.setLastModifiedTime(clipEntry, FileTime.from(now.minus(Duration.ofHours(3))));
        Files.setLastModifiedTime(vaeEntry, FileTime.from(now.minus(Duration.ofHours(2))));
        Files.setLastModifiedTime(t5Entry, FileTime.from(now.minus(Duration.ofHours(1))));
        assertThat(load("clip", fixture("tools/fixtures/clip-tiny"), options()).report().graph())
                .isEqualTo(Outcome.HIT); // clip is now the most recently used, vae the least
        Path staleTemp = Files.writeString(cache.resolve(GraphCache.TEMP_PREFIX + "dead"), "x");
        Files.setLastModifiedTime(staleTemp, FileTime.from(now.minus(Duration.ofDays(2))));
        Path freshTemp = Files.writeString(cache.resolve(GraphCache.TEMP_PREFIX + "writing"), "x");

        long cap = Files.size(clipEntry) + Files.size(t5Entry);
        GraphCache.evict(new GraphCache.Config(GraphCache.Mode.ON, cache, cap));
        assertThat(cacheFiles()).containsExactlyInAnyOrder(clipEntry, t5Entry, freshTemp);

        GraphCache.evict(new GraphCache.Config(GraphCache.Mode.ON, cache, cap - 1));
        assertThat(cacheFiles()).containsExactlyInAnyOrder(clipEntry, freshTemp);
    }

    /**
     * The spec in the key: the records' own toString where that is deterministic (every spec today), arrays by
     * content, sets and maps sorted (their iteration order changes from one JVM to the next).
     */
    @Test
    void theSpecTextIsTheSameInEveryProcess() throws Exception {
        ModelSpec mmdit = TextFixtures.mmditSpec(fixture("tools/fixtures/mmdit-x-tiny"));
        TextEncoderSpec t5 = TextEncoderConfigs.load(fixture("tools/fixtures/t5-tiny"), "text_encoder_3", 16);
        DecoderSpec vae = DecoderFixtures.spec(fixture("tools/fixtures/vae-small"));
        for (Record r : new Record[] {mmdit, mmdit.text(), t5, vae}) {
            assertThat(GraphCache.describe(r)).isEqualTo(r.toString());
        }
        record Odd(int[] sizes, java.util.Set<String> names, Map<String, Integer> counts) {}
        assertThat(GraphCache.describe(new Odd(new int[] {3, 1}, java.util.Set.of("b", "c", "a"),
                Map.of("y", 2, "x", 1)))).isEqualTo("Odd[sizes=[3, 1], names=[a, b, c], counts=[x=1, y=2]]");
    }

    // ---- options

    @Test
    void badCacheOptionsAreRejectedAtLoad() {
        Path dir = fixture("tools/fixtures/clip-tiny");
        assertThatThrownBy(() -> load("clip", dir, options(GraphCache.OPTION, "yes")))
                .isInstanceOf(BackendException.class)
                .hasMessage("Unknown onnx.graph_cache [yes] of the onnx backend, known options [on, optimized, off]");
        assertThatThrownBy(() -> load("clip", dir, options(GraphCache.MAX_MB_OPTION, "-1")))
                .isInstanceOf(BackendException.class)
                .hasMessage("onnx.graph_cache_max_mb must be an integer >= 0, found '-1'");
    }

    /** Without onnx.graph_cache_dir: $XDG_CACHE_HOME/ditserve/onnx-graphs (the build points it into target/). */
    @Test
    void theDefaultFolderIsUnderTheUserCacheFolder() throws Exception {
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path expected = xdg != null && Path.of(xdg).isAbsolute() ? Path.of(xdg, "ditserve", "onnx-graphs")
                : Path.of(System.getProperty("user.home"), ".cache", "ditserve", "onnx-graphs");
        assertThat(GraphCache.Config.of(BackendOptions.ofThreads(1)))
                .isEqualTo(new GraphCache.Config(GraphCache.Mode.ON, expected, (long) GraphCache.DEFAULT_MAX_MB << 20));
    }
}
