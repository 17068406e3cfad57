package io.ditserve.backend.onnx;

import io.ditserve.backend.BackendException;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * The external-data files an ONNX model keeps its weights in (a graph over protobuf's 2 GB limit must: the
 * converter writes them to one file beside it, {@code model.onnx.data}), found by reading the model's protobuf
 * just far enough: {@code ModelProto.graph} (field 7) → {@code GraphProto.initializer} (5) → each
 * {@code TensorProto}'s {@code name} (8), {@code external_data} (13, key/value pairs {@code location},
 * {@code offset}, {@code length}) and {@code data_location} (14, 1 = EXTERNAL). Everything else, weight bytes
 * included, is skipped by its length, so scanning an inline 2 GB graph touches a few pages of its mapping.
 *
 * <p>ONNX Runtime resolves the locations relative to the model file when the session is created from its path;
 * checking them here first turns a missing or short data file into a start-up error that names it.
 */
final class ExternalData {
    /** One external tensor's bytes: {@code [offset, offset + length)} of {@code location}. */
    record Ref(String tensor, String location, long offset, long length) {}

    /** What a model's external data amounts to: the files, in order of first use, and their tensors' bytes. */
    record Summary(Map<String, Long> bytesByFile, int tensors) {
        boolean isEmpty() {
            return bytesByFile.isEmpty();
        }

        /** E.g. {@code "its weights in model.onnx.data (2.70 GB, 675 tensors)"}, for messages. */
        String describe() {
            long bytes = bytesByFile.values().stream().mapToLong(Long::longValue).sum();
            return "its weights in " + String.join(", ", bytesByFile.keySet()) + String.format(" (%.2f GB, %d tensors)",
                    bytes / 1e9, tensors);
        }
    }

    private ExternalData() {}

    /**
     * Checks every external tensor of {@code model}: its location is a file name inside the model's folder (no
     * absolute path, no {@code ..}), the file exists and is long enough. Returns what it found (empty when the
     * weights are inside the graph, and when the file is not a well-formed protobuf: ONNX Runtime then says why).
     */
    static Summary check(Path model) throws BackendException {
        List<Ref> refs;
        try {
            refs = scan(model);
        } catch (IllegalStateException e) {
            return new Summary(Map.of(), 0);
        }
        Path folder = model.toAbsolutePath().getParent();
        Map<String, Long> ends = new LinkedHashMap<>();
        Map<String, Long> bytes = new LinkedHashMap<>();
        Map<String, Integer> counts = new LinkedHashMap<>();
        for (Ref r : refs) {
            Path p = Path.of(r.location());
            if (r.location().isEmpty() || p.isAbsolute() || !folder.resolve(p).normalize().startsWith(folder)
                    || r.offset() < 0 || r.length() < 0) {
                throw new BackendException(model + ": tensor '" + r.tensor() + "' has its data at '" + r.location()
                        + "' [" + r.offset() + ", +" + r.length() + "); external data must be a file in the model's"
                        + " folder");
            }
            ends.merge(r.location(), r.offset() + r.length(), Math::max);
            bytes.merge(r.location(), r.length(), Long::sum);
            counts.merge(r.location(), 1, Integer::sum);
        }
        for (Map.Entry<String, Long> e : ends.entrySet()) {
            Path data = folder.resolve(e.getKey());
            String why = "(" + model.getFileName() + " keeps the weights of " + counts.get(e.getKey())
                    + " tensors in this external-data file; it must lie beside it)";
            if (!Files.exists(data)) {
                throw new BackendException(data + ": missing " + why);
            }
            if (!Files.isRegularFile(data)) {
                throw new BackendException(data + ": not a regular file " + why);
            }
            long size;
            try {
                size = Files.size(data);
            } catch (IOException ex) {
                throw new BackendException(data + ": cannot read: " + ex.getMessage(), ex);
            }
            if (size < e.getValue()) {
                throw new BackendException(data + ": truncated: " + size + " bytes, the tensors of "
                        + model.getFileName() + " need " + e.getValue() + " " + why);
            }
        }
        return new Summary(bytes, refs.size());
    }

