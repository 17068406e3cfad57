// The element-wise and row kernels of the DiT forward pass (docs/DIT_MODEL.md, "Forward pass") and of the latent
// decoders (docs/DECODERS.md; see the second half of this file); the matrix products run on cuBLAS. Everything is
// float32.
//
// Compiled at run time by NVRTC (see Nvrtc.java) and, in the test suite, by `nvcc -ptx`: the file includes no
// header, because NVRTC provides the device math functions (expf, tanhf, sqrtf, cosf, sinf) built in.
//
// Conventions, shared with the host code (DitForward.java, ActivationLayout.java, DecoderProgram.java):
//   - matrices are row-major; a "row" is one token, rows numbered sample by sample (row = sample·T + token);
//   - element-wise kernels take `total`, the number of elements they write, and walk them with a grid-stride loop;
//     the host keeps every buffer below 2^30 elements, so int indices cannot overflow;
//   - row kernels run one block per row (blockIdx.x = row) with blockDim.x a multiple of 32, at most 1024;
//   - per-sample modulation rows come from one matrix `mod` [N, mod_stride]: the adaLN outputs of every block and
//     of the final layer side by side; a kernel reads its chunk at a column offset (shift_off, scale_off, gate_off).
// Every parameter list here is mirrored, name for name, by io.ditserve.backend.cuda.Kernel (a unit test checks).

#define FREQ_HALF 128  // the timestep embedding has FREQ_HALF cosines then FREQ_HALF sines
#define LN_EPS 1e-6f
#define QK_NORM_EPS 1e-5f  // qk-norm: torch's default LayerNorm eps, as timm's Attention builds it (tools/dit/model.py)

#define GRID_STRIDE_LOOP(i, total) \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (total); i += gridDim.x * blockDim.x)

__device__ inline float silu(float v) {
    return v / (1.0f + expf(-v));
}

// GELU, tanh approximation: 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³))), √(2/π) rounded to float.
__device__ inline float gelu_tanh(float u) {
    return 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
}

// The sum of v over the block, returned to every thread. scratch: 32 floats of shared memory.
__device__ float block_sum(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();  // a previous reduction's readers are done with scratch
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? scratch[lane] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The maximum of v over the block, returned to every thread. scratch: 32 floats of shared memory.
__device__ float block_max(float v, float* scratch) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x >> 5) ? scratch[lane] : __int_as_float(0xff800000);  // -inf
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// The layer and group norms' statistics of xr[0 .. len) over the block: *mean, and the returned 1/√(var + eps) with
// var the biased variance of the centred values. scratch: 32 floats of shared memory.
__device__ inline float centred_inv_std(const float* xr, int len, float eps, float* mean, float* scratch) {
    float s = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) s += xr[k];
    const float m = block_sum(s, scratch) / len;
    float q = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        const float c = xr[k] - m;
        q += c * c;
    }
    *mean = m;
    return 1.0f / sqrtf(block_sum(q, scratch) / len + eps);
}

// The RMS norms' factor of xr[0 .. len) over the block: 1/√(mean(x²) + eps). scratch: 32 floats of shared memory.
__device__ inline float rms_inv(const float* xr, int len, float eps, float* scratch) {
    float q = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) q += xr[k] * xr[k];
    return 1.0f / sqrtf(block_sum(q, scratch) / len + eps);
}

// r[0 .. keep) = softmax of the logits, in place, and r[keep .. len) = 0 (keep = len: the whole row). The logits are
// the rounded products r[k]·scale, or r[k] + bias[k] where bias is not null. scratch: 32 floats of shared memory.
__device__ inline void softmax_row(float* r, int len, int keep, float scale, const float* bias, float* scratch) {
    float mx = __int_as_float(0xff800000);  // -inf
    for (int k = threadIdx.x; k < keep; k += blockDim.x) mx = fmaxf(mx, bias ? r[k] + bias[k] : __fmul_rn(r[k], scale));
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int k = threadIdx.x; k < keep; k += blockDim.x) {
        const float e = expf((bias ? r[k] + bias[k] : __fmul_rn(r[k], scale)) - mx);  // the logit of the max again
        r[k] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);
    for (int k = threadIdx.x; k < len; k += blockDim.x) r[k] = k < keep ? r[k] / sum : 0.0f;
}

