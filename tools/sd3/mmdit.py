"""Reference SD3 MMDiT (diffusers' SD3Transformer2DModel), written from the architecture in docs/TEXT_MODELS.md.

Module and parameter names are those diffusers saves (``transformer_blocks.3.attn.add_q_proj.weight``,
``pos_embed.pos_embed`` ...), and the constructor takes the keys of diffusers' ``transformer/config.json``, so a
released ``diffusion_pytorch_model.safetensors`` loads with ``load_state_dict`` unchanged (strict). Covers SD3-medium
(no qk-norm), SD3.5-medium (RMS qk-norm, MMDiT-X dual-attention blocks) and any smaller configuration.

Written out with plain tensor ops (no fused GELU, no SDPA) so that it runs on Debian's torch 1.13 on CPU, and on
newer torch on a GPU for training. Keep it literal: every backend is tested against it.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LN_EPS = 1e-6      # every LayerNorm of the transformer: no affine, eps 1e-6
RMS_EPS = 1e-6     # qk-norm RMSNorm
FREQ_DIM = 256     # timestep sinusoid width

CONFIG_DEFAULTS = {  # diffusers' SD3Transformer2DModel.__init__ defaults (docs/TEXT_MODELS.md, "code default")
    "sample_size": 128,
    "patch_size": 2,
    "in_channels": 16,
    "num_layers": 18,
    "attention_head_dim": 64,
    "num_attention_heads": 18,
    "joint_attention_dim": 4096,
    "caption_projection_dim": 1152,
    "pooled_projection_dim": 2048,
    "out_channels": 16,
    "pos_embed_max_size": 96,
    "dual_attention_layers": [],
    "qk_norm": None,
}
CLASS_NAME = "SD3Transformer2DModel"
DIFFUSERS_VERSION = "0.31.0"  # the version string written into configs; the layout has not changed since SD3.5


def gelu_tanh(x):
    """GELU, tanh approximation, in its sigmoid form: 0.5·(1 + tanh(z)) = σ(2z), so
    x·σ(1.5957691·(x + 0.044715·x³)) with 1.5957691 = 2·√(2/π), written x·σ(x·(1.5957691 + 0.0713548·x²)). Same
    function (up to float rounding), and on torch 1.13's CPU 5× faster than its fused tanh-GELU forward and 3× faster
    than the literal form's backward (measured on (64, 64, 768))."""
    return x * torch.sigmoid(x * (1.5957691216057308 + 0.07135481627159295 * (x * x)))


def layer_norm(x, eps=LN_EPS):
    """LayerNorm over the last axis without affine parameters (biased variance), as torch computes it."""
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def timestep_sinusoid(t, dim=FREQ_DIM):
    """diffusers' get_timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0): cos first, then sin,
    of t·f_k with f_k = exp(−ln(10000)·k/128). t is the float σ·1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_table(embed_dim, grid_size, base_size):
    """The (grid², D) 2-D sin-cos table PatchEmbed initialises its stored pos_embed with (docs/TEXT_MODELS.md): the first
    D/2 channels encode the column coordinate, the last D/2 the row, each [sin(c·ω_k), cos(c·ω_k)] for
    ω_k = 10000^(−k/(D/4)); a coordinate is index·base_size/grid_size (interpolation scale 1). Rows in raster order."""
    if embed_dim % 4:
        raise ValueError(f"embed_dim {embed_dim} must be divisible by 4 for the 2-D sin-cos table")
    coords = np.arange(grid_size, dtype=np.float64) / (grid_size / base_size)
    omega = 1.0 / 10000 ** (np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0))

    def one_d(pos):  # (n,) → (n, D/2)
        out = np.outer(pos, omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(coords, coords, indexing="ij")      # rows[i, j] = i, cols[i, j] = j
    table = np.concatenate([one_d(cols.reshape(-1)), one_d(rows.reshape(-1))], axis=1)
    return torch.from_numpy(table.astype(np.float32))


class RMSNorm(nn.Module):
    """RMSNorm over head_dim with a learned weight (qk_norm="rms_norm"); the mean square is taken in fp32."""

    def __init__(self, dim, eps=RMS_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        dtype = x.dtype
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf.to(self.weight.dtype) * self.weight).to(dtype) if self.weight.dtype != torch.float32 \
            else (xf * self.weight).to(dtype)


class PatchEmbed(nn.Module):
    """Conv2d C→D, kernel = stride = patch, tokens in raster order, plus the centred crop of the stored
    (1, max², D) position table (a persistent buffer named ``pos_embed``)."""

    def __init__(self, patch_size, in_channels, dim, pos_embed_max_size, base_size):
        super().__init__()
        self.patch_size = patch_size
        self.pos_embed_max_size = pos_embed_max_size
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size, bias=True)
        self.register_buffer("pos_embed", sincos_table(dim, pos_embed_max_size, base_size)[None], persistent=True)

    def crop_offsets(self, h, w):
        """(top, left) of the crop for an h×w patch grid: (max − h)//2, (max − w)//2."""
        m = self.pos_embed_max_size
        if h > m or w > m:
            raise ValueError(f"a {h}×{w} patch grid exceeds pos_embed_max_size {m}")
        return (m - h) // 2, (m - w) // 2

    def cropped_pos_embed(self, h, w):
        top, left = self.crop_offsets(h, w)
        m = self.pos_embed_max_size
        table = self.pos_embed.reshape(1, m, m, -1)[:, top:top + h, left:left + w, :]
        return table.reshape(1, h * w, -1)

    def forward(self, x):
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        return (tokens + self.cropped_pos_embed(h, w).to(tokens.dtype)).to(tokens.dtype)


