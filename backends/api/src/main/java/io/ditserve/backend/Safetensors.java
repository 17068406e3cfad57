package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A memory-mapped safetensors file: an 8-byte little-endian header length, a JSON header
 * {@code {name: {dtype, shape, data_offsets}}}, then the raw little-endian data.
 *
 * <p>The header is validated (its length against the file size, every entry's dtype, shape and offsets against
 * the data region) before anything is mapped, so a corrupt or truncated file fails here with the file name and the
 * reason. The data is mapped once into a shared {@link Arena}: the mapping lives exactly as long as this object
 * (closing it unmaps the file; segments handed out before then become inaccessible, never dangling), and files
 * larger than 2 GB work because {@link MemorySegment} offsets are {@code long}.
 */
public final class Safetensors implements AutoCloseable {
    /** Headers larger than this are rejected before allocation (real headers are kilobytes). */
    static final long MAX_HEADER_BYTES = 100L << 20;

    private static final ObjectMapper JSON = new ObjectMapper();

    /** One tensor's entry in the header. {@code offset} is absolute in the file. */
    public record Entry(String name, String dtype, long[] shape, long offset, long byteLength) {
        public long numel() {
            long n = 1;
            for (long d : shape) {
                n *= d;
            }
            return n;
        }

        public int[] intShape() {
            int[] s = new int[shape.length];
            for (int i = 0; i < s.length; i++) {
                s[i] = Math.toIntExact(shape[i]);
            }
            return s;
        }
    }

    private final Path file;
    private final Arena arena;
    private final MemorySegment data;
    private final Map<String, Entry> entries;
    private final Map<String, String> metadata;

    private Safetensors(Path file, Arena arena, MemorySegment data, Map<String, Entry> entries,
            Map<String, String> metadata) {
        this.file = file;
        this.arena = arena;
        this.data = data;
        this.entries = entries;
        this.metadata = metadata;
    }

