package io.ditserve.backend;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/**
 * SD3's MMDiT checkpoint (diffusers' {@code SD3Transformer2DModel}, docs/TEXT_MODELS.md "MMDiT") as a spec implies
 * it, and the weight files of a {@code transformer/} folder as diffusers saves them.
 *
 * <p>{@link #expectedShapes} lists every tensor with its shape under diffusers' names; {@link #validate} requires
 * exactly those (like PyTorch's strict {@code load_state_dict}: a missing, misshapen or unexpected tensor fails
 * naming it), so a folder whose weights do not match its config.json fails at load. {@link #locate} reads the
 * folder's layout: {@value #SINGLE_FILE}, or shards {@code diffusion_pytorch_model-0000k-of-0000n.safetensors}
 * listed by {@value #INDEX_FILE} ({@code weight_map}: tensor → shard); F32, F16 or BF16 (F64 decodes too).
 */
public final class MmditCheckpoint {
    /** The weights of a diffusers model folder in one file. */
    public static final String SINGLE_FILE = "diffusion_pytorch_model.safetensors";
    /** The index of sharded weights: {"metadata": {...}, "weight_map": {tensor: shard file}}. */
    public static final String INDEX_FILE = "diffusion_pytorch_model.safetensors.index.json";
    /** The floating-point dtypes a weight may have. */
    private static final Set<String> FLOAT_DTYPES = Set.of("F32", "F16", "BF16", "F64");
    private static final ObjectMapper JSON = new ObjectMapper();

    private MmditCheckpoint() {}

    /** A tensor of a transformer folder: the file that holds it and its header entry there. */
    public record Located(Path file, Safetensors.Entry entry) {}

    /**
     * Every tensor of the checkpoint with its shape, D = hidden size (heads·head_dim), hd = head_dim, p = patch,
     * L = depth. Block L−1 is {@code context_pre_only}: its context stream has a D→2D AdaLayerNormContinuous, q/k/v
     * projections and no to_add_out or ff_context. Blocks listed in dual_attention_layers have a D→9D norm1 and an
     * image-only {@code attn2}; with rms qk-norm every attention has its RMSNorm weights (hd).
     */
    public static Map<String, long[]> expectedShapes(ModelSpec s) {
        ModelSpec.TextConditioning text = requireText(s);
        long d = s.hiddenSize();
        long p = s.patchSize();
        long max = text.posEmbedMaxSize();
        Map<String, long[]> m = new LinkedHashMap<>();
        m.put("pos_embed.proj.weight", new long[] {d, s.inChannels(), p, p});
        m.put("pos_embed.proj.bias", new long[] {d});
        m.put("pos_embed.pos_embed", new long[] {1, max * max, d});
        putLinear(m, "time_text_embed.timestep_embedder.linear_1", d, DitConstants.FREQ_DIM);
        putLinear(m, "time_text_embed.timestep_embedder.linear_2", d, d);
        putLinear(m, "time_text_embed.text_embedder.linear_1", d, text.pooledProjectionDim());
        putLinear(m, "time_text_embed.text_embedder.linear_2", d, d);
        putLinear(m, "context_embedder", d, text.jointAttentionDim());
        for (int i = 0; i < s.depth(); i++) {
            String b = "transformer_blocks." + i + ".";
            boolean last = i == s.depth() - 1;
            boolean dual = text.dualAttentionLayers().contains(i);
            putLinear(m, b + "norm1.linear", (dual ? 9 : 6) * d, d);
            putLinear(m, b + "norm1_context.linear", (last ? 2 : 6) * d, d);
            putAttention(m, b + "attn.", d, s.headDim(), text.rmsQkNorm(), last ? Streams.CONTEXT_PRE_ONLY
                    : Streams.JOINT);
            if (dual) {
                putAttention(m, b + "attn2.", d, s.headDim(), text.rmsQkNorm(), Streams.IMAGE);
            }
            putFeedForward(m, b + "ff.", d);
            if (!last) {
                putFeedForward(m, b + "ff_context.", d);
            }
        }
        putLinear(m, "norm_out.linear", 2 * d, d);
        putLinear(m, "proj_out", p * p * s.outChannels(), d);
        return m;
    }

    /** Which projections an attention has: image only (attn2), joint, or joint without the context output. */
    private enum Streams { IMAGE, JOINT, CONTEXT_PRE_ONLY }

