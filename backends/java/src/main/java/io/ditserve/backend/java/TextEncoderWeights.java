package io.ditserve.backend.java;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.MmditCheckpoint;
import io.ditserve.backend.Safetensors;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * The weights of a transformers text encoder folder: {@code model.safetensors}, or the shards that
 * {@code model.safetensors.index.json} lists ({@code weight_map}: tensor → file; the one file wins when both exist),
 * validated strictly against the tensors the architecture has: a missing tensor, an unexpected one or a wrong shape
 * fails naming it; every tensor of a shard must be mapped to that shard.
 *
 * <p>The headers are read through {@link Safetensors} (a mapping whose data pages are never touched, closed once
 * validated); the data is then read tensor by tensor through a {@link CheckpointReader}, for the reason given there:
 * pages of a mapping count as resident memory, and T5-XXL's 9.5 GB of BF16 mapped next to their packed copy would
 * double the encoder's peak. F32, F16, BF16 (and F64) tensors are converted to float32 by {@link #floats}; the
 * linear layers' F16/BF16 weights can instead be kept in 16 bits ({@link #linear}, {@link #table}).
 */
final class TextEncoderWeights implements AutoCloseable {
    static final String SINGLE_FILE = "model.safetensors";
    static final String INDEX_FILE = "model.safetensors.index.json";
    private static final Set<String> FLOAT_DTYPES = Set.of("F32", "F16", "BF16", "F64");
    private static final ObjectMapper JSON = new ObjectMapper();

    private final List<Safetensors> files = new ArrayList<>();
    private final Map<String, Safetensors> byName = new LinkedHashMap<>();
    private CheckpointReader reader;

    private TextEncoderWeights() {}

    /**
     * Opens the folder's weights and checks them against {@code expected} (name → shape). {@code optional} names
     * tensors that may be present or not (transformers' legacy position_ids buffer); they are not checked here.
     * {@code keep16}: F16/BF16 weights of linear layers stay 16-bit ({@link CheckpointReader#keep16}).
     */
    static TextEncoderWeights open(Path dir, Map<String, long[]> expected, Set<String> optional, boolean keep16)
            throws BackendException {
        TextEncoderWeights w = new TextEncoderWeights();
        try {
            Path single = dir.resolve(SINGLE_FILE);
            Path index = dir.resolve(INDEX_FILE);
            if (Files.exists(single)) {
                w.add(Safetensors.open(single));
            } else if (Files.exists(index)) {
                Map<String, String> map = weightMap(index);
                for (String file : new TreeSet<>(map.values())) {
                    if (file.contains("/") || file.contains("\\") || !file.endsWith(".safetensors")) {
                        throw new BackendException(index + ": shard '" + file + "' is not a .safetensors file name "
                                + "in the folder");
                    }
                    Safetensors st = Safetensors.open(dir.resolve(file));
                    w.add(st);
                    for (String name : st.entries().keySet()) {
                        if (!file.equals(map.get(name))) {
                            throw new BackendException(dir.resolve(file) + ": tensor '" + name + "' is not mapped to "
                                    + "this shard in " + INDEX_FILE);
                        }
                    }
                }
                for (String name : map.keySet()) {
                    if (!w.byName.containsKey(name)) {
                        throw new BackendException(index + ": tensor '" + name + "' is not in its shard " + map.get(name));
                    }
                }
            } else {
                throw new BackendException(dir + ": neither " + SINGLE_FILE + " nor " + INDEX_FILE);
            }
            w.validate(dir, expected, optional);
            Map<String, MmditCheckpoint.Located> located = new LinkedHashMap<>();
            for (Map.Entry<String, Safetensors> e : w.byName.entrySet()) {
                located.put(e.getKey(), new MmditCheckpoint.Located(e.getValue().file(), e.getValue().entry(e.getKey())));
            }
            w.reader = CheckpointReader.open(dir, located).keep16(keep16);
            for (Safetensors st : w.files) {
                st.close(); // headers only from here on; the data is read through the reader
            }
            return w;
        } catch (BackendException | RuntimeException e) {
            w.close();
            throw e;
        }
    }

    private void add(Safetensors st) throws BackendException {
        files.add(st);
        for (String name : st.entries().keySet()) {
            if (byName.putIfAbsent(name, st) != null) {
                throw new BackendException(st.file() + ": tensor '" + name + "' is also in " + byName.get(name).file());
            }
        }
    }

