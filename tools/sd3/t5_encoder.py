"""Reference T5 v1.1 encoder (transformers' T5EncoderModel), written from the architecture in docs/TEXT_MODELS.md —
the third text encoder of SD3's pipeline (text_encoder_3).

Parameter names are those transformers saves: ``shared.weight`` (the token embedding, tied to
``encoder.embed_tokens.weight``, which safetensors files leave out), ``encoder.block.N.layer.0.SelfAttention.{q,k,v,o}
.weight``, ``encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight`` (block 0 only),
``encoder.block.N.layer.0.layer_norm.weight``, ``encoder.block.N.layer.1.DenseReluDense.{wi_0,wi_1,wo}.weight``,
``encoder.block.N.layer.1.layer_norm.weight``, ``encoder.final_layer_norm.weight``; the constructor takes the keys
of its config.json (T5Config).

The architecture:
  x = shared[ids] (no scaling, no position embedding);
  position bias [heads, T, T] = relative_attention_bias[bucket(key − query)], computed once from block 0's table and
    added in every block (bidirectional buckets: half the buckets per sign, +half when key > query; |rel| < half/2
    is its own bucket, larger ones half/2 + ⌊log(|rel| / (half/2)) / log(max_distance / (half/2)) · (half/2)⌋ in
    float32, capped at half − 1);
  per block: x += o(attention(RMS(x))) with attention softmax(q·kᵀ + bias)·v per head — no 1/√d scaling, no mask
    (SD3 passes none: pad positions are attended to); x += wo(gelu_new(wi_0(h)) ⊙ wi_1(h)), h = RMS(x);
  RMS(x) = x · rsqrt(mean(x²) + eps) · weight (no mean subtraction, no bias; the variance in float32);
  the output is final_layer_norm(x): last_hidden_state, what SD3 uses.
No linear layer has a bias. Computed in float32 here (transformers' fp16 clamping and fp32 ``wo`` are irrelevant).
"""
import math

import torch
import torch.nn as nn

CONFIG_DEFAULTS = {  # T5Config defaults (transformers) for the keys this model reads, except the v1.1 FFN
    "vocab_size": 32128,
    "d_model": 512,
    "d_kv": 64,
    "d_ff": 2048,
    "num_layers": 6,
    "num_heads": 8,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "layer_norm_epsilon": 1e-6,
    "feed_forward_proj": "gated-gelu",
}
TRANSFORMERS_VERSION = "4.44.0"


