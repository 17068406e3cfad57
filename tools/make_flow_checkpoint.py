#!/usr/bin/env python3
"""Writes a random-weight flow-model checkpoint in a released layout, seeded, for the converter's tests, the flow
fixtures (tools/make_fixtures.py) and the full-size benchmark. Not a useful model: the weights are Gaussian with
every path active (as tools/make_fixtures.randomize: 1/√fan_in for matrices, 0.02 for biases, 0.5 for the label
table; qk-norm weights 1 + 0.2·N(0, 1), biases 0.2·N(0, 1)); pos_embed is the fixed sin-cos table.

  --family sit   `SiT-XL-2-256x256.pt`: a plain state_dict under DiT's key names; learned σ, so final_layer.linear
                 has 2·C output channels per pixel (--no-learn-sigma: C); null class = num_classes.
  --family repa  REPA's `last.pt`: {"model", "ema", "opt", "args", "steps"}; "ema" is the state_dict to serve,
                 "model" another random one of the same layout (so that using the wrong entry shows), "opt" {}, "args"
                 an argparse.Namespace as REPA's train.py saves it, "steps" an int; the state_dicts hold
                 `projectors.0.{0,2,4}.{weight,bias}` (training only) and, with --qk-norm,
                 `blocks.N.attn.{q,k}_norm.{weight,bias}`; C output channels.

  /usr/bin/python3 tools/make_flow_checkpoint.py OUT.pt --family sit|repa [--shape XL | --hidden D --depth N
      --heads H] [--patch 2] [--input-size 32] [--in-channels 4] [--num-classes 1000] [--qk-norm] [--seed 7]

The file is torch.save's zip format, written tensor by tensor (each generated just before it is written and freed
after): an XL/2 checkpoint needs tens of MB of memory, not its 2.7 GB (REPA: 5.4 GB on disk, "model" and "ema").
torch.load reads it as it reads any torch.save file. Tensor k (in state_dict order) of the entry with seed base b is
drawn from torch.Generator().manual_seed(b·100003 + k): b = seed for SiT's state_dict and REPA's "ema", seed + 1
for REPA's "model".
"""
import argparse
import collections
import io
import math
import os
import pickle
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit.model import sincos_pos_embed  # noqa: E402

SHAPES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}  # hidden, depth, heads


