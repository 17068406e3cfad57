package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;

/**
 * The tensors of a transformers text-encoder folder (docs/TEXT_MODELS.md, "Text encoders") as its spec implies them,
 * and where each lies: {@value #SINGLE_FILE}, or the shards {@value #INDEX_FILE} lists (the one file wins when both
 * exist). For a backend that reads the weights in place (the onnx backend points its graph's initializers into these
 * files) rather than decoding them: {@link #open} validates strictly, as the java backend's reader does (a missing,
 * unexpected or misshapen tensor, a non-float weight, a shard tensor the index maps elsewhere fail naming it), and
 * returns the file and header entry of every tensor.
 *
 * <p>Names not in {@link #expectedShapes} but accepted ({@link #optionalNames}): CLIP's position table (any length
 * ≥ the tokens fed, checked here) and transformers' legacy {@code position_ids} buffer (must be 0 … length − 1);
 * T5's token embedding under {@code shared.weight} or its tied copy {@code encoder.embed_tokens.weight} (one of them
 * must be there).
 */
public final class TextEncoderCheckpoint {
    public static final String SINGLE_FILE = "model.safetensors";
    public static final String INDEX_FILE = "model.safetensors.index.json";
    public static final String CLIP_POSITIONS = "text_model.embeddings.position_embedding.weight";
    public static final String CLIP_POSITION_IDS = "text_model.embeddings.position_ids";
    public static final String T5_SHARED = "shared.weight";
    public static final String T5_TIED = "encoder.embed_tokens.weight";
    private static final Set<String> FLOAT_DTYPES = Set.of("F32", "F16", "BF16", "F64");
    private static final ObjectMapper JSON = new ObjectMapper();

    private TextEncoderCheckpoint() {}

    /** A tensor of the folder: the file that holds it and its header entry there. */
    public record Located(Path file, Safetensors.Entry entry) {}

    /** The architecture's tensors (transformers' names) with their shapes, the names of {@link #optionalNames} aside. */
    public static Map<String, long[]> expectedShapes(TextEncoderSpec s) {
        return switch (s.kind()) {
            case CLIP_WITH_PROJECTION -> clipShapes(s);
            case T5_ENCODER -> t5Shapes(s);
        };
    }

    /** The names accepted besides {@link #expectedShapes} (see the class comment). */
    public static Set<String> optionalNames(TextEncoderSpec s) {
        return switch (s.kind()) {
            case CLIP_WITH_PROJECTION -> Set.of(CLIP_POSITIONS, CLIP_POSITION_IDS);
            case T5_ENCODER -> Set.of(T5_SHARED, T5_TIED);
        };
    }

    private static Map<String, long[]> clipShapes(TextEncoderSpec s) {
        long d = s.hiddenSize();
        long f = s.intermediate();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("text_model.embeddings.token_embedding.weight", new long[] {s.vocab(), d});
        for (int i = 0; i < s.layers(); i++) {
            String p = "text_model.encoder.layers." + i + ".";
            for (String a : new String[] {"q_proj", "k_proj", "v_proj", "out_proj"}) {
                m.put(p + "self_attn." + a + ".weight", new long[] {d, d});
                m.put(p + "self_attn." + a + ".bias", new long[] {d});
            }
            for (String ln : new String[] {"layer_norm1", "layer_norm2"}) {
                m.put(p + ln + ".weight", new long[] {d});
                m.put(p + ln + ".bias", new long[] {d});
            }
            m.put(p + "mlp.fc1.weight", new long[] {f, d});
            m.put(p + "mlp.fc1.bias", new long[] {f});
            m.put(p + "mlp.fc2.weight", new long[] {d, f});
            m.put(p + "mlp.fc2.bias", new long[] {d});
        }
        m.put("text_model.final_layer_norm.weight", new long[] {d});
        m.put("text_model.final_layer_norm.bias", new long[] {d});
        m.put("text_projection.weight", new long[] {s.projectionDim(), d});
        return m;
    }

    private static Map<String, long[]> t5Shapes(TextEncoderSpec s) {
        long d = s.hiddenSize();
        long inner = (long) s.heads() * s.headDim();
        long f = s.intermediate();
        Map<String, long[]> m = new LinkedHashMap<>();
        for (int i = 0; i < s.layers(); i++) {
            String a = "encoder.block." + i + ".layer.0.";
            for (String p : new String[] {"q", "k", "v"}) {
                m.put(a + "SelfAttention." + p + ".weight", new long[] {inner, d});
            }
            m.put(a + "SelfAttention.o.weight", new long[] {d, inner});
            if (i == 0) {
                m.put(a + "SelfAttention.relative_attention_bias.weight", new long[] {s.relativeBuckets(), s.heads()});
            }
            m.put(a + "layer_norm.weight", new long[] {d});
            String ffn = "encoder.block." + i + ".layer.1.";
            m.put(ffn + "DenseReluDense.wi_0.weight", new long[] {f, d});
            m.put(ffn + "DenseReluDense.wi_1.weight", new long[] {f, d});
            m.put(ffn + "DenseReluDense.wo.weight", new long[] {d, f});
            m.put(ffn + "layer_norm.weight", new long[] {d});
        }
        m.put("encoder.final_layer_norm.weight", new long[] {d});
        return m;
    }

    /** Every tensor of the folder with its file ({@link #locate}), validated against the spec. */
    public static Map<String, Located> open(TextEncoderSpec spec) throws BackendException {
        Map<String, Located> tensors = locate(spec.directory());
        validate(spec, tensors);
        return tensors;
    }

