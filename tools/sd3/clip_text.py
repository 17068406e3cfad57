"""Reference CLIP text encoder with projection (transformers' CLIPTextModelWithProjection), written from the
architecture in docs/TEXT_MODELS.md.

Parameter names are those transformers saves (``text_model.embeddings.token_embedding.weight``,
``text_model.encoder.layers.N.self_attn.q_proj.weight``, ``text_model.encoder.layers.N.layer_norm1.weight``,
``text_model.encoder.layers.N.mlp.fc1.weight``, ``text_model.final_layer_norm.weight``, ``text_projection.weight``)
and the constructor takes the keys of its ``config.json`` (CLIPTextConfig), so released weights load unchanged.
``text_model.embeddings.position_ids`` is a non-persistent buffer in current transformers; older files carry it,
and load_state_dict(strict=False) or ``load_weights`` below accepts both.

forward(input_ids) returns a dict:
  hidden_states  tuple of L+1 tensors: the embeddings, then the output of each layer (no final norm);
  penultimate    hidden_states[-2], what SD3 uses as the per-token context (clip_skip None);
  last_hidden_state  final_layer_norm(hidden_states[-1]);
  pooled         last_hidden_state at the first EOS token;
  text_embeds    text_projection(pooled) (no bias), SD3's pooled prompt embedding.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIG_DEFAULTS = {  # CLIPTextConfig defaults (transformers) for the keys this model reads
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "projection_dim": 512,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}
TRANSFORMERS_VERSION = "4.44.0"


def activation(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name == "gelu":          # exact (erf) GELU
        return lambda x: F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: x * torch.sigmoid(1.5957691216057308 * (x + 0.044715 * x * x * x))
    raise ValueError(f"unsupported hidden_act {name!r}, known: quick_gelu, gelu, gelu_new, gelu_pytorch_tanh")


class CLIPAttention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden_size {dim} is not divisible by num_attention_heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x, mask):
        b, n, d = x.shape

        def split(t):
            return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

        q = split(self.q_proj(x)) * self.head_dim ** -0.5
        k, v = split(self.k_proj(x)), split(self.v_proj(x))
        w = torch.matmul(q, k.transpose(-1, -2)) + mask
        w = w.float().softmax(dim=-1).to(q.dtype)
        return self.out_proj(torch.matmul(w, v).transpose(1, 2).reshape(b, n, d))


class CLIPMLP(nn.Module):
    def __init__(self, dim, hidden, act):
        super().__init__()
        self.act = activation(act)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN: x += attn(LN1(x)); x += mlp(LN2(x))."""

    def __init__(self, c):
        super().__init__()
        self.self_attn = CLIPAttention(c["hidden_size"], c["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])
        self.mlp = CLIPMLP(c["hidden_size"], c["intermediate_size"], c["hidden_act"])
        self.layer_norm2 = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(c) for _ in range(c["num_hidden_layers"])])


class CLIPTextEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.token_embedding = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.position_embedding = nn.Embedding(c["max_position_embeddings"], c["hidden_size"])
        self.register_buffer("position_ids", torch.arange(c["max_position_embeddings"])[None], persistent=False)

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding(self.position_ids[:, :ids.shape[1]])


class CLIPTextTransformer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = CLIPTextEmbeddings(c)
        self.encoder = CLIPEncoder(c)
        self.final_layer_norm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])