// Element i of qkv [N·tokens, 3d] (+ bias) to heads_out = q | k | v, each part_len floats laid out
// [N, heads, seq, head_dim]: token t goes to sequence row seq_off + t.
__device__ inline void split_qkv_element(const float* qkv, const float* bias, float* heads_out, int i, int tokens,
                                         int heads, int head_dim, int seq, int seq_off, int part_len) {
    const int d = heads * head_dim;
    const int row = i / (3 * d), col = i % (3 * d);
    const int part = col / d, within = col % d;
    const int head = within / head_dim, e = within % head_dim;
    const int sample = row / tokens, token = row % tokens;
    heads_out[part * part_len + ((sample * heads + head) * seq + seq_off + token) * head_dim + e] = qkv[i] + bias[col];
}

// Element i of att [N·tokens, d] from o [N, heads, seq, head_dim], sequence rows seq_off .. seq_off + tokens − 1.
__device__ inline float merged_head_element(const float* o, int i, int tokens, int heads, int head_dim, int seq,
                                            int seq_off) {
    const int d = heads * head_dim;
    const int row = i / d, within = i % d;
    const int head = within / head_dim, e = within % head_dim;
    const int sample = row / tokens, token = row % tokens;
    return o[((sample * heads + head) * seq + seq_off + token) * head_dim + e];
}

// x [N, c, size, size] → patches [N·T, c·p·p]: tokens row by row over the (size/p)² grid, each patch flattened
// channel-major (channel, row in patch, column in patch) like the conv weight [D, c, p, p]. total = N·T·c·p·p.
extern "C" __global__ void patchify(const float* x, float* patches, int total, int c, int size, int p) {
    const int g = size / p, tokens = g * g, patch_len = c * p * p;
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / patch_len, col = i % patch_len;
        const int sample = row / tokens, token = row % tokens;
        const int gi = token / g, gj = token % g;
        const int ch = col / (p * p), a = (col / p) % p, b = col % p;
        patches[i] = x[((sample * c + ch) * size + gi * p + a) * size + gj * p + b];
    }
}

// x [N·T, d] = (x + conv bias) + pos_embed[token]: finishes the patch embedding. total = N·T·d.
extern "C" __global__ void add_bias_pos(float* x, const float* bias, const float* pos, int total, int d,
                                        int tokens) {
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / d, k = i % d;
        x[i] = (x[i] + bias[k]) + pos[(row % tokens) * d + k];
    }
}

// out [N, 2·FREQ_HALF] = cos(t·freqs[k]) for k < FREQ_HALF, then sin(t·freqs[k]); freqs is computed on the host
// exactly as the reference rounds it. total = N·FREQ_HALF.
extern "C" __global__ void timestep_embedding(const float* t, const float* freqs, float* out, int total) {
    GRID_STRIDE_LOOP(i, total) {
        const int sample = i / FREQ_HALF, k = i % FREQ_HALF;
        const float arg = t[sample] * freqs[k];  // t: the float network time (an integer timestep is exact)
        out[sample * 2 * FREQ_HALF + k] = cosf(arg);
        out[sample * 2 * FREQ_HALF + FREQ_HALF + k] = sinf(arg);
    }
}

// v [rows, cols] = SiLU(v + bias). total = rows·cols.
extern "C" __global__ void bias_silu(float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        v[i] = silu(v[i] + bias[i % cols]);
    }
}

// v [rows, cols] = GELU_tanh(v + bias). total = rows·cols.
extern "C" __global__ void bias_gelu(float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        v[i] = gelu_tanh(v[i] + bias[i % cols]);
    }
}

// v [rows, cols] += bias. total = rows·cols.
extern "C" __global__ void add_bias(float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        v[i] = v[i] + bias[i % cols];
    }
}

// silu_c [N, d] = SiLU(c) with c = (temb + bias) + table[y]: the conditioning, timestep embedding (before its last
// bias) plus label embedding; every adaLN reads only SiLU(c). total = N·d.
extern "C" __global__ void condition(const float* temb, const float* bias, const float* table, const int* y,
                                     float* silu_c, int total, int d) {
    GRID_STRIDE_LOOP(i, total) {
        const int sample = i / d, k = i % d;
        const float c = (temb[i] + bias[k]) + table[y[sample] * d + k];
        silu_c[i] = silu(c);
    }
}