    private static void putAttention(Map<String, long[]> m, String a, long d, long hd, boolean rms, Streams streams) {
        for (String proj : new String[] {"to_q", "to_k", "to_v", "to_out.0"}) {
            putLinear(m, a + proj, d, d);
        }
        if (rms) {
            m.put(a + "norm_q.weight", new long[] {hd});
            m.put(a + "norm_k.weight", new long[] {hd});
        }
        if (streams == Streams.IMAGE) {
            return;
        }
        for (String proj : new String[] {"add_q_proj", "add_k_proj", "add_v_proj"}) {
            putLinear(m, a + proj, d, d);
        }
        if (streams == Streams.JOINT) {
            putLinear(m, a + "to_add_out", d, d);
        }
        if (rms) {
            m.put(a + "norm_added_q.weight", new long[] {hd});
            m.put(a + "norm_added_k.weight", new long[] {hd});
        }
    }

    /** FeedForward: net.0.proj D→4D (GELU tanh), net.2 4D→D (net.1 is a parameterless dropout). */
    private static void putFeedForward(Map<String, long[]> m, String ff, long d) {
        putLinear(m, ff + "net.0.proj", 4 * d, d);
        putLinear(m, ff + "net.2", d, 4 * d);
    }

    private static void putLinear(Map<String, long[]> m, String prefix, long out, long in) {
        m.put(prefix + ".weight", new long[] {out, in});
        m.put(prefix + ".bias", new long[] {out});
    }

    /**
     * Where the window that {@link #centreCrop} takes starts, in rows and in columns of the max×max grid:
     * (max − g) // 2, as diffusers' {@code PatchEmbed.cropped_pos_embed} computes {@code top} and {@code left}.
     */
    public static int cropStart(int max, int g) {
        return (max - g) / 2;
    }

    /**
     * The g×g window at the centre of the stored position table {@code pos_embed.pos_embed} (1, max·max, D), the
     * position embedding of a g×g token grid, rows in raster order: rows and columns {@link #cropStart} .. + g − 1
     * of the max×max grid (diffusers' {@code PatchEmbed.cropped_pos_embed}).
     *
     * @param table the stored table's max·max·d values
     * @return the window's g·g·d values, [g·g, d]
     */
    public static float[] centreCrop(float[] table, int max, int g, int d) {
        int top = cropStart(max, g);
        int left = cropStart(max, g);
        float[] crop = new float[g * g * d];
        for (int i = 0; i < g; i++) {
            for (int j = 0; j < g; j++) {
                System.arraycopy(table, ((top + i) * max + left + j) * d, crop, (i * g + j) * d, d);
            }
        }
        return crop;
    }

    /** The folder's tensors ({@link #locate}), checked against the spec ({@link #validate}). */
    public static Map<String, Located> open(ModelSpec spec) throws BackendException {
        Map<String, Located> tensors = locate(spec.directory());
        validate(tensors, spec);
        return tensors;
    }

    /**
     * Every tensor of the transformer folder {@code dir} with the file that holds it: {@value #SINGLE_FILE} when
     * present (as diffusers and tools/sd3/layout.py read it), else the shards of {@value #INDEX_FILE}. Each file's
     * header is validated ({@link Safetensors#open}); a shard must be a plain file name in the folder; every tensor
     * of a shard must be mapped to that shard by the index and every indexed tensor must be in its shard.
     */
    public static Map<String, Located> locate(Path dir) throws BackendException {
        Path single = dir.resolve(SINGLE_FILE);
        Path index = dir.resolve(INDEX_FILE);
        Map<String, Located> out = new TreeMap<>();
        if (Files.isRegularFile(single)) {
            addFile(single, null, out);
            return Collections.unmodifiableMap(out);
        }
        if (!Files.isRegularFile(index)) {
            throw new BackendException(dir + ": no transformer weights: neither " + SINGLE_FILE + " nor " + INDEX_FILE);
        }
        Map<String, String> weightMap = weightMap(index);
        for (String shard : new java.util.TreeSet<>(weightMap.values())) {
            addFile(dir.resolve(shard), new ShardCheck(index, shard, weightMap), out);
        }
        for (Map.Entry<String, String> e : weightMap.entrySet()) {
            if (!out.containsKey(e.getKey())) {
                throw new BackendException(index + ": tensor '" + e.getKey() + "' is mapped to " + e.getValue()
                        + ", which does not hold it");
            }
        }
        return Collections.unmodifiableMap(out);
    }