    /** The external tensors of the main graph's initializers; IllegalStateException when it is not protobuf. */
    static List<Ref> scan(Path model) throws BackendException {
        try (FileChannel ch = FileChannel.open(model, StandardOpenOption.READ); Arena arena = Arena.ofConfined()) {
            MemorySegment m = ch.size() == 0 ? MemorySegment.NULL : ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(),
                    arena);
            List<Ref> out = new ArrayList<>();
            Reader model1 = new Reader(m, 0, ch.size());
            while (model1.more()) {
                int field = model1.tag();
                if (field == 7 && model1.wire == 2) {
                    Reader graph = model1.message();
                    while (graph.more()) {
                        if (graph.tag() == 5 && graph.wire == 2) {
                            tensor(graph.message(), out);
                        } else {
                            graph.skip();
                        }
                    }
                } else {
                    model1.skip();
                }
            }
            return out;
        } catch (IOException e) {
            throw new BackendException(model + ": cannot read: " + e.getMessage(), e);
        }
    }

    private static void tensor(Reader t, List<Ref> out) {
        String name = "";
        long location = 0;
        Map<String, String> info = new LinkedHashMap<>();
        while (t.more()) {
            int field = t.tag();
            if (field == 8 && t.wire == 2) {
                name = t.string();
            } else if (field == 13 && t.wire == 2) {
                Reader kv = t.message();
                String key = "";
                String value = "";
                while (kv.more()) {
                    int f = kv.tag();
                    if (f == 1 && kv.wire == 2) {
                        key = kv.string();
                    } else if (f == 2 && kv.wire == 2) {
                        value = kv.string();
                    } else {
                        kv.skip();
                    }
                }
                info.put(key, value);
            } else if (field == 14 && t.wire == 0) {
                location = t.varint();
            } else {
                t.skip();
            }
        }
        if (location == 1) {
            out.add(new Ref(name, info.getOrDefault("location", ""), number(name, info, "offset", 0),
                    number(name, info, "length", -1)));
        }
    }

    private static long number(String tensor, Map<String, String> info, String key, long absent) {
        String v = info.get(key);
        if (v == null) {
            if (absent < 0) {
                throw new IllegalStateException("tensor '" + tensor + "' has external data without a " + key);
            }
            return absent;
        }
        try {
            return Long.parseLong(v.trim());
        } catch (NumberFormatException e) {
            throw new IllegalStateException("tensor '" + tensor + "' has external data " + key + " '" + v + "'");
        }
    }

    /** Protobuf wire format over {@code [pos, end)} of a segment. */
    private static final class Reader {
        private final MemorySegment m;
        private long pos;
        private final long end;
        int wire;

        Reader(MemorySegment m, long pos, long end) {
            this.m = m;
            this.pos = pos;
            this.end = end;
        }

        boolean more() {
            return pos < end;
        }

        int tag() {
            long tag = varint();
            wire = (int) (tag & 7);
            return (int) (tag >>> 3);
        }

        long varint() {
            long v = 0;
            for (int shift = 0; shift < 64; shift += 7) {
                if (pos >= end) {
                    throw new IllegalStateException("truncated varint at byte " + pos);
                }
                byte b = m.get(ValueLayout.JAVA_BYTE, pos++);
                v |= (long) (b & 0x7f) << shift;
                if (b >= 0) {
                    return v;
                }
            }
            throw new IllegalStateException("malformed varint at byte " + pos);
        }

        private long length() {
            long len = varint();
            if (len < 0 || len > end - pos) {
                throw new IllegalStateException("a field of " + len + " bytes at byte " + pos + " runs past its"
                        + " message's end at " + end);
            }
            return len;
        }

        Reader message() {
            long len = length();
            Reader r = new Reader(m, pos, pos + len);
            pos += len;
            return r;
        }

        String string() {
            long len = length();
            byte[] b = m.asSlice(pos, len).toArray(ValueLayout.JAVA_BYTE);
            pos += len;
            return new String(b, java.nio.charset.StandardCharsets.UTF_8);
        }

        void skip() {
            switch (wire) {
                case 0 -> varint();
                case 1 -> advance(8);
                case 2 -> advance(length());
                case 5 -> advance(4);
                default -> throw new IllegalStateException("unsupported wire type " + wire + " at byte " + pos);
            }
        }

        private void advance(long n) {
            if (n > end - pos) {
                throw new IllegalStateException("a field runs past its message's end at " + end);
            }
            pos += n;
        }
    }
}
