package io.ditserve.backend.cuda;

import java.util.ArrayList;
import java.util.List;

/**
 * The kernels of {@code dit_kernels.cu}, each with its CUDA parameter list copied verbatim, so that the host code
 * can check every launch's arguments (count and kind) before it reaches the driver, and a unit test can check this
 * copy against the source file.
 */
enum Kernel {
    PATCHIFY("patchify", "const float* x, float* patches, int total, int c, int size, int p"),
    ADD_BIAS_POS("add_bias_pos", "float* x, const float* bias, const float* pos, int total, int d, int tokens"),
    TIMESTEP_EMBEDDING("timestep_embedding", "const float* t, const float* freqs, float* out, int total"),
    BIAS_SILU("bias_silu", "float* v, const float* bias, int total, int cols"),
    BIAS_GELU("bias_gelu", "float* v, const float* bias, int total, int cols"),
    ADD_BIAS("add_bias", "float* v, const float* bias, int total, int cols"),
    CONDITION("condition",
            "const float* temb, const float* bias, const float* table, const int* y, float* silu_c, int total, int d"),
    LN_MODULATE("ln_modulate", "const float* x, float* h, const float* mod, int d, int tokens, int mod_stride,"
            + " int shift_off, int scale_off"),
    QKV_SPLIT("qkv_split",
            "const float* qkv, const float* bias, float* heads_out, int total, int tokens, int heads, int head_dim"),
    SOFTMAX_ROWS("softmax_rows", "float* s, int len, float scale"),
    HEAD_NORM("head_norm", "float* v, const float* weight, const float* bias, int cols"),
    HEAD_MERGE("head_merge", "const float* o, float* att, int total, int tokens, int heads, int head_dim"),
    GATED_RESIDUAL("gated_residual", "float* x, const float* v, const float* bias, const float* mod, int total,"
            + " int d, int tokens, int mod_stride, int gate_off"),
    UNPATCHIFY("unpatchify",
            "const float* tok, const float* bias, float* out, int total, int c_out, int size, int p"),
    // step caching (DitForward)
    COPY_VALUES("copy_values", "const float* src, float* dst, int total"),
    SPAN_RESIDUAL("span_residual", "const float* x, float* r, int total"),

    // the latent decoders (DecoderProgram)
    LATENT_SCALE("latent_scale", "const float* in, float* out, int total, float divisor, float shift"),
    TANH_CLAMP("tanh_clamp", "const float* in, float* out, int total, float magnitude"),
    SCALE_SHIFT("scale_shift", "float* v, int total, float scale, float shift"),
    CHANNEL_BIAS("channel_bias", "float* y, const float* bias, int total, int hw, int c, int relu"),
    CHANNEL_BIAS_RESIDUAL("channel_bias_residual",
            "float* y, const float* bias, const float* res, int total, int hw, int c, int relu"),
    GROUP_NORM("group_norm", "const float* x, float* y, const float* gamma, const float* beta, int c, int hw,"
            + " int groups, float eps, int silu_after"),
    IM2COL_3X3("im2col_3x3",
            "const float* x, float* col, int total, int c, int h, int w, int up, int first_pixel, int tile"),

    // SD3's MMDiT (CudaMmditForward)
    TEMB_SILU("temb_silu", "const float* temb, const float* temb_bias, const float* pooled,"
            + " const float* pooled_bias, float* silu_c, int total, int d"),
    QKV_SPLIT_SEQ("qkv_split_seq", "const float* qkv, const float* bias, float* heads_out, int total, int tokens,"
            + " int heads, int head_dim, int seq, int seq_off, int part_len"),
    HEAD_RMS_NORM("head_rms_norm",
            "float* v, const float* weight_a, const float* weight_b, int cols, int seq, int split, float eps"),
    HEAD_MERGE_SEQ("head_merge_seq",
            "const float* o, float* att, int total, int tokens, int heads, int head_dim, int seq, int seq_off"),
    // the text encoders (TextEncoderForward)
    EMBED_TOKENS("embed_tokens", "const int* ids, const float* table, const float* pos, float* x, int total,"
            + " int d, int tokens, int use_pos"),
    LAYER_NORM("layer_norm", "const float* x, float* y, const float* weight, const float* bias, int d, float eps"),
    RMS_NORM("rms_norm", "const float* x, float* y, const float* weight, int d, float eps"),
    BIAS_QUICK_GELU("bias_quick_gelu", "float* v, const float* bias, int total, int cols"),
    BIAS_GELU_ERF("bias_gelu_erf", "float* v, const float* bias, int total, int cols"),
    SOFTMAX_CAUSAL("softmax_causal", "float* s, int len, float scale"),
    SOFTMAX_BIAS("softmax_bias", "float* s, const float* bias, int len, int heads"),
    ADD_RESIDUAL("add_residual", "float* x, const float* v, const float* bias, int total, int cols"),
    GATED_GELU("gated_gelu", "const float* gates, float* out, int total, int ff"),
    GATHER_ROWS("gather_rows", "const float* x, const int* rows, float* out, int total, int d");

    /** How a parameter is passed: a device pointer (8 bytes), an int or a float (4 bytes each). */
    enum ArgKind {
        POINTER,
        INT,
        FLOAT
    }

    /** The symbol in the module ({@code extern "C"}, so unmangled). */
    final String symbol;
    /** The parameter list as written in the .cu file. */
    final String parameters;
    private final ArgKind[] kinds;

    Kernel(String symbol, String parameters) {
        this.symbol = symbol;
        this.parameters = parameters;
        this.kinds = parseKinds(parameters);
    }

    int arity() {
        return kinds.length;
    }

    ArgKind kind(int i) {
        return kinds[i];
    }

    private static ArgKind[] parseKinds(String parameters) {
        List<ArgKind> out = new ArrayList<>();
        for (String p : parameters.split(",")) {
            String decl = p.trim();
            if (decl.contains("*")) {
                out.add(ArgKind.POINTER);
            } else if (decl.startsWith("int ")) {
                out.add(ArgKind.INT);
            } else if (decl.startsWith("float ")) {
                out.add(ArgKind.FLOAT);
            } else {
                throw new IllegalArgumentException("unsupported kernel parameter '" + decl + "'");
            }
        }
        return out.toArray(ArgKind[]::new);
    }
}