    private static Map<String, String> weightMap(Path index) throws BackendException {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(index));
        } catch (IOException e) {
            throw new BackendException(index + ": not valid JSON: " + e.getMessage(), e);
        }
        JsonNode map = root == null ? null : root.get("weight_map");
        if (map == null || !map.isObject() || map.isEmpty()) {
            throw new BackendException(index + ": no 'weight_map' object (tensor → shard file)");
        }
        Map<String, String> out = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : map.properties()) {
            if (!e.getValue().isTextual()) {
                throw new BackendException(index + ": weight_map['" + e.getKey() + "'] is not a file name");
            }
            out.put(e.getKey(), e.getValue().asText());
        }
        return out;
    }

    private void validate(Path dir, Map<String, long[]> expected, Set<String> optional) throws BackendException {
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            Safetensors st = byName.get(e.getKey());
            if (st == null) {
                throw new BackendException(dir + ": tensor '" + e.getKey() + "' is missing");
            }
            Safetensors.Entry entry = st.entry(e.getKey());
            if (!Arrays.equals(entry.shape(), e.getValue())) {
                throw new BackendException(st.file() + ": tensor '" + e.getKey() + "' has shape "
                        + Arrays.toString(entry.shape()) + ", expected " + Arrays.toString(e.getValue()));
            }
            if (!FLOAT_DTYPES.contains(entry.dtype())) {
                throw new BackendException(st.file() + ": tensor '" + e.getKey() + "' is " + entry.dtype()
                        + ", not a floating-point tensor");
            }
        }
        for (String name : byName.keySet()) {
            if (!expected.containsKey(name) && !optional.contains(name)) {
                throw new BackendException(byName.get(name).file() + ": unexpected tensor '" + name
                        + "' (not part of this architecture)");
            }
        }
    }

    boolean has(String name) {
        return byName.containsKey(name);
    }

    /** A floating-point tensor as float32 (F16/BF16 decoded exactly). */
    float[] floats(String name) throws BackendException {
        if (!byName.containsKey(name)) {
            throw new BackendException("tensor '" + name + "' is missing");
        }
        return reader.floats(name);
    }

    /** An integer tensor (I64 or I32) as longs. */
    long[] longs(String name) throws BackendException {
        Safetensors.Entry e = entry(name);
        MemorySegment data = reader.bytes(name);
        long[] out = new long[Math.toIntExact(e.numel())];
        for (int i = 0; i < out.length; i++) {
            out[i] = switch (e.dtype()) {
                case "I64" -> data.get(LE_LONG, 8L * i);
                case "I32" -> data.get(LE_INT, 4L * i);
                default -> throw new BackendException(byName.get(name).file() + ": tensor '" + name + "' is "
                        + e.dtype() + ", not an integer tensor");
            };
        }
        return out;
    }

    Safetensors.Entry entry(String name) throws BackendException {
        return byName.get(name).entry(name);
    }

    /**
     * Linear layers of the same input, weights (out, in) each (PyTorch's layout), their outputs side by side in
     * order (q | k | v as one product), with their biases (names, or null for none): in 16 bits when every weight is
     * kept in the same F16/BF16 format, else float32 (decoded exactly). Either way the product gives the same bits.
     */
    TextLayers.Linear linear(String[] weights, String[] biases, int out, int in) throws BackendException {
        int n = weights.length * out;
        float[] bias = new float[n];
        if (biases != null) {
            for (int i = 0; i < biases.length; i++) {
                System.arraycopy(floats(biases[i]), 0, bias, i * out, out);
            }
        }
        Half half = reader.half(weights[0]);
        for (String w : weights) {
            if (reader.half(w) != half) {
                half = null;
            }
        }
        if (half == null) {
            float[] w = new float[n * in];
            for (int i = 0; i < weights.length; i++) {
                System.arraycopy(floats(weights[i]), 0, w, i * out * in, out * in);
            }
            return TextLayers.Linear.of(w, bias, n, in);
        }
        Panels panels = Panels.of16(half, in, n);
        for (int i = 0; i < weights.length; i++) {
            panels.packColumns(reader.bytes(weights[i]), 0, i * out, out);
        }
        return new TextLayers.Linear(panels, MatMul.paddedBias(bias, n), n, in);
    }

    /** One Linear layer: {@code weight} (out, in) and {@code bias} or null. */
    TextLayers.Linear linear(String weight, String bias, int out, int in) throws BackendException {
        return linear(new String[] {weight}, bias == null ? null : new String[] {bias}, out, in);
    }

    /** An embedding table (rows × width), kept in 16 bits when the reader keeps its F16/BF16. */
    Table table(String name) throws BackendException {
        Safetensors.Entry e = entry(name);
        int rows = Math.toIntExact(e.shape()[0]);
        int width = Math.toIntExact(e.shape()[1]);
        Half half = reader.half(name);
        return half == null ? Table.of(floats(name), rows, width) : Table.of16(half, reader.bytes(name), rows, width);
    }

    @Override
    public void close() {
        if (reader != null) {
            reader.close();
        }
        for (Safetensors st : files) {
            st.close();
        }
    }

    private static final ValueLayout.OfInt LE_INT = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong LE_LONG = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
}