// h [N·T, d] = LN(x)·(1 + scale) + shift, LN without affine parameters (eps 1e-6, biased variance of the centred
// values); shift and scale are the row's sample's chunks of mod. One block per row.
extern "C" __global__ void ln_modulate(const float* x, float* h, const float* mod, int d, int tokens,
                                       int mod_stride, int shift_off, int scale_off) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * d;
    float* hr = h + row * d;
    const float* m = mod + (row / tokens) * mod_stride;
    float mean;
    const float inv_std = centred_inv_std(xr, d, LN_EPS, &mean, scratch);
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        hr[k] = (xr[k] - mean) * inv_std * (1.0f + m[scale_off + k]) + m[shift_off + k];
    }
}

// qk-norm (REPA with --qk-norm): v [rows, cols] normalised in place per row, (v − mean)/√(var + 1e-5)·weight + bias,
// the LayerNorm of one head (cols = head_dim) of q or k as split by qkv_split. One block per row.
extern "C" __global__ void head_norm(float* v, const float* weight, const float* bias, int cols) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    float* vr = v + row * cols;
    float mean;
    const float inv_std = centred_inv_std(vr, cols, QK_NORM_EPS, &mean, scratch);
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        vr[k] = (vr[k] - mean) * inv_std * weight[k] + bias[k];
    }
}

// qkv [N·T, 3d] (+ bias) → heads_out = q | k | v, each [N, heads, T, head_dim] and total/3 elements long; the
// 3d outputs of a row are q | k | v, each split into heads of head_dim columns. total = N·T·3d.
extern "C" __global__ void qkv_split(const float* qkv, const float* bias, float* heads_out, int total, int tokens,
                                     int heads, int head_dim) {
    GRID_STRIDE_LOOP(i, total) {
        split_qkv_element(qkv, bias, heads_out, i, tokens, heads, head_dim, tokens, 0, total / 3);
    }
}

// Each row of s [rows, len] becomes softmax(scale·row), in place. One block per row.
extern "C" __global__ void softmax_rows(float* s, int len, float scale) {
    __shared__ float scratch[32];
    softmax_row(s + (long long)blockIdx.x * len, len, len, scale, nullptr, scratch);
}

// o [N, heads, T, head_dim] → att [N·T, d]: the heads of a token side by side again. total = N·T·d.
extern "C" __global__ void head_merge(const float* o, float* att, int total, int tokens, int heads, int head_dim) {
    GRID_STRIDE_LOOP(i, total) {
        att[i] = merged_head_element(o, i, tokens, heads, head_dim, tokens, 0);
    }
}

// x [N·T, d] += gate · (v + bias), gate = the row's sample's chunk of mod at gate_off. total = N·T·d.
extern "C" __global__ void gated_residual(float* x, const float* v, const float* bias, const float* mod, int total,
                                          int d, int tokens, int mod_stride, int gate_off) {
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / d, k = i % d;
        x[i] = x[i] + mod[(row / tokens) * mod_stride + gate_off + k] * (v[i] + bias[k]);
    }
}

// tok [N·T, p·p·c_out] (+ bias) → out [N, c_out, size, size]: token (gi, gj), element (a·p + b)·c_out + ch goes
// to out[ch, gi·p + a, gj·p + b]. One thread per output element; total = N·c_out·size·size.
extern "C" __global__ void unpatchify(const float* tok, const float* bias, float* out, int total, int c_out, int size,
                                      int p) {
    const int g = size / p, row_len = p * p * c_out;
    GRID_STRIDE_LOOP(i, total) {
        const int xx = i % size, yy = (i / size) % size;
        const int ch = (i / (size * size)) % c_out, sample = i / (size * size * c_out);
        const int gi = yy / p, a = yy % p, gj = xx / p, b = xx % p;
        const int col = (a * p + b) * c_out + ch;
        out[i] = tok[(sample * g * g + gi * g + gj) * row_len + col] + bias[col];
    }
}