    /** What a shard's tensors are checked against: the index and the shard's name in it. */
    private record ShardCheck(Path index, String shard, Map<String, String> weightMap) {}

    private static void addFile(Path file, ShardCheck check, Map<String, Located> out) throws BackendException {
        try (Safetensors st = Safetensors.open(file)) {
            for (Safetensors.Entry e : st.entries().values()) {
                if (check != null && !check.shard().equals(check.weightMap().get(e.name()))) {
                    String mapped = check.weightMap().get(e.name());
                    throw new BackendException(file + ": tensor '" + e.name() + "' is "
                            + (mapped == null ? "not in " + check.index() : "mapped to " + mapped + " by "
                            + check.index()));
                }
                out.put(e.name(), new Located(file, e));
            }
        }
    }

    /** The index's weight_map, each shard a plain file name (no folder, no "..") ending in .safetensors. */
    private static Map<String, String> weightMap(Path index) throws BackendException {
        JsonNode root;
        try {
            root = JSON.readTree(Files.readString(index));
        } catch (NoSuchFileException e) {
            throw new BackendException(index + ": missing");
        } catch (IOException e) {
            throw new BackendException(index + ": not valid JSON: " + e.getMessage(), e);
        }
        JsonNode wm = root == null ? null : root.get("weight_map");
        if (wm == null || !wm.isObject() || wm.isEmpty()) {
            throw new BackendException(index + ": needs a non-empty object 'weight_map' (tensor name → shard file)");
        }
        Map<String, String> map = new TreeMap<>();
        for (Map.Entry<String, JsonNode> e : wm.properties()) {
            String shard = e.getValue().asText("");
            if (!e.getValue().isTextual() || !shard.endsWith(".safetensors") || shard.contains("/")
                    || shard.contains("\\") || shard.startsWith(".")) {
                throw new BackendException(index + ": tensor '" + e.getKey() + "' maps to " + e.getValue()
                        + ", not a .safetensors file name in the folder");
            }
            map.put(e.getKey(), shard);
        }
        return map;
    }

    /**
     * Every tensor the spec implies, with its shape and a floating-point dtype, and no other; the first difference
     * fails naming the tensor (and its file, where it has one).
     */
    public static void validate(Map<String, Located> tensors, ModelSpec spec) throws BackendException {
        Map<String, long[]> expected = expectedShapes(spec);
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            Located t = tensors.get(e.getKey());
            if (t == null) {
                throw new BackendException(spec.directory() + ": tensor '" + e.getKey() + "' is missing (expected "
                        + Arrays.toString(e.getValue()) + " for " + describe(spec) + ")");
            }
            if (!Arrays.equals(t.entry().shape(), e.getValue())) {
                throw new BackendException(t.file() + ": tensor '" + e.getKey() + "' has shape "
                        + Arrays.toString(t.entry().shape()) + ", expected " + Arrays.toString(e.getValue()));
            }
            if (!FLOAT_DTYPES.contains(t.entry().dtype())) {
                throw new BackendException(t.file() + ": tensor '" + e.getKey() + "' is " + t.entry().dtype()
                        + "; weights must be F32, F16 or BF16");
            }
        }
        for (Map.Entry<String, Located> e : tensors.entrySet()) {
            if (!expected.containsKey(e.getKey())) {
                throw new BackendException(e.getValue().file() + ": unexpected tensor '" + e.getKey() + "' for "
                        + describe(spec) + " (config.json and the weights do not match)");
            }
        }
    }

    private static String describe(ModelSpec s) {
        ModelSpec.TextConditioning t = s.text();
        return "an MMDiT with " + s.depth() + " layers, hidden size " + s.hiddenSize() + ", qk_norm "
                + (t.rmsQkNorm() ? "rms_norm" : "none") + ", dual_attention_layers " + t.dualAttentionLayers();
    }

    private static ModelSpec.TextConditioning requireText(ModelSpec s) {
        if (s.text() == null) {
            throw new IllegalArgumentException("model " + s.name() + " is not an MMDiT (no text conditioning)");
        }
        return s.text();
    }
}