    /** Every tensor of the folder with the file that holds it; each file's header is validated on the way. */
    public static Map<String, Located> locate(Path dir) throws BackendException {
        Path single = dir.resolve(SINGLE_FILE);
        Path index = dir.resolve(INDEX_FILE);
        Map<String, Located> out = new TreeMap<>();
        if (Files.exists(single)) {
            add(single, null, out);
        } else if (Files.exists(index)) {
            Map<String, String> map = weightMap(index);
            for (String file : new TreeSet<>(map.values())) {
                if (file.contains("/") || file.contains("\\") || file.startsWith(".")
                        || !file.endsWith(".safetensors")) {
                    throw new BackendException(index + ": shard '" + file + "' is not a .safetensors file name in the"
                            + " folder");
                }
                add(dir.resolve(file), map, out);
            }
            for (String name : map.keySet()) {
                if (!out.containsKey(name)) {
                    throw new BackendException(index + ": tensor '" + name + "' is not in its shard " + map.get(name));
                }
            }
        } else {
            throw new BackendException(dir + ": neither " + SINGLE_FILE + " nor " + INDEX_FILE);
        }
        return Collections.unmodifiableMap(out);
    }

    private static void add(Path file, Map<String, String> map, Map<String, Located> out) throws BackendException {
        try (Safetensors st = Safetensors.open(file)) {
            String shard = file.getFileName().toString();
            for (Safetensors.Entry e : st.entries().values()) {
                if (map != null && !shard.equals(map.get(e.name()))) {
                    throw new BackendException(file + ": tensor '" + e.name() + "' is not mapped to this shard in "
                            + INDEX_FILE);
                }
                Located before = out.putIfAbsent(e.name(), new Located(file, e));
                if (before != null) {
                    throw new BackendException(file + ": tensor '" + e.name() + "' is also in " + before.file());
                }
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

    /**
     * Checks {@code tensors} against the spec: every expected tensor with its shape and a float dtype, no unexpected
     * one, and the optional names' own rules (see the class comment).
     */
    public static void validate(TextEncoderSpec spec, Map<String, Located> tensors) throws BackendException {
        Path dir = spec.directory();
        Map<String, long[]> expected = expectedShapes(spec);
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            Located t = tensors.get(e.getKey());
            if (t == null) {
                throw new BackendException(dir + ": tensor '" + e.getKey() + "' is missing");
            }
            checkFloat(t, e.getValue());
        }
        Set<String> optional = optionalNames(spec);
        for (Map.Entry<String, Located> e : tensors.entrySet()) {
            if (!expected.containsKey(e.getKey()) && !optional.contains(e.getKey())) {
                throw new BackendException(e.getValue().file() + ": unexpected tensor '" + e.getKey()
                        + "' (not part of this architecture)");
            }
        }
        switch (spec.kind()) {
            case CLIP_WITH_PROJECTION -> checkClipPositions(spec, tensors);
            case T5_ENCODER -> checkT5Embedding(spec, tensors);
        }
    }

    private static void checkFloat(Located t, long[] shape) throws BackendException {
        String name = t.entry().name();
        if (!Arrays.equals(t.entry().shape(), shape)) {
            throw new BackendException(t.file() + ": tensor '" + name + "' has shape "
                    + Arrays.toString(t.entry().shape()) + ", expected " + Arrays.toString(shape));
        }
        if (!FLOAT_DTYPES.contains(t.entry().dtype())) {
            throw new BackendException(t.file() + ": tensor '" + name + "' is " + t.entry().dtype()
                    + ", not a floating-point tensor");
        }
    }

    private static void checkClipPositions(TextEncoderSpec spec, Map<String, Located> tensors)
            throws BackendException {
        Located pos = tensors.get(CLIP_POSITIONS);
        if (pos == null) {
            throw new BackendException(spec.directory() + ": tensor '" + CLIP_POSITIONS + "' is missing");
        }
        long[] shape = pos.entry().shape();
        if (shape.length != 2 || shape[1] != spec.hiddenSize() || shape[0] < spec.maxTokens()) {
            throw new BackendException(spec.directory() + ": tensor '" + CLIP_POSITIONS + "' has shape "
                    + Arrays.toString(shape) + ", expected [≥ " + spec.maxTokens() + ", " + spec.hiddenSize() + "]");
        }
        checkFloat(pos, shape);
        Located ids = tensors.get(CLIP_POSITION_IDS);
        if (ids != null) { // transformers' legacy buffer: must be 0 … max − 1
            long[] v;
            try (Safetensors st = Safetensors.open(ids.file())) {
                v = st.longs(CLIP_POSITION_IDS);
            }
            for (int i = 0; i < v.length; i++) {
                if (v[i] != i || v.length != shape[0]) {
                    throw new BackendException(spec.directory() + ": tensor '" + CLIP_POSITION_IDS + "' is not 0 … "
                            + (shape[0] - 1));
                }
            }
        }
    }

    private static void checkT5Embedding(TextEncoderSpec spec, Map<String, Located> tensors) throws BackendException {
        if (!tensors.containsKey(T5_SHARED) && !tensors.containsKey(T5_TIED)) {
            throw new BackendException(spec.directory() + ": tensor '" + T5_SHARED + "' is missing (nor is its tied"
                    + " copy '" + T5_TIED + "' there)");
        }
        for (String name : new String[] {T5_SHARED, T5_TIED}) {
            Located t = tensors.get(name);
            if (t != null) {
                checkFloat(t, new long[] {spec.vocab(), spec.hiddenSize()});
            }
        }
    }

    /** T5's token embedding: {@code shared.weight}, or its tied copy where the file has only that. */
    public static String t5Embedding(Map<String, Located> tensors) {
        return tensors.containsKey(T5_SHARED) ? T5_SHARED : T5_TIED;
    }
}
