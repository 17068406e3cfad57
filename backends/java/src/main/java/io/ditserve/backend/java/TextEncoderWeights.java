package io.ditserve.backend.java;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.ditserve.backend.BackendException;
import io.ditserve.backend.Safetensors;
import java.io.IOException;
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
 * fails naming it; every tensor of a shard must be mapped to that shard. F32, F16, BF16 (and F64) are converted to
 * float32 as they are read. The files are mapped until {@link #close}.
 */
final class TextEncoderWeights implements AutoCloseable {
    static final String SINGLE_FILE = "model.safetensors";
    static final String INDEX_FILE = "model.safetensors.index.json";
    private static final Set<String> FLOAT_DTYPES = Set.of("F32", "F16", "BF16", "F64");
    private static final ObjectMapper JSON = new ObjectMapper();

    private final List<Safetensors> files = new ArrayList<>();
    private final Map<String, Safetensors> byName = new LinkedHashMap<>();

    private TextEncoderWeights() {}

    /**
     * Opens the folder's weights and checks them against {@code expected} (name → shape). {@code optional} names
     * tensors that may be present or not (transformers' legacy position_ids buffer); they are not checked here.
     */
    static TextEncoderWeights open(Path dir, Map<String, long[]> expected, Set<String> optional)
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

    float[] floats(String name) throws BackendException {
        Safetensors st = byName.get(name);
        if (st == null) {
            throw new BackendException("tensor '" + name + "' is missing");
        }
        return st.floats(name);
    }

    long[] longs(String name) throws BackendException {
        return byName.get(name).longs(name);
    }

    Safetensors.Entry entry(String name) throws BackendException {
        return byName.get(name).entry(name);
    }

    @Override
    public void close() {
        for (Safetensors st : files) {
            st.close();
        }
    }
}