// Step caching (docs/STEP_CACHE.md): before the cached span, r = x (copy_values) for the samples that store their
// residual; after it, r = x − r (span_residual), the span's residual. A sample that skips the span gets
// x = x + r from add_bias with cols = total. total = samples·T·d.
extern "C" __global__ void copy_values(const float* src, float* dst, int total) {
    GRID_STRIDE_LOOP(i, total) {
        dst[i] = src[i];
    }
}

extern "C" __global__ void span_residual(const float* x, float* r, int total) {
    GRID_STRIDE_LOOP(i, total) {
        r[i] = x[i] - r[i];
    }
}

// ---- latent decoders (docs/DECODERS.md) -------------------------------------------------------------------------
// Activations are NCHW: [N, c, H, W] row-major, so one channel of one sample is a contiguous plane of hw = H·W
// values. A convolution is a matrix product per sample, Y[c_out, hw] = W[c_out, c_in·k·k] · cols[c_in·k·k, hw],
// with the columns built by im2col_3x3 (3×3) or the input itself (1×1); the bias and what follows the convolution
// (activation, residual) are added by channel_bias / channel_bias_residual.

// out = in / divisor + shift: the full decoder's latent scaling (scaling_factor, shift_factor). total = N·c·h·w.
extern "C" __global__ void latent_scale(const float* in, float* out, int total, float divisor, float shift) {
    GRID_STRIDE_LOOP(i, total) {
        out[i] = in[i] / divisor + shift;
    }
}

// out = tanh(in / magnitude) · magnitude: the tiny decoder's soft clamp of the latent. total = N·c·h·w.
extern "C" __global__ void tanh_clamp(const float* in, float* out, int total, float magnitude) {
    GRID_STRIDE_LOOP(i, total) {
        out[i] = tanhf(in[i] / magnitude) * magnitude;
    }
}

// v = v · scale + shift (the tiny decoder's output, mapped from [0, 1] to [-1, 1]). total = elements of v.
extern "C" __global__ void scale_shift(float* v, int total, float scale, float shift) {
    GRID_STRIDE_LOOP(i, total) {
        v[i] = v[i] * scale + shift;
    }
}