class TimestepEmbedding(nn.Module):
    """linear_1, SiLU, linear_2 (diffusers' TimestepEmbedding and PixArtAlphaTextProjection(act="silu") share
    these names)."""

    def __init__(self, in_dim, dim):
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class CombinedTimestepTextProjEmbeddings(nn.Module):
    def __init__(self, dim, pooled_projection_dim):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(FREQ_DIM, dim)
        self.text_embedder = TimestepEmbedding(pooled_projection_dim, dim)

    def forward(self, timestep, pooled):
        t = self.timestep_embedder(timestep_sinusoid(timestep).to(pooled.dtype))
        return t + self.text_embedder(pooled)


class AdaLayerNormZero(nn.Module):
    """Linear(SiLU(temb)) D→n·D; the LayerNorm (no affine, eps 1e-6) has no parameters. n = 6 (AdaLayerNormZero:
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) or 9 (SD35AdaLayerNormZeroX: the six, then
    shift_msa2, scale_msa2, gate_msa2)."""

    def __init__(self, dim, chunks=6):
        super().__init__()
        self.chunks = chunks
        self.linear = nn.Linear(dim, chunks * dim)

    def forward(self, x, temb):
        mods = self.linear(F.silu(temb)).chunk(self.chunks, dim=1)
        normed = layer_norm(x)
        out = normed * (1 + mods[1][:, None]) + mods[0][:, None]
        return out, normed, mods


class AdaLayerNormContinuous(nn.Module):
    """Linear(SiLU(temb)) D→2D split as scale FIRST, then shift: LN(x)·(1 + scale) + shift."""

    def __init__(self, dim):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)

    def forward(self, x, temb):
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=1)
        return layer_norm(x) * (1 + scale[:, None]) + shift[:, None]