class CLIPTextModelWithProjection(nn.Module):
    def __init__(self, **config):
        super().__init__()
        c = {**CONFIG_DEFAULTS, **{k: v for k, v in config.items() if k in CONFIG_DEFAULTS}}
        self.config = c
        self.text_model = CLIPTextTransformer(c)
        self.text_projection = nn.Linear(c["hidden_size"], c["projection_dim"], bias=False)

    def config_json(self, torch_dtype="float32"):
        """The config.json transformers writes for this model (the keys this model reads, plus the bookkeeping
        ones transformers adds)."""
        return {"architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0, "dropout": 0.0,
                "initializer_factor": 1.0, "initializer_range": 0.02, "model_type": "clip_text_model",
                **self.config, "torch_dtype": torch_dtype, "transformers_version": TRANSFORMERS_VERSION}

    def eos_positions(self, ids):
        """Index of the pooled token per row. transformers has two conventions that agree on every folder this
        project writes or loads: released CLIP configs carry the legacy eos_token_id 2 and pool at the argmax of
        the ids (the EOS, 49407, is the highest id; transformers ≤ 4.4x tests eos_token_id == 2, newer ones test
        that every row's highest id is 49407); any other config pools at the first position holding eos_token_id
        (our vocabularies: EOS is the last id, and an EOS pad sits after the first EOS). This model takes the argmax
        when eos_token_id is 2 or every row's highest id is 49407, else the first EOS (a row without one pools
        position 0, as torch's argmax of an all-zero row does). A config with eos_token_id 2 over a vocabulary
        whose EOS is not 49407 would pool differently on old and new transformers: do not write one."""
        if self.config["eos_token_id"] == 2 or bool((ids.max(dim=-1).values == 49407).all()):
            return ids.to(torch.int).argmax(dim=-1)
        return (ids == self.config["eos_token_id"]).int().argmax(dim=-1)

    def forward(self, input_ids):
        tm = self.text_model
        n = input_ids.shape[1]
        if n > self.config["max_position_embeddings"]:
            raise ValueError(f"{n} tokens exceed max_position_embeddings {self.config['max_position_embeddings']}")
        x = tm.embeddings(input_ids)
        mask = torch.full((n, n), torch.finfo(x.dtype).min, dtype=x.dtype, device=x.device).triu(1)
        hidden = [x]
        for layer in tm.encoder.layers:
            x = layer(x, mask)
            hidden.append(x)
        last = tm.final_layer_norm(x)
        pooled = last[torch.arange(last.shape[0], device=last.device), self.eos_positions(input_ids)]
        return {"hidden_states": tuple(hidden), "penultimate": hidden[-2], "last_hidden_state": last,
                "pooled": pooled, "text_embeds": self.text_projection(pooled)}


def init_weights(model, factor=1.0):
    """CLIP's initialisation (transformers' _init_weights for the text tower): embeddings N(0, 0.02·f); attention
    q/k/v N(0, d^−½·(2L)^−½·f), out N(0, d^−½·f); mlp fc1 N(0, (2d)^−½·f), fc2 N(0, d^−½·(2L)^−½·f); biases 0;
    LayerNorms weight 1, bias 0; projection N(0, d^−½·f)."""
    c = model.config
    d, L = c["hidden_size"], c["num_hidden_layers"]
    tm = model.text_model
    nn.init.normal_(tm.embeddings.token_embedding.weight, std=0.02 * factor)
    nn.init.normal_(tm.embeddings.position_embedding.weight, std=0.01 * factor)
    in_std = d ** -0.5 * (2 * L) ** -0.5 * factor
    for layer in tm.encoder.layers:
        a = layer.self_attn
        for lin, std in ((a.q_proj, in_std), (a.k_proj, in_std), (a.v_proj, in_std), (a.out_proj, d ** -0.5 * factor),
                         (layer.mlp.fc1, (2 * d) ** -0.5 * factor), (layer.mlp.fc2, in_std)):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)
        for ln in (layer.layer_norm1, layer.layer_norm2):
            nn.init.ones_(ln.weight)
            nn.init.zeros_(ln.bias)
    nn.init.ones_(tm.final_layer_norm.weight)
    nn.init.zeros_(tm.final_layer_norm.bias)
    nn.init.normal_(model.text_projection.weight, std=d ** -0.5 * factor)
    return model


def load_weights(model, state):
    """Loads a transformers state dict; the legacy position_ids buffer is accepted and checked, nothing else may be
    missing or extra."""
    state = dict(state)
    pid = state.pop("text_model.embeddings.position_ids", None)
    if pid is not None and not torch.equal(pid.long().reshape(-1), model.text_model.embeddings.position_ids[0]):
        raise ValueError("text_model.embeddings.position_ids is not 0…max−1")
    model.load_state_dict(state, strict=True)
    return model


def param_count(config):
    m = CLIPTextModelWithProjection(**config)
    return sum(p.numel() for p in m.parameters())


def flops(config, tokens):
    """Matmul FLOPs (2·MAC) of one forward over `tokens` tokens."""
    d, f, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    mac = L * (tokens * (4 * d * d + 2 * d * f) + 2 * tokens * tokens * d) + d * config["projection_dim"]
    return 2 * mac