def released_keys(family, hidden, depth, patch, in_channels, num_classes, tokens, learn_sigma=True, qk_norm=False,
                  heads=None, mlp_ratio=4.0, projector_dim=2048, z_dims=(768,)):
    """[(key, shape)] of the released state_dict in its order (own parameter pos_embed first, then the modules in
    registration order; timm's Attention registers qkv, q_norm, k_norm, proj; REPA's projectors come after the
    blocks)."""
    d, p, c = hidden, patch, in_channels
    c_out = 2 * c if (family == "sit" and learn_sigma) else c
    mlp = int(d * mlp_ratio)
    keys = [("pos_embed", (1, tokens, d)),
            ("x_embedder.proj.weight", (d, c, p, p)), ("x_embedder.proj.bias", (d,)),
            ("t_embedder.mlp.0.weight", (d, 256)), ("t_embedder.mlp.0.bias", (d,)),
            ("t_embedder.mlp.2.weight", (d, d)), ("t_embedder.mlp.2.bias", (d,)),
            ("y_embedder.embedding_table.weight", (num_classes + 1, d))]
    if qk_norm and (heads is None or d % heads):
        raise ValueError("qk_norm needs the head count (hidden must be a multiple of it)")
    for i in range(depth):
        b = f"blocks.{i}."
        keys += [(b + "attn.qkv.weight", (3 * d, d)), (b + "attn.qkv.bias", (3 * d,))]
        if qk_norm:
            hd = d // heads
            keys += [(b + "attn.q_norm.weight", (hd,)), (b + "attn.q_norm.bias", (hd,)),
                     (b + "attn.k_norm.weight", (hd,)), (b + "attn.k_norm.bias", (hd,))]
        keys += [(b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
                 (b + "mlp.fc1.weight", (mlp, d)), (b + "mlp.fc1.bias", (mlp,)),
                 (b + "mlp.fc2.weight", (d, mlp)), (b + "mlp.fc2.bias", (d,)),
                 (b + "adaLN_modulation.1.weight", (6 * d, d)), (b + "adaLN_modulation.1.bias", (6 * d,))]
    if family == "repa":
        for j, z in enumerate(z_dims):
            b = f"projectors.{j}."
            keys += [(b + "0.weight", (projector_dim, d)), (b + "0.bias", (projector_dim,)),
                     (b + "2.weight", (projector_dim, projector_dim)), (b + "2.bias", (projector_dim,)),
                     (b + "4.weight", (z, projector_dim)), (b + "4.bias", (z,))]
    keys += [("final_layer.linear.weight", (p * p * c_out, d)), ("final_layer.linear.bias", (p * p * c_out,)),
             ("final_layer.adaLN_modulation.1.weight", (2 * d, d)),
             ("final_layer.adaLN_modulation.1.bias", (2 * d,))]
    return keys


def make_tensor(key, shape, base_seed, index):
    """Tensor number `index` of an entry: its own generator, so that any one can be made alone, in any order."""
    if key == "pos_embed":
        grid = math.isqrt(shape[1])
        return torch.from_numpy(sincos_pos_embed(shape[2], grid)).float().unsqueeze(0)
    g = torch.Generator().manual_seed(base_seed * 100003 + index)
    z = torch.randn(shape, generator=g)
    if key.endswith(("q_norm.weight", "k_norm.weight")):
        return 1.0 + 0.2 * z
    if key.endswith(("q_norm.bias", "k_norm.bias")):
        return 0.2 * z
    if "embedding_table" in key:
        return z * 0.5
    if len(shape) == 1:
        return z * 0.02
    fan_in = 1
    for n in shape[1:]:
        fan_in *= n
    return z / math.sqrt(fan_in)


def state_dict(keys, base_seed):
    """The whole state_dict in memory (small models and tests)."""
    return collections.OrderedDict((k, make_tensor(k, s, base_seed, i)) for i, (k, s) in enumerate(keys))


class _Storage:
    def __init__(self, name, numel):
        self.name, self.numel = name, numel


class _Tensor:
    """Stands for a float32 tensor in the pickle: torch rebuilds it from storage `name` (data/NAME in the zip)."""

    def __init__(self, name, shape):
        self.storage = _Storage(name, int(torch.Size(shape).numel()))
        self.shape = tuple(shape)

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for n in reversed(self.shape):
            stride.insert(0, acc)
            acc *= n
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(stride), False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):  # the form torch.save gives a storage, read by torch.load's persistent_load
        if isinstance(obj, _Storage):
            return ("storage", torch.FloatStorage, obj.name, "cpu", obj.numel)
        return None


def _release_freed_memory():
    """glibc keeps freed tensor memory in its heap, fragmented by the writer's small allocations in between, so the
    process would grow with every tensor written: hand it back after each one."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def write_lazy(path, obj, makers):
    """torch.save's zip layout for `obj`, whose tensors are _Tensor placeholders: data.pkl first, then each storage
    data/NAME made by makers[NAME]() just before it is written. Written to PATH.tmp, then renamed."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    tmp = path + ".tmp"
    writer = torch._C.PyTorchFileWriter(tmp)
    data = buf.getvalue()
    writer.write_record("data.pkl", data, len(data))
    for name, make in makers.items():
        t = make().float().contiguous()
        writer.write_record(f"data/{name}", t.data_ptr(), t.numel() * 4)
        del t
        _release_freed_memory()
    writer.write_end_of_file()
    del writer
    os.replace(tmp, path)


def lazy_entry(keys, base_seed, prefix, makers):
    """An OrderedDict of placeholders for one state_dict; registers how to make each storage."""
    entry = collections.OrderedDict()
    for i, (k, shape) in enumerate(keys):
        name = f"{prefix}{i}"
        entry[k] = _Tensor(name, shape)
        makers[name] = (lambda k=k, shape=shape, i=i: make_tensor(k, shape, base_seed, i))
    return entry