// y [N, c, hw] = act(y + bias[channel]), act = ReLU when relu != 0, else none. total = N·c·hw.
extern "C" __global__ void channel_bias(float* y, const float* bias, int total, int hw, int c, int relu) {
    GRID_STRIDE_LOOP(i, total) {
        const float v = y[i] + bias[(i / hw) % c];
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// y [N, c, hw] = act((y + bias[channel]) + res): a convolution's bias, then a residual connection. total = N·c·hw.
extern "C" __global__ void channel_bias_residual(float* y, const float* bias, const float* res, int total, int hw,
                                                 int c, int relu) {
    GRID_STRIDE_LOOP(i, total) {
        const float v = (y[i] + bias[(i / hw) % c]) + res[i];
        y[i] = relu ? fmaxf(v, 0.0f) : v;
    }
}

// y [N, c, hw] = GroupNorm(x)·gamma + beta (biased variance of the centred values, eps), then SiLU when silu != 0.
// One block per (sample, group): the group's c/groups channel planes are contiguous, c/groups·hw values at
// blockIdx.x·(c/groups)·hw.
extern "C" __global__ void group_norm(const float* x, float* y, const float* gamma, const float* beta, int c, int hw,
                                      int groups, float eps, int silu_after) {
    __shared__ float scratch[32];
    const int per_group = c / groups, len = per_group * hw;
    const long long base = (long long)blockIdx.x * len;
    const int first_channel = (blockIdx.x % groups) * per_group;
    const float* xg = x + base;
    float* yg = y + base;
    float mean;
    const float inv_std = centred_inv_std(xg, len, eps, &mean, scratch);
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        const int ch = first_channel + k / hw;
        const float v = (xg[k] - mean) * inv_std * gamma[ch] + beta[ch];
        yg[k] = silu_after ? silu(v) : v;
    }
}

// The columns of a 3×3 convolution (stride 1, zero padding 1) over x [samples, c, h, w] upsampled by `up`
// (nearest neighbour: output pixel (oy, ox) of the upsampled image reads x at (oy / up, ox / up); up = 1: none).
// The upsampled image has H·W = h·up·w·up pixels; the columns cover the `tile` pixels first_pixel ..
// first_pixel + tile - 1 of each sample (pixels numbered row by row): col [samples, c·9, tile], row
// ch·9 + ky·3 + kx like the weight [c_out, c, 3, 3]. total = samples·c·9·tile; the host passes first_pixel = 0 and
// tile = H·W when samples > 1.
extern "C" __global__ void im2col_3x3(const float* x, float* col, int total, int c, int h, int w, int up,
                                      int first_pixel, int tile) {
    const int H = h * up, W = w * up, rows = c * 9;
    GRID_STRIDE_LOOP(i, total) {
        const int j = i % tile, r = (i / tile) % rows, s = i / (tile * rows);
        const int p = first_pixel + j, oy = p / W, ox = p % W;
        const int ch = r / 9, ky = (r % 9) / 3, kx = r % 3;
        const int iy = oy + ky - 1, ix = ox + kx - 1;
        col[i] = (iy >= 0 && iy < H && ix >= 0 && ix < W)
                ? x[((s * c + ch) * h + iy / up) * w + ix / up]
                : 0.0f;
    }
}

// ---- text to image: SD3's MMDiT and its text encoders (docs/TEXT_MODELS.md) -------------------------------------
// Host code: CudaMmditForward.java (the MMDiT), TextEncoderForward.java (CLIP, T5). The MMDiT reuses the DiT's
// kernels where their arithmetic is the same (patchify, timestep_embedding, bias_silu, add_bias, ln_modulate,
// softmax_rows, gated_residual, bias_gelu, unpatchify); what differs is its joint attention, whose keys are the
// image tokens followed by the context tokens: each stream's q, k, v are scattered into one sequence of
// seq = T + C rows per (sample, head) at row offset seq_off (qkv_split_seq), and the output rows gathered back
// per stream (head_merge_seq).

// silu_c [N, d] = SiLU((temb + temb_bias) + (pooled + pooled_bias)): MMDiT's conditioning, the timestep embedding
// plus the pooled text embedding, each its last Linear's output before the bias. total = N·d.
extern "C" __global__ void temb_silu(const float* temb, const float* temb_bias, const float* pooled,
                                     const float* pooled_bias, float* silu_c, int total, int d) {
    GRID_STRIDE_LOOP(i, total) {
        const int k = i % d;
        silu_c[i] = silu((temb[i] + temb_bias[k]) + (pooled[i] + pooled_bias[k]));
    }
}

// qkv [N·tokens, 3d] (+ bias) of one stream → heads_out = q | k | v, each part_len floats laid out
// [N, heads, seq, head_dim]: token t of the stream goes to sequence row seq_off + t. total = N·tokens·3d.
extern "C" __global__ void qkv_split_seq(const float* qkv, const float* bias, float* heads_out, int total, int tokens,
                                         int heads, int head_dim, int seq, int seq_off, int part_len) {
    GRID_STRIDE_LOOP(i, total) {
        split_qkv_element(qkv, bias, heads_out, i, tokens, heads, head_dim, seq, seq_off, part_len);
    }
}

// RMS qk-norm: each row of v [rows, cols] (one head of one token of q or k, cols = head_dim) becomes
// v·(1/√(mean(v²) + eps))·weight, in place; rows are (sample, head, position) of sequences of `seq` positions, and
// positions below `split` (the image tokens) take weight_a, the others (the context tokens) weight_b. One block per
// row.
extern "C" __global__ void head_rms_norm(float* v, const float* weight_a, const float* weight_b, int cols, int seq,
                                         int split, float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    float* vr = v + row * cols;
    const float* w = (int)(row % seq) < split ? weight_a : weight_b;
    const float inv = rms_inv(vr, cols, eps, scratch);
    for (int k = threadIdx.x; k < cols; k += blockDim.x) vr[k] = vr[k] * inv * w[k];
}

// o [N, heads, seq, head_dim] → att [N·tokens, d]: the rows seq_off .. seq_off + tokens − 1 of each sequence (one
// stream), heads side by side again. total = N·tokens·d.
extern "C" __global__ void head_merge_seq(const float* o, float* att, int total, int tokens, int heads, int head_dim,
                                          int seq, int seq_off) {
    GRID_STRIDE_LOOP(i, total) {
        att[i] = merged_head_element(o, i, tokens, heads, head_dim, seq, seq_off);
    }
}

// x [N·tokens, d] = table[ids[row]] (+ pos[row % tokens] when use_pos != 0): token embeddings (CLIP adds its
// position table, T5 has none). total = N·tokens·d.
extern "C" __global__ void embed_tokens(const int* ids, const float* table, const float* pos, float* x, int total,
                                        int d, int tokens, int use_pos) {
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / d, k = i % d;
        const float e = table[(long long)ids[row] * d + k];
        x[i] = use_pos ? e + pos[(row % tokens) * d + k] : e;
    }
}

