"""Reference DiT (Peebles & Xie 2023), written from docs/DIT_MODEL.md.

Parameter names and shapes follow the released checkpoint layout (``blocks.i.attn.qkv.weight`` ...), and the
constructor takes the released argument names, so a released state_dict loads with ``load_state_dict`` unchanged.
This module is the ground truth every Java backend is tested against; keep it plain and literal.

Runs on Debian's torch 1.13 (CPU) and on newer torch versions (GPU training).
"""
import math

import numpy as np
import torch
import torch.nn as nn

LN_EPS = 1e-6
# qk-norm (REPA's --qk-norm): timm's Attention builds nn.LayerNorm(head_dim) with torch's default eps, 1e-5 (not the
# 1e-6 of the blocks' own parameter-free norms)
QK_NORM_EPS = 1e-5
FREQ_DIM = 256  # timestep frequency embedding size


def gelu_tanh(u):
    # 0.5·u·(1 + tanh(√(2/π)·(u + 0.044715·u³))) written out: torch 1.13's fused tanh-GELU is very slow on CPU,
    # and the explicit formula exports to ONNX as plain ops.
    return 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (u + 0.044715 * u * u * u)))


def layer_norm(x):
    # LayerNorm without affine parameters, eps 1e-6, written out so that ONNX opset 14 exports it
    # (torch 1.13 fails on a non-affine LayerNorm at opset 17).
    mean = x.mean(dim=-1, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(dim=-1, keepdim=True)
    return xc / torch.sqrt(var + LN_EPS)


def affine_layer_norm(x, weight, bias, eps):
    """LayerNorm over the last dimension with a per-element weight and bias, written out (ONNX opset 14):
    (x − mean) / √(var + eps) · weight + bias, biased variance, as torch.nn.LayerNorm computes it."""
    mean = x.mean(dim=-1, keepdim=True)
    xc = x - mean
    var = (xc * xc).mean(dim=-1, keepdim=True)
    return xc / torch.sqrt(var + eps) * weight + bias


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_embedding(t, dim=FREQ_DIM, max_period=10000):
    """128 cosines then 128 sines of t·exp(−ln(10000)·k/128). t is taken as given, converted to float32 (an int64
    DiT timestep, or the float32 time of a flow model: nothing rounds it)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half).to(t.device)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed(embed_dim, grid_size):
    """Fixed 2-D sin-cos table [T, D]: first D/2 dims encode the column, last D/2 the row; each half is D/4 sines
    then D/4 cosines at frequencies 10000^(−k/(D/4)). Computed in float64."""
    def one_axis(dim, pos):
        omega = np.arange(dim // 2, dtype=np.float64) / (dim / 2.0)
        omega = 1.0 / 10000 ** omega
        out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
    emb_col = one_axis(embed_dim // 2, cols)
    emb_row = one_axis(embed_dim // 2, rows)
    return np.concatenate([emb_col, emb_row], axis=1)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_channels, hidden_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size, bias=True)

    def forward(self, x):
        x = self.proj(x)  # [N, D, H/p, W/p]
        return x.flatten(2).transpose(1, 2)  # tokens row by row: [N, T, D]


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(FREQ_DIM, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t):
        return self.mlp(timestep_embedding(t))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden_size, dropout_prob):
        super().__init__()
        use_cfg_embedding = 1 if dropout_prob > 0 else 0
        self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def forward(self, y, train, force_drop_ids=None):
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            if force_drop_ids is None:
                drop = torch.rand(y.shape[0], device=y.device) < self.dropout_prob
            else:
                drop = force_drop_ids == 1
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return self.embedding_table(y)


class HeadNorm(nn.Module):
    """qk-norm of one of q or k: an affine LayerNorm over the head dimension, the same weight and bias for every
    head (timm's Attention q_norm/k_norm: nn.LayerNorm(head_dim), eps 1e-5)."""

    def __init__(self, head_dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(head_dim))
        self.bias = nn.Parameter(torch.zeros(head_dim))

    def forward(self, x):
        return affine_layer_norm(x, self.weight, self.bias, QK_NORM_EPS)


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qk_norm=False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        if qk_norm:  # created only when used, so that a model without it has exactly the released keys
            self.q_norm = HeadNorm(self.head_dim)
            self.k_norm = HeadNorm(self.head_dim)
        self.qk_norm = qk_norm
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # [N, heads, T, hd]
        if self.qk_norm:  # per head, after the split, before the scores (timm's Attention)
            q, k = self.q_norm(q), self.k_norm(k)
        att = (q @ k.transpose(-2, -1)) * (self.head_dim ** -0.5)
        att = att.softmax(dim=-1)
        out = (att @ v).transpose(1, 2).reshape(n, t, d)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(gelu_tanh(self.fc1(x)))


class DiTBlock(nn.Module):
    def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, qk_norm=False):
        super().__init__()
        self.attn = Attention(hidden_size, num_heads, qk_norm)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

    def forward(self, x, c):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate1.unsqueeze(1) * self.attn(modulate(layer_norm(x), shift1, scale1))
        x = x + gate2.unsqueeze(1) * self.mlp(modulate(layer_norm(x), shift2, scale2))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(layer_norm(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=1000, learn_sigma=True, qk_norm=False):
        """qk_norm: REPA's --qk-norm (blocks.N.attn.q_norm/k_norm). The same network serves DiT, SiT and REPA: they
        differ only in what t means and what the output means (tools/dit/flow.py)."""
        super().__init__()
        assert input_size % patch_size == 0, "input_size must be a multiple of patch_size"
        assert hidden_size % num_heads == 0 and hidden_size % 4 == 0
        self.input_size = input_size
        self.patch_size = patch_size
        self.in_channels = in_channels
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.num_classes = num_classes
        self.learn_sigma = learn_sigma
        self.qk_norm = bool(qk_norm)
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        grid = input_size // patch_size
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self):
        """Released initialisation: Xavier linears, zero adaLN and output layer (adaLN-Zero)."""
        def _basic_init(module):
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        self.apply(_basic_init)
        grid = self.input_size // self.patch_size
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed(self.hidden_size, grid)).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def unpatchify(self, x):
        """[N, T, p·p·C] → [N, C, H, W]; token (i, j) element (a·p + b)·C + ch → pixel [ch, i·p + a, j·p + b]."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = x.permute(0, 5, 1, 3, 2, 4)  # n c h p w q
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward(self, x, t, y, train=False):
        x = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, train)
        for block in self.blocks:
            x = block(x, c)
        x = self.final_layer(x, c)
        return self.unpatchify(x)

    def forward_cached(self, x, t, y, cache_residual, cache_run):
        """The forward pass with step caching (docs/STEP_CACHE.md). Blocks 1..depth−1 are the cached span: the
        samples listed in cache_run (int64 indices) run it, and residual_out[b] = h_after_span − h_before_span for
        them; every other sample b skips it and continues with h_before_span + cache_residual[b]. Block 0 and the
        final layer run for every sample with its own t and y. Returns (out, residual_out); cache_residual and
        residual_out are [N, T, D]. Samples that run the span get h_after_span itself (not h + residual), so with
        every sample in cache_run `out` equals forward()."""
        h = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(t) + self.y_embedder(y, False)
        h = self.blocks[0](h, c)
        ran = h.index_select(0, cache_run)
        c_ran = c.index_select(0, cache_run)
        before = ran
        for block in self.blocks[1:]:
            ran = block(ran, c_ran)
        after = (h + cache_residual).index_copy(0, cache_run, ran)
        residual_out = cache_residual.index_copy(0, cache_run, ran - before)
        return self.unpatchify(self.final_layer(after, c)), residual_out

    def config(self):
        return dict(input_size=self.input_size, patch_size=self.patch_size, in_channels=self.in_channels,
                    hidden_size=self.hidden_size, depth=len(self.blocks), num_heads=self.num_heads,
                    mlp_ratio=self.blocks[0].mlp.fc1.out_features / self.hidden_size if len(self.blocks) else 4.0,
                    class_dropout_prob=self.y_embedder.dropout_prob, num_classes=self.num_classes,
                    learn_sigma=self.learn_sigma, qk_norm=self.qk_norm)


# the constructor arguments a format-1 config.json holds (qk_norm is a format-2 key, absent means false)
CONSTRUCTOR_ARGS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "mlp_ratio",
                    "class_dropout_prob", "num_classes", "learn_sigma")


def dit_from_config(cfg):
    return DiT(**{k: cfg[k] for k in CONSTRUCTOR_ARGS}, qk_norm=cfg.get("qk_norm", False))


def DiT_XL_2(**kw):
    return DiT(depth=28, hidden_size=1152, patch_size=2, num_heads=16, **kw)


def DiT_S_2(**kw):
    return DiT(depth=12, hidden_size=384, patch_size=2, num_heads=6, **kw)