def repa_args(hidden, depth, patch, input_size, num_classes, qk_norm, encoder_depth, model_name):
    """The argparse.Namespace REPA's train.py stores under "args" (its fields that describe the model)."""
    return argparse.Namespace(
        output_dir="exps", exp_name="random-weights", model=model_name, num_classes=num_classes,
        encoder_depth=encoder_depth, fused_attn=True, qk_norm=qk_norm, resolution=input_size * 8, batch_size=256,
        path_type="linear", prediction="v", cfg_prob=0.1, enc_type="dinov2-vit-b", proj_coeff=0.5,
        weighting="uniform", seed=0, learning_rate=1e-4, max_train_steps=400000, mixed_precision="fp16")


def write_checkpoint(path, family, hidden, depth, heads, patch=2, input_size=32, in_channels=4, num_classes=1000,
                     learn_sigma=True, qk_norm=False, seed=7, projector_dim=2048, z_dims=(768,), encoder_depth=None,
                     steps=400000, model_name=None):
    """Writes the checkpoint; returns the keys ([(key, shape)]) of its state_dict (REPA: of "ema" and "model")."""
    if family not in ("sit", "repa"):
        raise ValueError(f"family must be sit or repa, got {family!r}")
    if input_size % patch:
        raise ValueError("input_size must be a multiple of patch")
    tokens = (input_size // patch) ** 2
    keys = released_keys(family, hidden, depth, patch, in_channels, num_classes, tokens, learn_sigma, qk_norm, heads,
                         projector_dim=projector_dim, z_dims=z_dims)
    makers = {}
    if family == "sit":
        obj = lazy_entry(keys, seed, "", makers)
    else:
        ema = lazy_entry(keys, seed, "e", makers)
        model = lazy_entry(keys, seed + 1, "m", makers)
        obj = {"model": model, "ema": ema, "opt": {},
               "args": repa_args(hidden, depth, patch, input_size, num_classes, qk_norm,
                                 encoder_depth if encoder_depth is not None else min(8, depth),
                                 model_name or f"SiT-custom-{hidden}x{depth}/{patch}"),
               "steps": steps}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_lazy(path, obj, makers)
    return keys


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--family", choices=["sit", "repa"], required=True)
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="a released size (default XL unless "
                    "--hidden/--depth/--heads are given)")
    ap.add_argument("--hidden", type=int, default=None)
    ap.add_argument("--depth", type=int, default=None)
    ap.add_argument("--heads", type=int, default=None)
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--input-size", type=int, default=32, help="latent size: 32 for 256 px")
    ap.add_argument("--in-channels", type=int, default=4)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--no-learn-sigma", action="store_true", help="sit: C output channels instead of 2·C")
    ap.add_argument("--qk-norm", action="store_true", help="repa: the --qk-norm keys")
    ap.add_argument("--projector-dim", type=int, default=2048)
    ap.add_argument("--z-dims", default="768", help="repa: comma-separated projector output sizes")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    custom = (a.hidden, a.depth, a.heads)
    if a.shape and any(v is not None for v in custom):
        ap.error("give --shape or --hidden/--depth/--heads, not both")
    if any(v is not None for v in custom):
        if any(v is None for v in custom):
            ap.error("--hidden, --depth and --heads go together")
        hidden, depth, heads = custom
        name = None
    else:
        shape = a.shape or "XL"
        hidden, depth, heads = SHAPES[shape]
        name = f"SiT-{shape}/{a.patch}"
    if a.qk_norm and a.family != "repa":
        ap.error("--qk-norm is a REPA option")
    torch.set_num_threads(1)
    keys = write_checkpoint(a.out, a.family, hidden, depth, heads, a.patch, a.input_size, a.in_channels,
                            a.num_classes, not a.no_learn_sigma, a.qk_norm, a.seed, a.projector_dim,
                            tuple(int(z) for z in a.z_dims.split(",")), model_name=name)
    values = sum(torch.Size(s).numel() for _, s in keys)
    print(f"wrote {a.out}: {a.family}, hidden {hidden}, depth {depth}, heads {heads}, patch {a.patch}, "
          f"{len(keys)} tensors, {values:,} values per state_dict ({os.path.getsize(a.out) / 1e9:.2f} GB), "
          f"seed {a.seed}")


if __name__ == "__main__":
    main()
