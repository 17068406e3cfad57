#!/usr/bin/env python3
"""Converts a DiT checkpoint into the project's model folder (config.json, weights.safetensors, model.onnx).

Accepted inputs:
  * a released-layout PyTorch state_dict (`DiT-XL-2-256x256.pt`, or a training checkpoint holding it under
    "ema" or "model"),
  * a diffusers-layout safetensors (`transformer/diffusion_pytorch_model.safetensors`; its `config.json`, if next
    to it, gives the head count). The per-block copies of the timestep and label embedders are de-duplicated (they
    must be equal) and to_q/to_k/to_v are fused into qkv.

  /usr/bin/python3 tools/convert.py CHECKPOINT OUT_DIR [--name NAME] [--num-heads H] [--class-names FILE]
      [--space latent|pixel] [--guidance-mode first3|all] [--no-onnx]
"""
import argparse
import json
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import safetensors_io  # noqa: E402
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT, sincos_pos_embed  # noqa: E402

KNOWN_HEADS = {384: 6, 768: 12, 1024: 16, 1152: 16}


def load_any(path):
    if path.endswith(".safetensors"):
        sd, _ = safetensors_io.read(path)
        return sd
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and "ema" in obj and isinstance(obj["ema"], dict):
        obj = obj["ema"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def is_diffusers(sd):
    return any(k.startswith("transformer_blocks.") for k in sd)


def from_diffusers(sd):
    """diffusers DiTTransformer2DModel / Transformer2DModel (ada_norm_zero) keys → released keys."""
    out = {}
    depth = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"transformer_blocks\.(\d+)\.", k)] if m)
    out["x_embedder.proj.weight"] = sd["pos_embed.proj.weight"]
    out["x_embedder.proj.bias"] = sd["pos_embed.proj.bias"]
    shared = {
        "t_embedder.mlp.0.weight": "norm1.emb.timestep_embedder.linear_1.weight",
        "t_embedder.mlp.0.bias": "norm1.emb.timestep_embedder.linear_1.bias",
        "t_embedder.mlp.2.weight": "norm1.emb.timestep_embedder.linear_2.weight",
        "t_embedder.mlp.2.bias": "norm1.emb.timestep_embedder.linear_2.bias",
        "y_embedder.embedding_table.weight": "norm1.emb.class_embedder.embedding_table.weight",
    }
    for ours, theirs in shared.items():
        first = sd[f"transformer_blocks.0.{theirs}"]
        for i in range(1, depth):
            other = sd.get(f"transformer_blocks.{i}.{theirs}")
            if other is not None and not torch.equal(other, first):
                raise ValueError(f"transformer_blocks.{i}.{theirs} differs from block 0: the per-block embedder "
                                 f"copies must be identical to be de-duplicated")
        out[ours] = first
    for i in range(depth):
        b = f"transformer_blocks.{i}."
        for kind in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat(
                [sd[b + f"attn1.to_q.{kind}"], sd[b + f"attn1.to_k.{kind}"], sd[b + f"attn1.to_v.{kind}"]], 0)
            out[f"blocks.{i}.attn.proj.{kind}"] = sd[b + f"attn1.to_out.0.{kind}"]
            out[f"blocks.{i}.mlp.fc1.{kind}"] = sd[b + f"ff.net.0.proj.{kind}"]
            out[f"blocks.{i}.mlp.fc2.{kind}"] = sd[b + f"ff.net.2.{kind}"]
            out[f"blocks.{i}.adaLN_modulation.1.{kind}"] = sd[b + f"norm1.linear.{kind}"]
    out["final_layer.adaLN_modulation.1.weight"] = sd["proj_out_1.weight"]
    out["final_layer.adaLN_modulation.1.bias"] = sd["proj_out_1.bias"]
    out["final_layer.linear.weight"] = sd["proj_out_2.weight"]
    out["final_layer.linear.bias"] = sd["proj_out_2.bias"]
    return out


def infer_config(sd, num_heads=None, input_size=None):
    w = sd["x_embedder.proj.weight"]
    hidden, in_ch, p = w.shape[0], w.shape[1], w.shape[2]
    depth = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"blocks\.(\d+)\.", k)] if m)
    out_ch = sd["final_layer.linear.weight"].shape[0] // (p * p)
    if out_ch not in (in_ch, 2 * in_ch):
        raise ValueError(f"final_layer.linear gives {out_ch} output channels for {in_ch} input channels; "
                         f"expected {in_ch} or {2 * in_ch}")
    if "pos_embed" in sd:
        grid = math.isqrt(sd["pos_embed"].shape[1])
        input_size = grid * p
    elif input_size is None:
        raise ValueError("the checkpoint has no pos_embed: pass --input-size")
    heads = num_heads or KNOWN_HEADS.get(hidden, max(1, hidden // 64))
    return dict(input_size=input_size, patch_size=p, in_channels=in_ch, hidden_size=hidden, depth=depth,
                num_heads=heads, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden, class_dropout_prob=0.1,
                num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1, learn_sigma=out_ch == 2 * in_ch)


def convert(src, num_heads=None, input_size=None):
    """Returns (DiT with the checkpoint's weights, inferred constructor config)."""
    sd = load_any(src)
    diffusers_cfg = {}
    if is_diffusers(sd):
        cfg_path = os.path.join(os.path.dirname(src), "config.json")
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                diffusers_cfg = json.load(f)
        sd = from_diffusers(sd)
        num_heads = num_heads or diffusers_cfg.get("num_attention_heads")
        input_size = input_size or diffusers_cfg.get("sample_size")
    cfg = infer_config(sd, num_heads, input_size)
    if "pos_embed" not in sd:
        grid = cfg["input_size"] // cfg["patch_size"]
        sd["pos_embed"] = torch.from_numpy(sincos_pos_embed(cfg["hidden_size"], grid)).float().unsqueeze(0)
    model = DiT(**cfg)
    missing, unexpected = model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"{src}: missing keys {missing[:8]}, unexpected keys {unexpected[:8]}")
    return model.eval(), cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--name", default=None)
    ap.add_argument("--num-heads", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--class-names", default=None, help="text file, one class name per line")
    ap.add_argument("--space", choices=["latent", "pixel"], default=None,
                    help="default: latent for 4-channel models, else pixel")
    ap.add_argument("--guidance-mode", choices=["first3", "all"], default="first3")
    ap.add_argument("--guidance", type=float, default=4.0)
    ap.add_argument("--sampler", choices=["ddpm", "ddim"], default="ddpm")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--no-onnx", action="store_true")
    a = ap.parse_args()
    model, cfg = convert(a.checkpoint, a.num_heads, a.input_size)
    names = None
    if a.class_names:
        with open(a.class_names) as f:
            names = [line.strip() for line in f if line.strip()]
    space = a.space or ("latent" if cfg["in_channels"] == 4 else "pixel")
    name = a.name or os.path.basename(os.path.normpath(a.out_dir))
    conf = make_config(model, name, names, a.guidance_mode, a.sampler, a.steps, a.guidance, 0.0, space,
                       description=f"converted from {os.path.basename(a.checkpoint)}")
    write_model_folder(model, a.out_dir, conf, onnx=not a.no_onnx)
    print(f"wrote {a.out_dir}: {cfg}")


if __name__ == "__main__":
    main()