def gelu_new(x):
    """transformers' NewGELUActivation: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def relative_buckets(rel, num_buckets=32, max_distance=128):
    """Bucket of each relative position rel = key − query (an int64 tensor), bidirectional, as T5 computes it."""
    half = num_buckets // 2
    out = (rel > 0).to(torch.long) * half
    n = rel.abs()
    exact = half // 2
    large = exact + (torch.log(n.float() / exact) / math.log(max_distance / exact) * (half - exact)).to(torch.long)
    large = torch.minimum(large, torch.full_like(large, half - 1))
    return out + torch.where(n < exact, n, large)


class T5LayerNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


class T5Attention(nn.Module):
    def __init__(self, c, has_bias_table):
        super().__init__()
        inner = c["num_heads"] * c["d_kv"]
        self.heads, self.d_kv = c["num_heads"], c["d_kv"]
        self.q = nn.Linear(c["d_model"], inner, bias=False)
        self.k = nn.Linear(c["d_model"], inner, bias=False)
        self.v = nn.Linear(c["d_model"], inner, bias=False)
        self.o = nn.Linear(inner, c["d_model"], bias=False)
        if has_bias_table:
            self.relative_attention_bias = nn.Embedding(c["relative_attention_num_buckets"], c["num_heads"])

    def forward(self, x, bias):
        b, n, _ = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, self.d_kv).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) + bias          # no 1/√d_kv
        w = scores.float().softmax(dim=-1).to(scores.dtype)
        return self.o(torch.matmul(w, v).transpose(1, 2).reshape(b, n, self.heads * self.d_kv))


class T5LayerSelfAttention(nn.Module):
    def __init__(self, c, has_bias_table):
        super().__init__()
        self.SelfAttention = T5Attention(c, has_bias_table)
        self.layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])


class T5DenseGatedActDense(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wi_0 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.wi_1 = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.wo = nn.Linear(c["d_ff"], c["d_model"], bias=False)

    def forward(self, h):
        return self.wo(gelu_new(self.wi_0(h)) * self.wi_1(h))


class T5LayerFF(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(c)
        self.layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])


class T5Block(nn.Module):
    def __init__(self, c, first):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(c, first), T5LayerFF(c)])

    def forward(self, x, bias):
        att, ff = self.layer
        x = x + att.SelfAttention(att.layer_norm(x), bias)
        return x + ff.DenseReluDense(ff.layer_norm(x))


class T5Stack(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.ModuleList([T5Block(c, i == 0) for i in range(c["num_layers"])])
        self.final_layer_norm = T5LayerNorm(c["d_model"], c["layer_norm_epsilon"])


class T5EncoderModel(nn.Module):
    def __init__(self, **config):
        super().__init__()
        c = {**CONFIG_DEFAULTS, **{k: v for k, v in config.items() if k in CONFIG_DEFAULTS}}
        if c["feed_forward_proj"] != "gated-gelu":
            raise ValueError(f"feed_forward_proj {c['feed_forward_proj']!r}: only T5 v1.1's gated-gelu is written")
        self.config = c
        self.shared = nn.Embedding(c["vocab_size"], c["d_model"])
        self.encoder = T5Stack(c)

    def config_json(self, torch_dtype="float32"):
        """The config.json transformers writes for this model (T5Config keys, v1.1 values)."""
        c = self.config
        return {"architectures": ["T5EncoderModel"], "classifier_dropout": 0.0, "d_ff": c["d_ff"], "d_kv": c["d_kv"],
                "d_model": c["d_model"], "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1,
                "eos_token_id": 1, "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0,
                "is_encoder_decoder": True, "is_gated_act": True, "layer_norm_epsilon": c["layer_norm_epsilon"],
                "model_type": "t5", "num_decoder_layers": c["num_layers"], "num_heads": c["num_heads"],
                "num_layers": c["num_layers"], "output_past": True, "pad_token_id": 0,
                "relative_attention_max_distance": c["relative_attention_max_distance"],
                "relative_attention_num_buckets": c["relative_attention_num_buckets"], "tie_word_embeddings": False,
                "torch_dtype": torch_dtype, "transformers_version": TRANSFORMERS_VERSION, "use_cache": True,
                "vocab_size": c["vocab_size"]}

    def position_bias(self, n):
        c = self.config
        pos = torch.arange(n)
        buckets = relative_buckets(pos[None, :] - pos[:, None], c["relative_attention_num_buckets"],
                                   c["relative_attention_max_distance"])
        table = self.encoder.block[0].layer[0].SelfAttention.relative_attention_bias
        return table(buckets).permute(2, 0, 1)[None]          # [1, heads, q, k]

    def forward(self, input_ids):
        x = self.shared(input_ids)
        bias = self.position_bias(input_ids.shape[1])
        for blk in self.encoder.block:
            x = blk(x, bias)
        return {"last_hidden_state": self.encoder.final_layer_norm(x)}


def load_weights(model, state):
    """Loads a transformers state dict: ``encoder.embed_tokens.weight`` (the tied copy) may be present or not; when
    both are, they must be equal."""
    state = dict(state)
    tied = state.pop("encoder.embed_tokens.weight", None)
    if tied is not None:
        if "shared.weight" not in state:
            state["shared.weight"] = tied
        elif not torch.equal(tied, state["shared.weight"]):
            raise ValueError("encoder.embed_tokens.weight differs from shared.weight (they are tied)")
    model.load_state_dict(state, strict=True)
    return model


def init_weights(model, factor=1.0):
    """T5's initialisation (transformers' _init_weights): shared N(0, f); q N(0, f·(d·d_kv)^−½), k, v N(0, f·d^−½),
    o N(0, f·(heads·d_kv)^−½); relative_attention_bias N(0, f·d^−½); wi_* N(0, f·d^−½), wo N(0, f·d_ff^−½); norms 1."""
    c = model.config
    d, kv, h, ff = c["d_model"], c["d_kv"], c["num_heads"], c["d_ff"]
    nn.init.normal_(model.shared.weight, std=factor)
    for i, blk in enumerate(model.encoder.block):
        a = blk.layer[0].SelfAttention
        nn.init.normal_(a.q.weight, std=factor * (d * kv) ** -0.5)
        nn.init.normal_(a.k.weight, std=factor * d ** -0.5)
        nn.init.normal_(a.v.weight, std=factor * d ** -0.5)
        nn.init.normal_(a.o.weight, std=factor * (h * kv) ** -0.5)
        if i == 0:
            nn.init.normal_(a.relative_attention_bias.weight, std=factor * d ** -0.5)
        f = blk.layer[1].DenseReluDense
        nn.init.normal_(f.wi_0.weight, std=factor * d ** -0.5)
        nn.init.normal_(f.wi_1.weight, std=factor * d ** -0.5)
        nn.init.normal_(f.wo.weight, std=factor * ff ** -0.5)
    return model
