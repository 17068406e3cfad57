package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import io.ditserve.backend.BackendOptions;
import java.io.ByteArrayOutputStream;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.InvalidPathException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.FileTime;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * The graphs the onnx backend builds at load (MMDiT, CLIP, T5, the AutoencoderKL decoder), kept on disk so that the
 * next load of the same folder with the same code skips building them, and rebuilt when anything they depend on
 * changes (docs/TEXT_MODELS.md, "The graph cache"). Options:
 *
 * <ul>
 *   <li>{@code onnx.graph_cache}: {@code on} (default): the built graph (the ModelProto, about 50 KB to 1 MB, its
 *       weights still read in place from the folder's safetensors); {@code optimized}: that, and also the graph
 *       ONNX Runtime makes of it at the configured {@code onnx.optimization} level (saved by ONNX Runtime with its
 *       weights: the folded float32 copies, about twice a 16-bit checkpoint), loaded next time with ONNX Runtime's
 *       optimisations off; {@code off}: nothing is read or written;
 *   <li>{@code onnx.graph_cache_dir}: where ({@code $XDG_CACHE_HOME/ditserve/onnx-graphs}, or
 *       {@code ~/.cache/ditserve/onnx-graphs} without it); never the model folder, which may be read-only;
 *   <li>{@code onnx.graph_cache_max_mb}: the most the entries may take together (default 4096); past it the least
 *       recently used are deleted.
 * </ul>
 *
 * <p><b>Keys.</b> A built graph's entry is named by the SHA-256 of a text that holds everything the graph is a
 * function of: {@link #BUILDER_VERSION} and the bytes of the classes that build and validate graphs (so a change to
 * that code is a miss even when nobody bumps the version), the ONNX Runtime version, the component kind, the spec
 * (every value the loader parsed, the folder's path included: a moved or copied folder is a miss), and the folder's
 * files: each {@code .json} file's bytes (config.json, a shard index) by hash, and each {@code .safetensors} file's
 * size and header by hash. The graph depends on the weights only through their headers (names, dtypes, shapes,
 * offsets: the initializers point at the bytes, which ONNX Runtime reads from the file at every load), so a touched
 * file is a hit and a rewritten header or a changed size is a miss. An optimised entry holds copies of the weights,
 * so its key adds what stands for their contents without reading them: each safetensors file's size, modification
 * time, inode and change time; and what changes ONNX Runtime's graph: optimisation level, provider, threads, the
 * CPU (model name and flags: the level {@code all} lays convolutions out for this CPU).
 *
 * <p><b>Integrity.</b> Entries are written under a temporary name in the cache folder and renamed into place, so
 * a reader sees a whole entry or none; concurrent loads of the same model each write their own and the last rename
 * wins with an equal entry. Each entry ends with (or lists) CRC32C checksums of all its bytes and holds its full key
 * text: a truncated, corrupt or foreign entry is reported in one WARN line and rebuilt, never loaded. Any I/O
 * failure of the cache (a read-only or full disk) is a WARN line and a load without it, never a failed load.
 */
final class GraphCache {
    private static final System.Logger LOG = System.getLogger(GraphCache.class.getName());

    static final String OPTION = "onnx.graph_cache";
    static final String DIR_OPTION = "onnx.graph_cache_dir";
    static final String MAX_MB_OPTION = "onnx.graph_cache_max_mb";
    private static final List<String> MODES = List.of("on", "optimized", "off");
    static final int DEFAULT_MAX_MB = 4096;

    /** Bumped whenever the graph code changes what it builds (the class bytes in the key catch it too). */
    static final int BUILDER_VERSION = 1;
    /** The layout of the entry files. */
    private static final int FORMAT = 1;
    private static final byte[] GRAPH_MAGIC = "ditserve onnx graph\n".getBytes(StandardCharsets.US_ASCII);
    private static final byte[] MANIFEST_MAGIC = "ditserve onnx optimized\n".getBytes(StandardCharsets.US_ASCII);
    static final String GRAPH_SUFFIX = ".graph";
    static final String OPTIMIZED_SUFFIX = ".ort";
    static final String TEMP_PREFIX = ".tmp-";
    static final String MODEL_FILE = "model.onnx";
    static final String DATA_FILE = MODEL_FILE + ".data";
    static final String MANIFEST_FILE = "manifest";
    /** A temporary file or folder this old is left over from a process that died while writing: it is deleted. */
    private static final Duration STALE_TEMP = Duration.ofDays(1);

    /** The classes whose code decides what is built (and what passes validation), hashed into every key. */
    private static final List<Class<?>> BUILDER_CLASSES = List.of(GraphCache.class, OnnxGraph.class, GraphOps.class,
            GraphWeights.class, MmditGraph.class, TextEncoderGraphs.class, VaeDecoderGraph.class,
            io.ditserve.backend.MmditCheckpoint.class, io.ditserve.backend.TextEncoderCheckpoint.class,
            io.ditserve.backend.DecoderCheckpoint.class, io.ditserve.backend.DitConstants.class,
            io.ditserve.backend.Safetensors.class);

    /** Cache folders already reported unusable in this process (one WARN each). */
    private static final Set<Path> REPORTED_UNUSABLE = ConcurrentHashMap.newKeySet();

    private GraphCache() {}

    enum Mode { ON, OPTIMIZED, OFF }

    /** The cache options. */
    record Config(Mode mode, Path dir, long maxBytes) {
        static Config of(BackendOptions options) throws BackendException {
            Mode mode = Mode.valueOf(options.choice("onnx", OPTION, MODES).toUpperCase(Locale.ROOT));
            String dir = options.get(DIR_OPTION, "").trim();
            Path path;
            try {
                path = dir.isEmpty() ? defaultDir() : Path.of(dir);
            } catch (InvalidPathException e) {
                throw new BackendException(DIR_OPTION + " '" + dir + "' is not a path: " + e.getMessage(), e);
            }
            long maxMb = options.intAtLeast(MAX_MB_OPTION, DEFAULT_MAX_MB, 0);
            return new Config(mode, path.toAbsolutePath().normalize(), maxMb << 20);
        }
    }

    /** {@code $XDG_CACHE_HOME/ditserve/onnx-graphs} (when that is an absolute path), else under ~/.cache. */
    static Path defaultDir() {
        String xdg = System.getenv("XDG_CACHE_HOME");
        Path base = xdg != null && !xdg.isBlank() && Path.of(xdg).isAbsolute() ? Path.of(xdg)
                : Path.of(System.getProperty("user.home"), ".cache");
        return base.resolve("ditserve").resolve("onnx-graphs");
    }

    /** What became of one tier of the cache in one load. */
    enum Outcome {
        /** Not used: {@code onnx.graph_cache=off} (or, for the optimised tier, not asked for or nothing to save). */
        OFF,
        /** Found, checked and used. */
        HIT,
        /** Not there: built (or optimised) and written. */
        MISS,
        /** There but truncated, corrupt or unloadable: reported, rebuilt and replaced. */
        CORRUPT,
        /** The optimised graph would not fit {@code onnx.graph_cache_max_mb}: not written. */
        TOO_BIG,
        /** The cache folder or the model folder could not be read, or an entry not written: loaded without it. */
        UNAVAILABLE
    }

    /**
     * One load's use of the cache: the built graph's tier and the optimised one's, with the entries used or
     * written (null where none).
     */
    record Report(Outcome graph, Outcome optimized, Path graphEntry, Path optimizedEntry) {
        static final Report NONE = new Report(Outcome.OFF, Outcome.OFF, null, null);
    }

    /** A built graph: the ModelProto's bytes, what it reads from the folder's files, its node count. */
    record Built(byte[] model, ExternalData.Summary summary, int nodes) {}

    /** Validates the folder's weights and builds the graph (only called on a miss). */
    @FunctionalInterface
    interface Builder {
        Built build() throws BackendException;
    }

    /** A session on the graph, with its node count (before ONNX Runtime's optimisations) and the cache's report. */
    record Loaded(OnnxRunner runner, int nodes, Report report) {}

    /**
     * The session of the graph of {@code kind} for {@code spec} (a record of the values the graph is built from),
     * whose weights lie in {@code folder}: from the cache when it has it, else built by {@code builder} and cached.
     */
    static Loaded open(String kind, Record spec, Path folder, BackendOptions options, String thread, Builder builder)
            throws BackendException {
        String sessionKey = OnnxRunner.sessionGraphKey(options); // checks the onnx options first
        Config config = Config.of(options);
        if (config.mode() == Mode.OFF) {
            return uncached(folder, options, thread, builder, Report.NONE);
        }
        long start = System.nanoTime();
        List<FileState> files;
        String graphKey;
        try {
            files = folderFiles(folder);
            graphKey = graphKey(kind, spec, folder, files);
        } catch (IOException | UncheckedIOException e) {
            // the builder names what is wrong with the folder; if it can build, the load goes on without the cache
            return uncached(folder, options, thread, builder,
                    new Report(Outcome.UNAVAILABLE, Outcome.UNAVAILABLE, null, null));
        }
        if (!usable(config.dir())) {
            return uncached(folder, options, thread, builder,
                    new Report(Outcome.UNAVAILABLE, Outcome.UNAVAILABLE, null, null));
        }
        Path graphFile = config.dir().resolve(sha256(graphKey) + GRAPH_SUFFIX);
        Built built = null;
        Outcome graph;
        try {
            built = readGraph(graphFile, graphKey);
            graph = built == null ? Outcome.MISS : Outcome.HIT;
        } catch (Corrupt e) {
            warnCorrupt(graphFile, e.getMessage());
            graph = Outcome.CORRUPT;
        }
        if (built != null) {
            touch(graphFile);
        } else {
            built = builder.build();
            if (writeGraph(config.dir(), graphFile, graphKey, built)) {
                evict(config);
            } else {
                graph = Outcome.UNAVAILABLE; // built, not written (the WARN says why)
            }
        }
        Report report;
        OnnxRunner runner;
        if (config.mode() == Mode.OPTIMIZED && OnnxRunner.optimizes(options)) {
            String optimizedKey = graphKey + "\n" + optimizedKeyPart(sessionKey, folder, files);
            Path entry = config.dir().resolve(sha256(optimizedKey) + OPTIMIZED_SUFFIX);
            Optimized o = openOptimized(config, entry, optimizedKey, folder, built, options, thread);
            runner = o.runner();
            report = new Report(graph, o.outcome(), graphFile, o.entry());
        } else {
            runner = OnnxRunner.openGenerated(built.model(), folder, built.summary(), options, thread);
            report = new Report(graph, Outcome.OFF, graphFile, null);
        }
        double ms = (System.nanoTime() - start) / 1e6;
        LOG.log(System.Logger.Level.INFO, () -> String.format("onnx graph cache: %s %s: graph %s%s, loaded in %.0f"
                + " ms (%s)", kind, folder, word(report.graph()), report.optimized() == Outcome.OFF ? ""
                        : ", optimized graph " + word(report.optimized()), ms,
                report.optimizedEntry() != null && report.optimized() == Outcome.HIT ? report.optimizedEntry()
                        : graphFile));
        return new Loaded(runner, built.nodes(), report);
    }

    private static String word(Outcome o) {
        return switch (o) {
            case HIT -> "from the cache";
            case MISS -> "built and cached";
            case CORRUPT -> "rebuilt (the cached one was bad)";
            case TOO_BIG -> "not cached (larger than " + MAX_MB_OPTION + ")";
            case UNAVAILABLE -> "built, cache unavailable";
            case OFF -> "built";
        };
    }

    private static Loaded uncached(Path folder, BackendOptions options, String thread, Builder builder, Report report)
            throws BackendException {
        Built b = builder.build();
        return new Loaded(OnnxRunner.openGenerated(b.model(), folder, b.summary(), options, thread), b.nodes(),
                report);
    }

    // ---- keys

    /** A file of the model folder that the key covers. */
    record FileState(Path path, String name, long size, String keyText, String statText) {}

    /** The folder's .json and .safetensors files (by name), each with its key text (content or header hash). */
    static List<FileState> folderFiles(Path folder) throws IOException {
        List<Path> paths;
        try (Stream<Path> s = Files.list(folder)) {
            paths = s.filter(p -> {
                String n = p.getFileName().toString();
                return (n.endsWith(".json") || n.endsWith(".safetensors")) && Files.isRegularFile(p);
            }).sorted(Comparator.comparing(p -> p.getFileName().toString())).toList();
        }
        List<FileState> out = new ArrayList<>(paths.size());
        for (Path p : paths) {
            String name = p.getFileName().toString();
            BasicFileAttributes a = Files.readAttributes(p, BasicFileAttributes.class);
            String key = name.endsWith(".json") ? "json sha256 " + sha256(Files.readAllBytes(p))
                    : "size " + a.size() + " header " + safetensorsHeader(p, a.size());
            Object ctime;
            try {
                ctime = Files.getAttribute(p, "unix:ctime");
            } catch (UnsupportedOperationException | IllegalArgumentException e) {
                ctime = "?";
            }
            String stat = "size " + a.size() + " mtime " + a.lastModifiedTime() + " ctime " + ctime + " inode "
                    + a.fileKey();
            out.add(new FileState(p, name, a.size(), key, stat));
        }
        return out;
    }

    /** SHA-256 of a safetensors file's length prefix and header, or why there is none (the loader then fails). */
    private static String safetensorsHeader(Path file, long size) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            if (size < 8) {
                return "none (" + size + " bytes)";
            }
            ByteBuffer prefix = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, prefix, 0);
            long n = prefix.getLong(0);
            if (n < 0 || n > size - 8 || n > 100_000_000) {
                return "invalid (length " + n + ")";
            }
            ByteBuffer header = ByteBuffer.allocate((int) n);
            readFully(ch, header, 8);
            MessageDigest md = sha256();
            md.update(prefix.array());
            md.update(header.array());
            return "sha256 " + HexFormat.of().formatHex(md.digest());
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer b, long at) throws IOException {
        while (b.hasRemaining()) {
            if (ch.read(b, at + b.position()) < 0) {
                throw new IOException("unexpected end of file");
            }
        }
    }

    private static String graphKey(String kind, Record spec, Path folder, List<FileState> files) {
        StringBuilder k = new StringBuilder();
        k.append("ditserve onnx graph cache format ").append(FORMAT).append('\n');
        k.append("builder ").append(BUILDER_VERSION).append(" code sha256 ").append(CodeHash.VALUE).append('\n');
        k.append("onnxruntime ").append(ortVersion()).append('\n');
        k.append("kind ").append(kind).append('\n');
        k.append("folder ").append(folder.toAbsolutePath().normalize()).append('\n');
        k.append("spec ").append(describe(spec)).append('\n');
        for (FileState f : files) {
            k.append("file ").append(f.name()).append(' ').append(f.keyText()).append('\n');
        }
        return k.toString();
    }

    private static String optimizedKeyPart(String sessionKey, Path folder, List<FileState> files) {
        StringBuilder k = new StringBuilder();
        k.append("optimized by onnxruntime: ").append(sessionKey).append('\n');
        k.append("cpu ").append(CpuId.VALUE).append('\n');
        for (FileState f : files) {
            if (f.name().endsWith(".safetensors")) {
                k.append("weights ").append(f.name()).append(' ').append(f.statText()).append('\n');
            }
        }
        return k.toString();
    }

    /**
     * A record's components, recursively, as {@code Name[a=1, b=Nested[...], c=[x, y]]}: what its toString says,
     * but read through reflection (in a cold JVM about 27 ms for an MMDiT spec, where its generated toString took
     * 85), with arrays by content and the elements of sets and maps sorted (Set.of and Map.of iterate in a different
     * order in each JVM), so that equal specs give equal text in every process.
     */
    static String describe(Object o) {
        if (o != null && o.getClass().isArray()) {
            List<Object> elements = new ArrayList<>();
            for (int i = 0; i < java.lang.reflect.Array.getLength(o); i++) {
                elements.add(java.lang.reflect.Array.get(o, i));
            }
            return describe(elements);
        }
        if (o instanceof Map<?, ?> m) {
            return describe(m.entrySet().stream().map(e -> describe(e.getKey()) + "=" + describe(e.getValue()))
                    .sorted().toList());
        }
        if (o instanceof java.util.Collection<?> c && !(o instanceof List<?>)) {
            return describe(c.stream().map(GraphCache::describe).sorted().toList());
        }
        if (o instanceof Record r) {
            StringBuilder b = new StringBuilder(r.getClass().getSimpleName()).append('[');
            java.lang.reflect.RecordComponent[] cs = r.getClass().getRecordComponents();
            for (int i = 0; i < cs.length; i++) {
                Object v;
                try {
                    v = cs[i].getAccessor().invoke(r);
                } catch (ReflectiveOperationException e) {
                    throw new IllegalStateException("cannot read " + cs[i] + " of " + r.getClass(), e);
                }
                b.append(i == 0 ? "" : ", ").append(cs[i].getName()).append('=').append(describe(v));
            }
            return b.append(']').toString();
        }
        if (o instanceof List<?> l) {
            StringBuilder b = new StringBuilder("[");
            for (int i = 0; i < l.size(); i++) {
                b.append(i == 0 ? "" : ", ").append(describe(l.get(i)));
            }
            return b.append(']').toString();
        }
        return String.valueOf(o);
    }

    private static String ortVersion() {
        try {
            return OnnxRunner.environment().getVersion();
        } catch (BackendException e) {
            return "unknown";
        }
    }

    /** SHA-256 of the bytes of {@link #BUILDER_CLASSES} and their nested classes, computed once. */
    private static final class CodeHash {
        static final String VALUE = compute();

        private static String compute() {
            MessageDigest md = sha256();
            for (Class<?> c : BUILDER_CLASSES) {
                add(md, c);
            }
            return HexFormat.of().formatHex(md.digest());
        }

        private static void add(MessageDigest md, Class<?> c) {
            String resource = c.getName().replace('.', '/') + ".class";
            md.update(resource.getBytes(StandardCharsets.UTF_8));
            ClassLoader loader = c.getClassLoader() != null ? c.getClassLoader() : ClassLoader.getSystemClassLoader();
            try (InputStream in = loader.getResourceAsStream(resource)) {
                md.update(in == null ? new byte[] {0} : in.readAllBytes());
            } catch (IOException e) {
                md.update(new byte[] {1});
            }
            Class<?>[] nested = c.getDeclaredClasses();
            Arrays.sort(nested, Comparator.comparing(Class::getName));
            for (Class<?> n : nested) {
                add(md, n);
            }
        }
    }

    /** The CPU as ONNX Runtime's layout optimisations see it: /proc/cpuinfo's first model name and flags. */
    private static final class CpuId {
        static final String VALUE = compute();

        private static String compute() {
            String model = "?";
            String flags = "?";
            try (Stream<String> lines = Files.lines(Path.of("/proc/cpuinfo"))) {
                for (String line : (Iterable<String>) lines::iterator) {
                    int colon = line.indexOf(':');
                    if (colon < 0) {
                        continue;
                    }
                    String key = line.substring(0, colon).trim();
                    if (key.equals("model name") && model.equals("?")) {
                        model = line.substring(colon + 1).trim();
                    } else if ((key.equals("flags") || key.equals("Features")) && flags.equals("?")) {
                        flags = sha256(line.substring(colon + 1).trim());
                    }
                }
            } catch (IOException | UncheckedIOException e) {
                // not Linux: the architecture and the processor count below are all there is
            }
            return System.getProperty("os.arch") + ", " + model + ", flags sha256 " + flags;
        }
    }

    // ---- the built graph's entry: one file

    /** A cache entry that cannot be used, with the reason. */
    static final class Corrupt extends Exception {
        Corrupt(String message) {
            super(message);
        }
    }

    /** The graph of {@code file}, null when there is none (or it is another key's); Corrupt when it is bad. */
    static Built readGraph(Path file, String key) throws Corrupt {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (NoSuchFileException e) {
            return null;
        } catch (IOException e) {
            throw new Corrupt("cannot read: " + e.getMessage());
        }
        if (!hasMagic(bytes, GRAPH_MAGIC)) {
            throw new Corrupt("not a graph cache entry (" + bytes.length + " bytes)");
        }
        if (!checksumHolds(bytes)) {
            throw new Corrupt("checksum mismatch (" + bytes.length + " bytes: truncated or corrupt)");
        }
        try (DataInputStream in = body(bytes, GRAPH_MAGIC)) {
            int format = in.readInt();
            if (format != FORMAT) {
                throw new Corrupt("format " + format + ", expected " + FORMAT);
            }
            String storedKey = new String(readBlock(in), StandardCharsets.UTF_8);
            if (!storedKey.equals(key)) {
                return null; // another key with the same hash: never seen, but not this entry
            }
            int nodes = in.readInt();
            int tensors = in.readInt();
            int fileCount = in.readInt();
            Map<String, Long> byFile = new LinkedHashMap<>();
            for (int i = 0; i < fileCount; i++) {
                byFile.put(in.readUTF(), in.readLong());
            }
            byte[] model = readBlock(in);
            if (in.available() != 0) {
                throw new Corrupt(in.available() + " bytes after the graph");
            }
            return new Built(model, new ExternalData.Summary(java.util.Collections.unmodifiableMap(byFile), tensors),
                    nodes);
        } catch (IOException | RuntimeException e) {
            throw new Corrupt("malformed: " + e);
        }
    }

    /** Whether {@code bytes} start with {@code magic} and are long enough for the format, a key length and a CRC. */
    private static boolean hasMagic(byte[] bytes, byte[] magic) {
        return bytes.length >= magic.length + 8 && Arrays.equals(bytes, 0, magic.length, magic, 0, magic.length);
    }

    /** Whether the last 4 bytes are the CRC-32 of those before them. */
    private static boolean checksumHolds(byte[] bytes) {
        return crc(bytes, bytes.length - 4) == ByteBuffer.wrap(bytes, bytes.length - 4, 4).getInt();
    }

    /** What lies between the magic and the CRC: the format, the key, the contents. */
    private static DataInputStream body(byte[] bytes, byte[] magic) {
        return new DataInputStream(new java.io.ByteArrayInputStream(bytes, magic.length,
                bytes.length - 4 - magic.length));
    }

    /** Writes an entry's contents after their header. */
    private interface Contents {
        void write(DataOutputStream out) throws IOException;
    }

    /** The bytes of a file of the cache: {@code magic}, the format, the key, the contents, then their CRC-32. */
    private static byte[] framed(byte[] magic, String key, int sizeHint, Contents contents) throws IOException {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(sizeHint + key.length() + 1024);
        try (DataOutputStream out = new DataOutputStream(buf)) {
            out.write(magic);
            out.writeInt(FORMAT);
            byte[] k = key.getBytes(StandardCharsets.UTF_8);
            out.writeInt(k.length);
            out.write(k);
            contents.write(out);
        }
        byte[] body = buf.toByteArray();
        byte[] bytes = Arrays.copyOf(body, body.length + 4);
        ByteBuffer.wrap(bytes, body.length, 4).putInt(crc(body, body.length));
        return bytes;
    }

    /** Writes {@code bytes} to the new file {@code file} and forces them to the disk. */
    private static void writeNew(Path file, byte[] bytes) throws IOException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                ch.write(b);
            }
            ch.force(true);
        }
    }

    private static byte[] readBlock(DataInputStream in) throws IOException {
        int n = in.readInt();
        if (n < 0 || n > in.available()) {
            throw new IOException("a block of " + n + " bytes where " + in.available() + " remain");
        }
        return in.readNBytes(n);
    }

    /** Writes the entry under a temporary name and renames it into place; false (after a WARN) when it cannot. */
    static boolean writeGraph(Path dir, Path file, String key, Built built) {
        byte[] bytes;
        try {
            bytes = framed(GRAPH_MAGIC, key, built.model().length, out -> {
                out.writeInt(built.nodes());
                out.writeInt(built.summary().tensors());
                out.writeInt(built.summary().bytesByFile().size());
                for (Map.Entry<String, Long> e : built.summary().bytesByFile().entrySet()) {
                    out.writeUTF(e.getKey());
                    out.writeLong(e.getValue());
                }
                out.writeInt(built.model().length);
                out.write(built.model());
            });
        } catch (IOException e) {
            throw new UncheckedIOException(e); // a byte array does not fail
        }
        Path tmp = dir.resolve(TEMP_PREFIX + file.getFileName() + "-" + UUID.randomUUID());
        try {
            writeNew(tmp, bytes);
            Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            return true;
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "onnx graph cache: cannot write " + file + ": " + e
                    + "; loading without it");
            deleteQuietly(tmp);
            return false;
        }
    }

    // ---- the optimised graph's entry: a folder with model.onnx, model.onnx.data and a manifest

    private record Optimized(OnnxRunner runner, Outcome outcome, Path entry) {}

    private static Optimized openOptimized(Config config, Path entry, String key, Path folder, Built built,
            BackendOptions options, String thread) throws BackendException {
        boolean replacing = false;
        try {
            if (checkOptimized(entry, key)) {
                try {
                    OnnxRunner r = OnnxRunner.openOptimized(entry.resolve(MODEL_FILE), folder, built.summary(),
                            options, thread);
                    touch(entry.resolve(MANIFEST_FILE));
                    return new Optimized(r, Outcome.HIT, entry);
                } catch (BackendException e) {
                    // e.g. evicted by another process between the check and the load
                    throw new Corrupt("ONNX Runtime cannot load it: " + e.getMessage());
                }
            }
        } catch (Corrupt e) {
            warnCorrupt(entry, e.getMessage());
            replacing = true;
        }
        // 16-bit weights become float32: at most twice the bytes the graph reads (fp32 ones stay as they are)
        long estimate = 2 * built.summary().bytesByFile().values().stream().mapToLong(Long::longValue).sum();
        if (estimate > config.maxBytes()) {
            LOG.log(System.Logger.Level.INFO, () -> "onnx graph cache: the optimized graph of " + folder
                    + " would take about " + (estimate >> 20) + " MB, over " + MAX_MB_OPTION + "="
                    + (config.maxBytes() >> 20) + ": not cached");
            return new Optimized(OnnxRunner.openGenerated(built.model(), folder, built.summary(), options, thread),
                    Outcome.TOO_BIG, null);
        }
        Path tmp = config.dir().resolve(TEMP_PREFIX + entry.getFileName() + "-" + UUID.randomUUID());
        OnnxRunner runner;
        try {
            Files.createDirectory(tmp);
            runner = OnnxRunner.openGenerated(built.model(), folder, built.summary(), options, thread,
                    tmp.resolve(MODEL_FILE));
        } catch (IOException | BackendException e) {
            // saving failed (a full disk?) or the model does not load at all: the plain load says which
            deleteTree(tmp);
            OnnxRunner r = OnnxRunner.openGenerated(built.model(), folder, built.summary(), options, thread);
            LOG.log(System.Logger.Level.WARNING, "onnx graph cache: cannot save the optimized graph to " + entry
                    + ": " + e.getMessage() + "; loaded without it");
            return new Optimized(r, Outcome.UNAVAILABLE, null);
        }
        try {
            writeManifest(tmp, key);
            commit(tmp, entry, replacing);
            evict(config);
            return new Optimized(runner, replacing ? Outcome.CORRUPT : Outcome.MISS, entry);
        } catch (IOException e) {
            deleteTree(tmp);
            LOG.log(System.Logger.Level.WARNING, "onnx graph cache: cannot write " + entry + ": " + e
                    + "; loaded without it");
            return new Optimized(runner, Outcome.UNAVAILABLE, null);
        }
    }

    /** Whether {@code entry} holds the whole optimised graph of {@code key}; false when absent, Corrupt when bad. */
    static boolean checkOptimized(Path entry, String key) throws Corrupt {
        Path manifest = entry.resolve(MANIFEST_FILE);
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(manifest);
        } catch (NoSuchFileException e) {
            if (Files.exists(entry)) {
                throw new Corrupt("no " + MANIFEST_FILE);
            }
            return false;
        } catch (IOException e) {
            throw new Corrupt("cannot read its " + MANIFEST_FILE + ": " + e.getMessage());
        }
        if (!hasMagic(bytes, MANIFEST_MAGIC) || !checksumHolds(bytes)) {
            throw new Corrupt(MANIFEST_FILE + " truncated or corrupt (" + bytes.length + " bytes)");
        }
        Map<String, long[]> files = new LinkedHashMap<>();
        try (DataInputStream in = body(bytes, MANIFEST_MAGIC)) {
            if (in.readInt() != FORMAT) {
                throw new Corrupt(MANIFEST_FILE + " of another format");
            }
            if (!new String(readBlock(in), StandardCharsets.UTF_8).equals(key)) {
                throw new Corrupt(MANIFEST_FILE + " of another key");
            }
            int n = in.readInt();
            for (int i = 0; i < n; i++) {
                files.put(in.readUTF(), new long[] {in.readLong(), in.readInt()});
            }
        } catch (IOException e) {
            throw new Corrupt(MANIFEST_FILE + " malformed: " + e);
        }
        for (Map.Entry<String, long[]> f : files.entrySet()) {
            Path p = entry.resolve(f.getKey());
            try {
                long size = Files.size(p);
                if (size != f.getValue()[0]) {
                    throw new Corrupt(f.getKey() + " has " + size + " bytes, the manifest says " + f.getValue()[0]);
                }
                if (crc(p) != (int) f.getValue()[1]) {
                    throw new Corrupt(f.getKey() + ": checksum mismatch");
                }
            } catch (IOException e) {
                throw new Corrupt(f.getKey() + ": " + e);
            }
        }
        return true;
    }

    /** Lists the files ONNX Runtime wrote in {@code dir} with their sizes and checksums, the key first. */
    private static void writeManifest(Path dir, String key) throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(dir)) {
            files = s.sorted().toList();
        }
        if (files.stream().noneMatch(p -> p.getFileName().toString().equals(MODEL_FILE))) {
            throw new IOException("ONNX Runtime wrote no " + MODEL_FILE + " in " + dir);
        }
        writeNew(dir.resolve(MANIFEST_FILE), framed(MANIFEST_MAGIC, key, 0, out -> {
            out.writeInt(files.size());
            for (Path p : files) {
                out.writeUTF(p.getFileName().toString());
                out.writeLong(Files.size(p));
                out.writeInt(crc(p));
            }
        }));
    }

    /**
     * Renames the written folder into place. A folder already there is another load's equal entry (kept, ours
     * deleted) unless {@code replacing} a bad one, which is moved aside and deleted first.
     */
    private static void commit(Path tmp, Path entry, boolean replacing) throws IOException {
        if (replacing && Files.exists(entry)) {
            Path trash = entry.resolveSibling(TEMP_PREFIX + "trash-" + UUID.randomUUID());
            try {
                Files.move(entry, trash, StandardCopyOption.ATOMIC_MOVE);
                deleteTree(trash);
            } catch (NoSuchFileException e) {
                // someone else removed it
            }
        }
        try {
            Files.move(tmp, entry, StandardCopyOption.ATOMIC_MOVE);
        } catch (IOException e) {
            // rename(2) onto a folder that is not empty fails (Java says "Directory not empty", or
            // FileAlreadyExistsException): a concurrent load got there first with the same entry
            if (!Files.isDirectory(entry)) {
                throw e;
            }
            deleteTree(tmp);
        }
    }

    // ---- recency and eviction

    private static void touch(Path file) {
        try {
            Files.setLastModifiedTime(file, FileTime.from(Instant.now()));
        } catch (IOException e) {
            // a read-only cache still serves hits; recency is then the write time
        }
    }

    /** One entry of the cache folder: its path, bytes, last use. */
    private record Entry(Path path, long bytes, FileTime used) {}

    /**
     * Deletes the least recently used entries (their files' modification times, set on each hit) until the
     * entries take at most {@code onnx.graph_cache_max_mb}, and temporary files left over by dead processes.
     */
    static void evict(Config config) {
        List<Entry> entries = new ArrayList<>();
        Instant stale = Instant.now().minus(STALE_TEMP);
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(config.dir())) {
            for (Path p : ds) {
                String n = p.getFileName().toString();
                try {
                    if (n.startsWith(TEMP_PREFIX)) {
                        if (Files.getLastModifiedTime(p).toInstant().isBefore(stale)) {
                            deleteTree(p);
                        }
                    } else if (n.endsWith(GRAPH_SUFFIX) && Files.isRegularFile(p)) {
                        entries.add(new Entry(p, Files.size(p), Files.getLastModifiedTime(p)));
                    } else if (n.endsWith(OPTIMIZED_SUFFIX) && Files.isDirectory(p)) {
                        long bytes = 0;
                        try (Stream<Path> s = Files.list(p)) {
                            for (Path f : (Iterable<Path>) s::iterator) {
                                bytes += Files.size(f);
                            }
                        }
                        Path manifest = p.resolve(MANIFEST_FILE);
                        entries.add(new Entry(p, bytes, Files.getLastModifiedTime(Files.exists(manifest) ? manifest
                                : p)));
                    }
                } catch (IOException e) {
                    // gone meanwhile (another process evicting): not counted
                }
            }
        } catch (IOException e) {
            LOG.log(System.Logger.Level.WARNING, "onnx graph cache: cannot list " + config.dir() + ": " + e);
            return;
        }
        long total = entries.stream().mapToLong(Entry::bytes).sum();
        if (total <= config.maxBytes()) {
            return;
        }
        entries.sort(Comparator.comparing(Entry::used));
        int evicted = 0;
        long freed = 0;
        for (Entry e : entries) {
            if (total <= config.maxBytes()) {
                break;
            }
            if (remove(e.path())) {
                total -= e.bytes();
                freed += e.bytes();
                evicted++;
            }
        }
        int count = evicted;
        long bytes = freed;
        LOG.log(System.Logger.Level.INFO, () -> String.format("onnx graph cache: evicted %d least recently used"
                + " entries (%.1f MB) to stay under %s=%d", count, bytes / 1048576.0, MAX_MB_OPTION,
                config.maxBytes() >> 20));
    }

    /** Deletes an entry: a folder is first renamed away, so that no reader ever sees half of it. */
    private static boolean remove(Path entry) {
        try {
            if (Files.isDirectory(entry)) {
                Path trash = entry.resolveSibling(TEMP_PREFIX + "trash-" + UUID.randomUUID());
                Files.move(entry, trash, StandardCopyOption.ATOMIC_MOVE);
                deleteTree(trash);
            } else {
                Files.delete(entry);
            }
            return true;
        } catch (IOException e) {
            return false;
        }
    }

    // ---- helpers

    /** Creates the cache folder if need be; false (one WARN per folder and process) when it cannot be used. */
    private static boolean usable(Path dir) {
        try {
            Files.createDirectories(dir);
            if (Files.isWritable(dir)) {
                return true;
            }
            if (REPORTED_UNUSABLE.add(dir)) {
                LOG.log(System.Logger.Level.WARNING, "onnx graph cache: " + dir + " is not writable; graphs are"
                        + " built at every load (set " + DIR_OPTION + ", or " + OPTION + "=off)");
            }
        } catch (IOException | SecurityException e) {
            if (REPORTED_UNUSABLE.add(dir)) {
                LOG.log(System.Logger.Level.WARNING, "onnx graph cache: cannot create " + dir + ": " + e
                        + "; graphs are built at every load (set " + DIR_OPTION + ", or " + OPTION + "=off)");
            }
        }
        return false;
    }

    private static void warnCorrupt(Path entry, String why) {
        LOG.log(System.Logger.Level.WARNING, "onnx graph cache: " + entry + ": " + why + "; rebuilding it");
    }

    private static MessageDigest sha256() {
        try {
            return MessageDigest.getInstance("SHA-256");
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("every Java has SHA-256", e);
        }
    }

    private static String sha256(byte[] bytes) {
        return HexFormat.of().formatHex(sha256().digest(bytes));
    }

    static String sha256(String text) {
        return sha256(text.getBytes(StandardCharsets.UTF_8));
    }

    private static int crc(byte[] bytes, int length) {
        CRC32C c = new CRC32C();
        c.update(bytes, 0, length);
        return (int) c.getValue();
    }

    /** CRC32C of a whole file, read through its mapping in 256 MB windows. */
    private static int crc(Path file) throws IOException {
        CRC32C c = new CRC32C();
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            for (long at = 0; at < size; at += 1L << 28) {
                try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
                    c.update(ch.map(FileChannel.MapMode.READ_ONLY, at, Math.min(1L << 28, size - at), arena)
                            .asByteBuffer());
                }
            }
        }
        return (int) c.getValue();
    }

    private static void deleteQuietly(Path p) {
        try {
            Files.deleteIfExists(p);
        } catch (IOException e) {
            // a leftover temporary file: evict() deletes it once it is stale
        }
    }

    private static void deleteTree(Path root) {
        if (!Files.exists(root)) {
            return;
        }
        try (Stream<Path> s = Files.walk(root)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                deleteQuietly(p);
            }
        } catch (IOException | UncheckedIOException e) {
            // as above
        }
    }
}