    public static Safetensors open(Path file) throws BackendException {
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = ch.size();
            if (size < 8) {
                throw new BackendException(file + ": " + size + " bytes is too short for a safetensors file");
            }
            ByteBuffer lenBuf = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(ch, lenBuf, 0);
            long headerLen = lenBuf.flip().getLong();
            if (headerLen <= 0 || headerLen > MAX_HEADER_BYTES || headerLen > size - 8) {
                throw new BackendException(file + ": header length " + headerLen + " is invalid for a file of "
                        + size + " bytes (truncated or not a safetensors file)");
            }
            ByteBuffer hb = ByteBuffer.allocate((int) headerLen);
            readFully(ch, hb, 8);
            JsonNode root;
            try {
                root = JSON.readTree(hb.array());
            } catch (IOException e) {
                throw new BackendException(file + ": header is not valid JSON: " + e.getMessage(), e);
            }
            if (root == null || !root.isObject()) {
                throw new BackendException(file + ": header is not a JSON object");
            }
            long dataStart = 8 + headerLen;
            long dataLen = size - dataStart;
            Map<String, Entry> entries = new LinkedHashMap<>();
            Map<String, String> meta = new LinkedHashMap<>();
            for (Map.Entry<String, JsonNode> f : root.properties()) {
                if (f.getKey().equals("__metadata__")) {
                    f.getValue().properties().forEach(m -> meta.put(m.getKey(), m.getValue().asText()));
                    continue;
                }
                entries.put(f.getKey(), parseEntry(file, f.getKey(), f.getValue(), dataStart, dataLen));
            }
            Arena arena = Arena.ofShared();
            try {
                MemorySegment seg = ch.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
                return new Safetensors(file, arena, seg, Collections.unmodifiableMap(entries),
                        Collections.unmodifiableMap(meta));
            } catch (IOException | RuntimeException e) {
                arena.close();
                throw e;
            }
        } catch (NoSuchFileException e) {
            throw new BackendException(file + ": missing");
        } catch (IOException e) {
            throw new BackendException(file + ": cannot read: " + e.getMessage(), e);
        }
    }

    private static void readFully(FileChannel ch, ByteBuffer buf, long pos) throws IOException {
        while (buf.hasRemaining()) {
            int n = ch.read(buf, pos + buf.position());
            if (n < 0) {
                throw new IOException("unexpected end of file");
            }
        }
    }

    private static Entry parseEntry(Path file, String name, JsonNode n, long dataStart, long dataLen)
            throws BackendException {
        String where = file + ": tensor '" + name + "': ";
        String dtype = n.path("dtype").asText("");
        int width = switch (dtype) {
            case "F32", "I32" -> 4;
            case "F16", "BF16" -> 2;
            case "F64", "I64" -> 8;
            default -> throw new BackendException(where + "unsupported dtype '" + dtype
                    + "' (supported: F32, F16, BF16, F64, I64, I32)");
        };
        JsonNode shapeNode = n.get("shape");
        JsonNode offs = n.get("data_offsets");
        if (shapeNode == null || !shapeNode.isArray() || offs == null || !offs.isArray() || offs.size() != 2) {
            throw new BackendException(where + "needs 'shape' (array) and 'data_offsets' ([begin, end])");
        }
        long[] shape = new long[shapeNode.size()];
        long numel = 1;
        for (int i = 0; i < shape.length; i++) {
            long d = shapeNode.get(i).asLong(-1);
            if (d < 0 || !shapeNode.get(i).isIntegralNumber()) {
                throw new BackendException(where + "invalid shape " + shapeNode);
            }
            shape[i] = d;
            numel = Math.multiplyExact(numel, d);
        }
        long begin = offs.get(0).asLong(-1);
        long end = offs.get(1).asLong(-1);
        if (begin < 0 || end < begin || end > dataLen) {
            throw new BackendException(where + "data_offsets [" + begin + ", " + end + "] lie outside the "
                    + dataLen + " data bytes (truncated file?)");
        }
        if (end - begin != numel * width) {
            throw new BackendException(where + "shape " + shapeNode + " of " + dtype + " needs " + numel * width
                    + " bytes, data_offsets give " + (end - begin));
        }
        return new Entry(name, dtype, shape, dataStart + begin, end - begin);
    }

    public Path file() {
        return file;
    }

    public Map<String, Entry> entries() {
        return entries;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    public Entry entry(String name) throws BackendException {
        Entry e = entries.get(name);
        if (e == null) {
            throw new BackendException(file + ": tensor '" + name + "' is missing");
        }
        return e;
    }

    /** Checks that a tensor exists with exactly this shape. */
    public Entry expect(String name, long... shape) throws BackendException {
        Entry e = entry(name);
        if (!java.util.Arrays.equals(e.shape(), shape)) {
            throw new BackendException(file + ": tensor '" + name + "' has shape "
                    + java.util.Arrays.toString(e.shape()) + ", expected " + java.util.Arrays.toString(shape));
        }
        return e;
    }

    /** The raw bytes of a tensor inside the mapping (valid until {@link #close}). */
    public MemorySegment segment(String name) throws BackendException {
        Entry e = entry(name);
        return data.asSlice(e.offset(), e.byteLength());
    }

    /** Copies a floating-point tensor to a heap array, converting F16/BF16/F64 to float32. */
    public float[] floats(String name) throws BackendException {
        Entry e = entry(name);
        long n = e.numel();
        if (n > Integer.MAX_VALUE - 8) {
            throw new BackendException(file + ": tensor '" + name + "' has " + n + " values, too many for one array");
        }
        float[] out = new float[(int) n];
        decodeFloats(file, e, data.asSlice(e.offset(), e.byteLength()), out);
        return out;
    }

    /**
     * Converts the raw bytes {@code s} of the floating-point tensor {@code e} (read from {@code file}, named in
     * errors) to float32 values in {@code out[0 .. numel)}: for a reader that fetches a tensor's bytes itself
     * (through a channel, into a buffer it reuses) instead of through the mapping.
     */
    public static void decodeFloats(Path file, Entry e, MemorySegment s, float[] out) throws BackendException {
        int n = Math.toIntExact(e.numel());
        if (out.length < n || s.byteSize() < e.byteLength()) {
            throw new IllegalArgumentException(e.name() + ": " + n + " values in " + e.byteLength()
                    + " bytes do not fit " + out.length + " floats from " + s.byteSize() + " bytes");
        }
        switch (e.dtype()) {
            case "F32" -> MemorySegment.copy(s, ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN),
                    0, out, 0, n);
            case "F16" -> {
                for (int i = 0; i < n; i++) {
                    out[i] = Float.float16ToFloat(s.get(LE_SHORT, 2L * i));
                }
            }
            case "BF16" -> {
                for (int i = 0; i < n; i++) {
                    out[i] = Float.intBitsToFloat((s.get(LE_SHORT, 2L * i) & 0xffff) << 16);
                }
            }
            case "F64" -> {
                for (int i = 0; i < n; i++) {
                    out[i] = (float) s.get(LE_DOUBLE, 8L * i);
                }
            }
            default -> throw new BackendException(file + ": tensor '" + e.name() + "' is " + e.dtype()
                    + ", not a floating-point tensor");
        }
    }

    /** Copies an integer tensor (I64 or I32) to a heap array of longs. */
    public long[] longs(String name) throws BackendException {
        Entry e = entry(name);
        long[] out = new long[Math.toIntExact(e.numel())];
        MemorySegment s = data.asSlice(e.offset(), e.byteLength());
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (e.dtype()) {
                case "I64" -> s.get(LE_LONG, 8L * i);
                case "I32" -> s.get(LE_INT, 4L * i);
                default -> throw new BackendException(file + ": tensor '" + name + "' is " + e.dtype()
                        + ", not an integer tensor");
            };
        }
        return out;
    }

    /** A float tensor copied to the heap with its shape. */
    public Tensor tensor(String name) throws BackendException {
        Entry e = entry(name);
        return new Tensor(floats(name), e.intShape());
    }

    private static final ValueLayout.OfShort LE_SHORT =
            ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt LE_INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong LE_LONG = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfDouble LE_DOUBLE =
            ValueLayout.JAVA_DOUBLE_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    /** Unmaps the file. */
    @Override
    public void close() {
        if (arena.scope().isAlive()) {
            arena.close();
        }
    }
}
