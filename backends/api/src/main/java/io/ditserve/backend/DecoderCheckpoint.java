package io.ditserve.backend;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * The decoder checkpoint layouts (docs/DECODERS.md) under diffusers' key names, each tensor with its shape, written
 * once so that every backend validates a weights file the same way and fails at load naming the file and the key.
 *
 * <p>Older diffusers files name the mid-block attention {@code query}, {@code key}, {@code value},
 * {@code proj_attn}; {@link #resolve} accepts them as aliases of {@code to_q}, {@code to_k}, {@code to_v},
 * {@code to_out.0}. Encoder tensors ({@code encoder.*}, {@code quant_conv.*}) are ignored: a full autoencoder file
 * carries them and a decoder does not need them.
 */
public final class DecoderCheckpoint {
    private static final Map<String, String> LEGACY_ATTENTION = Map.of(
            "to_q", "query", "to_k", "key", "to_v", "value", "to_out.0", "proj_attn");

    private DecoderCheckpoint() {}

    /** Every tensor of the decoder with its shape, in network order. */
    public static Map<String, long[]> expectedShapes(DecoderSpec s) {
        Map<String, long[]> m = new LinkedHashMap<>();
        if (s.kind() == DecoderSpec.Kind.FULL) {
            full(s, m);
        } else {
            tiny(s, m);
        }
        return m;
    }

    private static void full(DecoderSpec s, Map<String, long[]> m) {
        int lat = s.latentChannels();
        int top = s.upBlockChannels(0);
        if (s.postQuantConv()) {
            conv(m, "post_quant_conv", lat, lat, 1, true);
        }
        conv(m, "decoder.conv_in", top, lat, 3, true);
        resnet(m, "decoder.mid_block.resnets.0", top, top);
        if (s.midBlockAttention()) {
            String a = "decoder.mid_block.attentions.0.";
            norm(m, a + "group_norm", top);
            for (String p : new String[] {"to_q", "to_k", "to_v", "to_out.0"}) {
                m.put(a + p + ".weight", new long[] {top, top});
                m.put(a + p + ".bias", new long[] {top});
            }
        }
        resnet(m, "decoder.mid_block.resnets.1", top, top);
        int stages = s.blockOutChannels().size();
        int prev = top;
        for (int i = 0; i < stages; i++) {
            int out = s.upBlockChannels(i);
            for (int j = 0; j <= s.layersPerBlock(); j++) {
                resnet(m, "decoder.up_blocks." + i + ".resnets." + j, j == 0 ? prev : out, out);
            }
            if (i < stages - 1) {
                conv(m, "decoder.up_blocks." + i + ".upsamplers.0.conv", out, out, 3, true);
            }
            prev = out;
        }
        norm(m, "decoder.conv_norm_out", prev);
        conv(m, "decoder.conv_out", s.outChannels(), prev, 3, true);
    }

    private static void tiny(DecoderSpec s, Map<String, long[]> m) {
        int c = s.blockOutChannels().get(0);
        int k = 0;
        conv(m, "decoder.layers." + k, c, s.latentChannels(), 3, true);
        k += 2; // the conv and its ReLU
        int stages = s.numBlocks().size();
        for (int i = 0; i < stages; i++) {
            for (int b = 0; b < s.numBlocks().get(i); b++) {
                for (int j : new int[] {0, 2, 4}) {
                    conv(m, "decoder.layers." + k + ".conv." + j, c, c, 3, true);
                }
                k++;
            }
            boolean last = i == stages - 1;
            if (!last) {
                k++; // the nearest-neighbour upsampling has no parameters
            }
            conv(m, "decoder.layers." + k, last ? s.outChannels() : c, c, 3, last);
            k++;
        }
    }

    private static void resnet(Map<String, long[]> m, String p, int in, int out) {
        norm(m, p + ".norm1", in);
        conv(m, p + ".conv1", out, in, 3, true);
        norm(m, p + ".norm2", out);
        conv(m, p + ".conv2", out, out, 3, true);
        if (in != out) {
            conv(m, p + ".conv_shortcut", out, in, 1, true);
        }
    }

    private static void norm(Map<String, long[]> m, String p, int c) {
        m.put(p + ".weight", new long[] {c});
        m.put(p + ".bias", new long[] {c});
    }

    private static void conv(Map<String, long[]> m, String p, int out, int in, int k, boolean bias) {
        m.put(p + ".weight", new long[] {out, in, k, k});
        if (bias) {
            m.put(p + ".bias", new long[] {out});
        }
    }

    /** Whether a key belongs to the encoder half of an autoencoder file (ignored by decoders). */
    static boolean isEncoderKey(String key) {
        return key.startsWith("encoder.") || key.startsWith("quant_conv.");
    }

    /**
     * Checks that the file holds every tensor the spec implies with exactly its shape, and no other decoder tensor.
     *
     * @return canonical (diffusers) name → the name in the file (differs for the legacy attention names)
     */
    public static Map<String, String> resolve(Safetensors st, DecoderSpec spec) throws BackendException {
        Map<String, long[]> expected = expectedShapes(spec);
        Map<String, String> names = new LinkedHashMap<>();
        for (Map.Entry<String, long[]> e : expected.entrySet()) {
            String actual = fileName(st, e.getKey());
            Safetensors.Entry entry = st.entry(actual);
            if (!Arrays.equals(entry.shape(), e.getValue())) {
                throw new BackendException(st.file() + ": tensor '" + actual + "' has shape "
                        + Arrays.toString(entry.shape()) + ", expected " + Arrays.toString(e.getValue())
                        + " for " + spec.summary() + " (config.json and the weights do not match)");
            }
            names.put(e.getKey(), actual);
        }
        java.util.Set<String> used = new java.util.HashSet<>(names.values());
        for (String key : st.entries().keySet()) {
            if (!used.contains(key) && !isEncoderKey(key)) {
                throw new BackendException(st.file() + ": unexpected tensor '" + key + "' for " + spec.summary()
                        + " (config.json and the weights do not match)");
            }
        }
        return names;
    }

    private static String fileName(Safetensors st, String canonical) {
        if (st.entries().containsKey(canonical)) {
            return canonical;
        }
        for (Map.Entry<String, String> alias : LEGACY_ATTENTION.entrySet()) {
            String marker = ".attentions.0." + alias.getKey() + ".";
            int at = canonical.indexOf(marker);
            if (at >= 0) {
                String legacy = canonical.substring(0, at) + ".attentions.0." + alias.getValue() + "."
                        + canonical.substring(at + marker.length());
                if (st.entries().containsKey(legacy)) {
                    return legacy;
                }
            }
        }
        return canonical; // missing: Safetensors.entry names it
    }

    /** Learned parameters of the decoder (what {@link #expectedShapes} lists). */
    public static long parameterCount(DecoderSpec spec) {
        long n = 0;
        for (long[] shape : expectedShapes(spec).values()) {
            long k = 1;
            for (long d : shape) {
                k *= d;
            }
            n += k;
        }
        return n;
    }

    /** Multiply-accumulates of decoding one h × w latent. */
    static long macs(DecoderSpec s, int h, int w) {
        long hw = (long) h * w;
        long total = 0;
        if (s.kind() == DecoderSpec.Kind.FULL) {
            long lat = s.latentChannels();
            long top = s.upBlockChannels(0);
            if (s.postQuantConv()) {
                total += hw * lat * lat;
            }
            total += hw * top * lat * 9;
            total += 2 * resnetMacs(hw, top, top);
            if (s.midBlockAttention()) {
                total += hw * 4 * top * top + 2 * hw * hw * top;
            }
            long prev = top;
            int stages = s.blockOutChannels().size();
            for (int i = 0; i < stages; i++) {
                long out = s.upBlockChannels(i);
                for (int j = 0; j <= s.layersPerBlock(); j++) {
                    total += resnetMacs(hw, j == 0 ? prev : out, out);
                }
                if (i < stages - 1) {
                    hw *= 4;
                    total += hw * out * out * 9;
                }
                prev = out;
            }
            total += hw * s.outChannels() * prev * 9;
        } else {
            long c = s.blockOutChannels().get(0);
            total += hw * c * s.latentChannels() * 9;
            int stages = s.numBlocks().size();
            for (int i = 0; i < stages; i++) {
                total += s.numBlocks().get(i) * 3 * hw * c * c * 9;
                if (i < stages - 1) {
                    hw *= (long) s.upsampling() * s.upsampling();
                    total += hw * c * c * 9;
                }
            }
            total += hw * s.outChannels() * c * 9;
        }
        return total;
    }

    private static long resnetMacs(long hw, long in, long out) {
        return hw * 9 * (out * in + out * out) + (in != out ? hw * in * out : 0);
    }
}