class FeedForward(nn.Module):
    """net.0.proj Linear(D→4D), GELU(tanh), net.1 dropout (no parameters), net.2 Linear(4D→D)."""

    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.ModuleList([GELUProj(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class GELUProj(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x):
        return gelu_tanh(self.proj(x))


def attention(q, k, v):
    """Softmax attention over (B, H, N, d): scale 1/√d, no mask."""
    scale = q.shape[-1] ** -0.5
    w = torch.matmul(q * scale, k.transpose(-1, -2)).softmax(dim=-1)
    return torch.matmul(w, v)


class Attention(nn.Module):
    """diffusers' Attention as SD3 builds it. Image stream: to_q/to_k/to_v, to_out.0 (to_out.1 is dropout). With
    ``added=True`` (joint attention) also add_q_proj/add_k_proj/add_v_proj for the context and, unless
    ``context_pre_only``, to_add_out. qk_norm="rms_norm" adds norm_q/norm_k (and norm_added_q/norm_added_k)."""

    def __init__(self, dim, heads, head_dim, added=False, context_pre_only=False, qk_norm=None):
        super().__init__()
        if qk_norm not in (None, "rms_norm"):
            raise ValueError(f"unsupported qk_norm {qk_norm!r}, known: None, 'rms_norm'")
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.added, self.context_pre_only = added, context_pre_only
        self.to_q = nn.Linear(dim, inner)
        self.to_k = nn.Linear(dim, inner)
        self.to_v = nn.Linear(dim, inner)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(0.0)])
        if qk_norm:
            self.norm_q = RMSNorm(head_dim)
            self.norm_k = RMSNorm(head_dim)
        else:
            self.norm_q = self.norm_k = None
        if added:
            self.add_q_proj = nn.Linear(dim, inner)
            self.add_k_proj = nn.Linear(dim, inner)
            self.add_v_proj = nn.Linear(dim, inner)
            if not context_pre_only:
                self.to_add_out = nn.Linear(inner, dim)
            if qk_norm:
                self.norm_added_q = RMSNorm(head_dim)
                self.norm_added_k = RMSNorm(head_dim)
            else:
                self.norm_added_q = self.norm_added_k = None

    def _heads(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def _qkv(self, x, pq, pk, pv, nq, nk):
        q, k, v = self._heads(pq(x)), self._heads(pk(x)), self._heads(pv(x))
        if nq is not None:
            q, k = nq(q), nk(k)
        return q, k, v

    def forward(self, x, context=None):
        """Image-only self-attention (attn2) when context is None; else joint attention over [image ; context].
        Returns (image_out, context_out or None)."""
        b, n, _ = x.shape
        q, k, v = self._qkv(x, self.to_q, self.to_k, self.to_v, self.norm_q, self.norm_k)
        if context is not None:
            cq, ck, cv = self._qkv(context, self.add_q_proj, self.add_k_proj, self.add_v_proj,
                                   self.norm_added_q, self.norm_added_k)
            q, k, v = torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2)
        out = attention(q, k, v).transpose(1, 2).reshape(b, q.shape[2], self.heads * self.head_dim)
        img = self.to_out[0](out[:, :n])
        if context is None or self.context_pre_only:
            return img, None
        return img, self.to_add_out(out[:, n:])


class JointTransformerBlock(nn.Module):
    def __init__(self, dim, heads, head_dim, context_pre_only=False, qk_norm=None, use_dual_attention=False):
        super().__init__()
        self.context_pre_only = context_pre_only
        self.use_dual_attention = use_dual_attention
        self.norm1 = AdaLayerNormZero(dim, 9 if use_dual_attention else 6)
        self.norm1_context = AdaLayerNormContinuous(dim) if context_pre_only else AdaLayerNormZero(dim, 6)
        self.attn = Attention(dim, heads, head_dim, added=True, context_pre_only=context_pre_only, qk_norm=qk_norm)
        if use_dual_attention:
            self.attn2 = Attention(dim, heads, head_dim, qk_norm=qk_norm)
        self.ff = FeedForward(dim)
        if not context_pre_only:
            self.ff_context = FeedForward(dim)

    def forward(self, x, context, temb):
        x_mod, x_norm, m = self.norm1(x, temb)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = m[:6]
        if self.context_pre_only:
            c_mod = self.norm1_context(context, temb)
        else:
            c_mod, _, cm = self.norm1_context(context, temb)
            c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = cm
        attn_x, attn_c = self.attn(x_mod, c_mod)
        x = x + gate_msa[:, None] * attn_x
        if self.use_dual_attention:
            shift_msa2, scale_msa2, gate_msa2 = m[6:]
            x2 = x_norm * (1 + scale_msa2[:, None]) + shift_msa2[:, None]   # from the block input's LN
            x = x + gate_msa2[:, None] * self.attn2(x2)[0]
        h = layer_norm(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
        x = x + gate_mlp[:, None] * self.ff(h)
        if self.context_pre_only:
            return x, None
        context = context + c_gate_msa[:, None] * attn_c
        hc = layer_norm(context) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        context = context + c_gate_mlp[:, None] * self.ff_context(hc)
        return x, context


class SD3Transformer2DModel(nn.Module):
    """forward(hidden_states (B, C, H, W), encoder_hidden_states (B, T, joint_attention_dim),
    pooled_projections (B, pooled_projection_dim), timestep (B,) = σ·1000) → (B, out_channels, H, W)."""

    def __init__(self, sample_size=128, patch_size=2, in_channels=16, num_layers=18, attention_head_dim=64,
                 num_attention_heads=18, joint_attention_dim=4096, caption_projection_dim=1152,
                 pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=96, dual_attention_layers=(),
                 qk_norm=None, **ignored):
        super().__init__()
        dim = num_attention_heads * attention_head_dim
        if caption_projection_dim != dim:
            raise ValueError(f"caption_projection_dim {caption_projection_dim} must equal "
                             f"num_attention_heads·attention_head_dim = {dim}")
        out_channels = out_channels or in_channels
        self.config = dict(sample_size=sample_size, patch_size=patch_size, in_channels=in_channels,
                           num_layers=num_layers, attention_head_dim=attention_head_dim,
                           num_attention_heads=num_attention_heads, joint_attention_dim=joint_attention_dim,
                           caption_projection_dim=caption_projection_dim, pooled_projection_dim=pooled_projection_dim,
                           out_channels=out_channels, pos_embed_max_size=pos_embed_max_size,
                           dual_attention_layers=list(dual_attention_layers), qk_norm=qk_norm)
        self.patch_size, self.out_channels, self.dim = patch_size, out_channels, dim
        self.pos_embed = PatchEmbed(patch_size, in_channels, dim, pos_embed_max_size, sample_size // patch_size)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(dim, pooled_projection_dim)
        self.context_embedder = nn.Linear(joint_attention_dim, caption_projection_dim)
        self.transformer_blocks = nn.ModuleList([
            JointTransformerBlock(dim, num_attention_heads, attention_head_dim, context_pre_only=(i == num_layers - 1),
                                  qk_norm=qk_norm, use_dual_attention=i in dual_attention_layers)
            for i in range(num_layers)])
        self.norm_out = AdaLayerNormContinuous(dim)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * out_channels)

    def config_json(self):
        """The config.json diffusers writes for this model."""
        return {"_class_name": CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION, **self.config}

    def unpatchify(self, tokens, h, w):
        """(B, h·w, p·p·C) → (B, C, h·p, w·p): reshape to (B, h, w, p, q, C), permute to (B, C, h, p, w, q)."""
        b, p, c = tokens.shape[0], self.patch_size, self.out_channels
        x = tokens.reshape(b, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(b, c, h * p, w * p)

    def forward(self, hidden_states, encoder_hidden_states, pooled_projections, timestep):
        H, W = hidden_states.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image {H}×{W} is not a multiple of the patch size {p}")
        x = self.pos_embed(hidden_states)
        temb = self.time_text_embed(timestep, pooled_projections)
        context = self.context_embedder(encoder_hidden_states)
        for block in self.transformer_blocks:
            x, context = block(x, context, temb)
        x = self.proj_out(self.norm_out(x, temb))
        return self.unpatchify(x, H // p, W // p)


def init_weights(model, std=0.02, zero_out=True):
    """Initialisation for training from scratch: Xavier-uniform linears and the patch conv, normal(0, std) for the
    embedders' first layers, and (zero_out) adaLN modulations, gates' targets and the output projection at zero, so
    every block starts as the identity (DiT's adaLN-Zero). The stored pos_embed stays the sin-cos table."""
    for mod in model.modules():
        if isinstance(mod, nn.Linear):
            nn.init.xavier_uniform_(mod.weight)
            if mod.bias is not None:
                nn.init.zeros_(mod.bias)
    w = model.pos_embed.proj.weight
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    nn.init.zeros_(model.pos_embed.proj.bias)
    for emb in (model.time_text_embed.timestep_embedder, model.time_text_embed.text_embedder):
        nn.init.normal_(emb.linear_1.weight, std=std)
        nn.init.normal_(emb.linear_2.weight, std=std)
    if zero_out:
        for block in model.transformer_blocks:
            for norm in (block.norm1, block.norm1_context):
                nn.init.zeros_(norm.linear.weight)
                nn.init.zeros_(norm.linear.bias)
        nn.init.zeros_(model.norm_out.linear.weight)
        nn.init.zeros_(model.norm_out.linear.bias)
        nn.init.zeros_(model.proj_out.weight)
        nn.init.zeros_(model.proj_out.bias)
    return model


def count_flops(config, tokens_ctx, batch=1):
    """Matmul FLOPs (2·MAC) of one forward for an image of sample_size² (the config's) and tokens_ctx context
    tokens: patch conv, context embedder, per block the image- and context-stream linears, joint attention
    (QKᵀ and AV over N = image + context tokens), attn2 where present, norm_out, proj_out. Modulation linears
    (per sample, not per token) are included too."""
    c = config
    D = c["num_attention_heads"] * c["attention_head_dim"]
    p, L = c["patch_size"], c["num_layers"]
    n_img = (c["sample_size"] // p) ** 2
    n_all = n_img + tokens_ctx
    mac = n_img * p * p * c["in_channels"] * D + tokens_ctx * c["joint_attention_dim"] * D
    mac += FREQ_DIM * D + D * D + c["pooled_projection_dim"] * D + D * D
    dual = set(c.get("dual_attention_layers") or ())
    for i in range(L):
        last = i == L - 1
        mac += n_img * (4 * D * D + 8 * D * D)                       # q, k, v, out; ff
        mac += tokens_ctx * (3 * D * D + (0 if last else D * D + 8 * D * D))
        mac += 2 * n_all * n_all * D                                 # QKᵀ and AV
        mac += D * ((9 if i in dual else 6) * D + (2 if last else 6) * D)
        if i in dual:
            mac += n_img * 4 * D * D + 2 * n_img * n_img * D
    mac += D * 2 * D + n_img * D * p * p * c["out_channels"]
    return 2 * mac * batch
