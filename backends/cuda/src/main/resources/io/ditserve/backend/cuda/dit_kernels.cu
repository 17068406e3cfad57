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
    float s = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) s += xr[k];
    const float mean = block_sum(s, scratch) / d;
    float q = 0.0f;
    for (int k = threadIdx.x; k < d; k += blockDim.x) {
        const float c = xr[k] - mean;
        q += c * c;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(q, scratch) / d + LN_EPS);
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
    float s = 0.0f;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) s += vr[k];
    const float mean = block_sum(s, scratch) / cols;
    float q = 0.0f;
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        const float c = vr[k] - mean;
        q += c * c;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(q, scratch) / cols + QK_NORM_EPS);
    for (int k = threadIdx.x; k < cols; k += blockDim.x) {
        vr[k] = (vr[k] - mean) * inv_std * weight[k] + bias[k];
    }
}

// qkv [N·T, 3d] (+ bias) → heads_out = q | k | v, each [N, heads, T, head_dim] and total/3 elements long; the
// 3d outputs of a row are q | k | v, each split into heads of head_dim columns. total = N·T·3d.
extern "C" __global__ void qkv_split(const float* qkv, const float* bias, float* heads_out, int total, int tokens,
                                     int heads, int head_dim) {
    const int d = heads * head_dim, part_len = total / 3;
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / (3 * d), col = i % (3 * d);
        const int part = col / d, within = col % d;
        const int head = within / head_dim, e = within % head_dim;
        const int sample = row / tokens, token = row % tokens;
        heads_out[part * part_len + ((sample * heads + head) * tokens + token) * head_dim + e] = qkv[i] + bias[col];
    }
}

// Each row of s [rows, len] becomes softmax(scale·row), in place. One block per row.
extern "C" __global__ void softmax_rows(float* s, int len, float scale) {
    __shared__ float scratch[32];
    float* r = s + (long long)blockIdx.x * len;
    float mx = __int_as_float(0xff800000);  // -inf
    for (int k = threadIdx.x; k < len; k += blockDim.x) mx = fmaxf(mx, __fmul_rn(r[k], scale));
    mx = block_max(mx, scratch);
    float sum = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        const float e = expf(__fmul_rn(r[k], scale) - mx);  // the same rounded product as in the max
        r[k] = e;
        sum += e;
    }
    sum = block_sum(sum, scratch);
    for (int k = threadIdx.x; k < len; k += blockDim.x) r[k] = r[k] / sum;
}

// o [N, heads, T, head_dim] → att [N·T, d]: the heads of a token side by side again. total = N·T·d.
extern "C" __global__ void head_merge(const float* o, float* att, int total, int tokens, int heads, int head_dim) {
    const int d = heads * head_dim;
    GRID_STRIDE_LOOP(i, total) {
        const int row = i / d, within = i % d;
        const int head = within / head_dim, e = within % head_dim;
        const int sample = row / tokens, token = row % tokens;
        att[i] = o[((sample * heads + head) * tokens + token) * head_dim + e];
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
    float s = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) s += xg[k];
    const float mean = block_sum(s, scratch) / len;
    float q = 0.0f;
    for (int k = threadIdx.x; k < len; k += blockDim.x) {
        const float d = xg[k] - mean;
        q += d * d;
    }
    const float inv_std = 1.0f / sqrtf(block_sum(q, scratch) / len + eps);
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