// y [rows, d] = LayerNorm(x)·weight + bias (biased variance of the centred values, eps): CLIP's layer norms. One
// block per row; y may be x.
extern "C" __global__ void layer_norm(const float* x, float* y, const float* weight, const float* bias, int d,
                                      float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    float mean;
    const float inv_std = centred_inv_std(xr, d, eps, &mean, scratch);
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        yr[k] = (xr[k] - mean) * inv_std * weight[k] + bias[k];
    }
}

// y [rows, d] = weight·(x·(1/√(mean(x²) + eps))): T5's layer norm (no mean, no bias). One block per row.
extern "C" __global__ void rms_norm(const float* x, float* y, const float* weight, int d, float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    const float inv = rms_inv(xr, d, eps, scratch);
    for (int k = threadIdx.x; k < d; k += blockDim.x) yr[k] = weight[k] * (xr[k] * inv);
}

// v [rows, cols] = quick_gelu(v + bias) = u·σ(1.702·u), CLIP-L's activation. total = rows·cols.
extern "C" __global__ void bias_quick_gelu(float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        const float u = v[i] + bias[i % cols];
        v[i] = u / (1.0f + expf(-1.702f * u));
    }
}

// v [rows, cols] = GELU(v + bias), the exact (erf) form 0.5·u·(1 + erf(u/√2)): CLIP-G's activation.
// total = rows·cols.
extern "C" __global__ void bias_gelu_erf(float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        const float u = v[i] + bias[i % cols];
        v[i] = 0.5f * u * (1.0f + erff(u * 0.7071067811865476f));
    }
}

// Each row of s [pairs·len, len] (row i of a (sequence, head) pair's scores) becomes softmax(scale·row) over the
// positions 0..i, and 0 after i: CLIP's causal self-attention. One block per row.
extern "C" __global__ void softmax_causal(float* s, int len, float scale) {
    __shared__ float scratch[32];
    softmax_row(s + (long long)blockIdx.x * len, len, (int)(blockIdx.x % len) + 1, scale, nullptr, scratch);
}

// Each row of s [pairs·len, len] becomes softmax(row + bias[head, i]) with bias [heads, len, len]: T5's attention
// (no scaling, the relative position bias added to the scores). Rows are numbered (sequence, head, i) from a
// whole sequence on, so head = (row / len) % heads. One block per row.
extern "C" __global__ void softmax_bias(float* s, const float* bias, int len, int heads) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    softmax_row(s + row * len, len, len, 0.0f, bias + ((row / len) % heads * len + row % len) * len, scratch);
}

// x [rows, cols] += v + bias: a Linear's output (before its bias) added to the residual stream. total = rows·cols.
extern "C" __global__ void add_residual(float* x, const float* v, const float* bias, int total, int cols) {
    GRID_STRIDE_LOOP(i, total) {
        x[i] = x[i] + (v[i] + bias[i % cols]);
    }
}

// out [rows, ff] = gelu_tanh(gates[row, k])·gates[row, ff + k] from gates [rows, 2·ff] = wi_0 | wi_1: T5 v1.1's
// gated-GELU. total = rows·ff.
extern "C" __global__ void gated_gelu(const float* gates, float* out, int total, int ff) {
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / ff, k = i % ff;
        const float* g = gates + (long long)row * 2 * ff;
        out[i] = gelu_tanh(g[k]) * g[ff + k];
    }
}

// out [n, d] = x[rows[b]] for b < n: the rows CLIP pools (each sequence's EOS position, chosen on the host).
// total = n·d.
extern "C" __global__ void gather_rows(const float* x, const int* rows, float* out, int total, int d) {
    GRID_STRIDE_LOOP(i, total) {
        const int b = i / d, k = i % d;
        out[i] = x[(long long)rows[b] * d + k];
    }
}
