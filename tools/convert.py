#!/usr/bin/env python3
"""Converts a DiT, SiT or REPA checkpoint into the project's model folder (config.json, weights.safetensors,
model.onnx).

--family dit (the default; config.json format_version 1, as before) accepts:
  * a released-layout PyTorch state_dict (`DiT-XL-2-256x256.pt`, or a training checkpoint holding it under
    "ema" or "model"),
  * a diffusers-layout safetensors (`transformer/diffusion_pytorch_model.safetensors`; its `config.json`, if next
    to it, gives the head count). The per-block copies of the timestep and label embedders are de-duplicated (they
    must be equal) and to_q/to_k/to_v are fused into qkv.

  /usr/bin/python3 tools/convert.py CHECKPOINT OUT_DIR [--name NAME] [--num-heads H] [--class-names FILE]
      [--space latent|pixel] [--guidance-mode first3|all] [--no-onnx] [--onnx-external-data]

--family sit|repa (flow models, config.json format_version 2 with family and process; docs/MODEL_FAMILIES.md):

  /usr/bin/python3 tools/convert.py --family sit SiT-XL-2-256x256.pt OUT_DIR
  /usr/bin/python3 tools/convert.py --family repa last.pt OUT_DIR
      [--sampler euler|heun|euler_maruyama|dpmpp_2m] [--steps N] [--guidance G] [--guidance-interval LO HI |
      --no-guidance-interval] [--timestep-shift S] [--guidance-mode first3|all] [--num-heads H] ...

  * sit: SiT's released state_dict (or a training checkpoint's "ema"); the learned-σ half of final_layer.linear is
    dropped (C output channels kept per pixel); guidance on the first 3 channels, as its forward_with_cfg;
  * repa: REPA's last.pt, its "ema" state_dict (not "model"); projectors.* are dropped (training only) with a line
    saying so; blocks.N.attn.{q,k}_norm.* (--qk-norm models) give qk_norm true; guidance on all channels.
  A checkpoint key that the model does not use, or a key it needs that is missing, fails the conversion naming it.
  The graph's t input is float32 (the family's network time).

A graph over the 2 GB protobuf limit (DiT-XL/2) keeps its weights in one file beside it, model.onnx.data;
--onnx-external-data does that for a smaller one too. The folder is written into a temporary folder next to
OUT_DIR (`.NAME.tmp-*`), every file is read back and checked, and only then is it renamed to OUT_DIR (replacing
an older one): a failed or interrupted run leaves OUT_DIR as it was. It prints what it wrote.

With --vae it converts an image decoder instead (docs/DECODERS.md) into a diffusers folder (config.json,
diffusion_pytorch_model.safetensors, decoder.onnx):

  /usr/bin/python3 tools/convert.py --vae SRC OUT_DIR [--scaling-factor F] [--norm-num-groups G] [--no-onnx]

  * SRC a diffusers AutoencoderKL or AutoencoderTiny folder (or its diffusion_pytorch_model.safetensors): validated
    and copied as is;
  * SRC an original LDM/CompVis autoencoder (.ckpt/.pt/.safetensors; keys `first_stage_model.decoder.*` in a full
    Stable Diffusion checkpoint, or bare `decoder.*`/`encoder.*`): the decoder keys are renamed to diffusers' and
    the config (sd-vae-ft layout) is inferred from the shapes; the encoder is not carried over;
  * SRC an original TAESD decoder (`taesd_decoder.pth`/`.safetensors`, keys `1.weight`, `3.conv.0.weight`, ...).
The folder is written next to OUT_DIR and moved into place when complete.
"""
import argparse
import json
import math
import os
import re
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import safetensors_io  # noqa: E402
from dit.export import make_config, make_config_v2, write_model_folder  # noqa: E402
from dit.flow import FLOW_SAMPLERS, VP_SAMPLERS  # noqa: E402
from dit.model import DiT, sincos_pos_embed  # noqa: E402
from dit import vae  # noqa: E402

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
    if "blocks.0.attn.q_norm.weight" in sd and not num_heads:  # qk-norm's size is the head dimension
        heads = hidden // sd["blocks.0.attn.q_norm.weight"].shape[0]
    return dict(input_size=input_size, patch_size=p, in_channels=in_ch, hidden_size=hidden, depth=depth,
                num_heads=heads, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden, class_dropout_prob=0.1,
                num_classes=sd["y_embedder.embedding_table.weight"].shape[0] - 1, learn_sigma=out_ch == 2 * in_ch,
                qk_norm="blocks.0.attn.q_norm.weight" in sd)


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


# --------------------------------------------------------------------------------------------------------------
# Flow families (--family sit|repa): docs/MODEL_FAMILIES.md

# what each family's config gets when the command line does not say otherwise
FLOW_DEFAULTS = {
    # SiT's sample.py: cfg-scale 4.0, 250 steps; its SDE mode (Euler–Maruyama, diffusion "sigma", last step "Mean"
    # of 0.04) is our euler_maruyama exactly (its ODE default, adaptive dopri5, is not one of our solvers)
    "sit": dict(sampler="euler_maruyama", steps=250, guidance=4.0, guidance_mode="first3", guidance_interval=None),
    # REPA's FID runs (generate.py --mode sde --num-steps 250 --cfg-scale 1.8 --guidance-high 0.7)
    "repa": dict(sampler="euler_maruyama", steps=250, guidance=1.8, guidance_mode="all", guidance_interval=[0.0, 0.7]),
}
REPA_HEADS = {"S": 6, "B": 12, "L": 16, "XL": 16}  # SiT_models in REPA's models/sit.py, by size


def _arg(args, name):
    if isinstance(args, dict):
        return args.get(name)
    return getattr(args, name, None)


def load_flow_state_dict(path, family):
    """(state_dict, args or None, notes) of a SiT or REPA checkpoint as released."""
    notes = []
    if path.endswith(".safetensors"):
        sd, _ = safetensors_io.read(path)
        obj = sd
    else:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a checkpoint dict ({type(obj).__name__})")
    args = None
    if family == "repa":
        if not isinstance(obj.get("ema"), dict):
            raise ValueError(f"{path}: a REPA checkpoint holds its weights under \"ema\"; this one has the entries "
                             f"{sorted(obj)[:8]}")
        sd, args = obj["ema"], obj.get("args")
        notes.append(f"using the \"ema\" state_dict of {os.path.basename(path)}"
                     + (f" (steps {obj['steps']})" if "steps" in obj else ""))
    elif "ema" in obj and isinstance(obj["ema"], dict):  # a SiT training checkpoint (model/ema/opt/args)
        sd, args = obj["ema"], obj.get("args")
        notes.append(f"using the \"ema\" state_dict of {os.path.basename(path)}")
    else:
        sd = obj
    not_tensors = sorted(k for k, v in sd.items() if not torch.is_tensor(v))
    if not_tensors:
        raise ValueError(f"{path}: entries that are not tensors: {not_tensors[:8]}")
    return dict(sd), args, notes


def convert_flow(src, family, num_heads=None):
    """Returns (DiT-shaped model with the checkpoint's weights, constructor config, notes to print). The model is
    the network only: family decides what t and the output mean (tools/dit/flow.py)."""
    sd, args, notes = load_flow_state_dict(src, family)
    if args is not None:
        path_type, prediction = _arg(args, "path_type"), _arg(args, "prediction")
        if path_type is not None and path_type != "linear":
            raise ValueError(f"{src}: trained with path_type {path_type!r}; only the linear path is supported")
        if prediction is not None and prediction not in ("v", "velocity"):
            raise ValueError(f"{src}: trained with prediction {prediction!r}; only velocity (v) is supported")
    if family == "repa":
        dropped = sorted(k for k in sd if k.startswith("projectors."))
        for k in dropped:
            del sd[k]
        notes.append(f"dropped {len(dropped)} tensors projectors.* (REPA's training-only projection heads onto the "
                     f"encoder features; sampling does not use them)")
    needed = ("x_embedder.proj.weight", "final_layer.linear.weight", "final_layer.linear.bias",
              "y_embedder.embedding_table.weight", "blocks.0.mlp.fc1.weight", "pos_embed")
    missing = [k for k in needed if k not in sd]
    if missing:
        raise ValueError(f"{src}: missing keys {missing}")
    w = sd["x_embedder.proj.weight"]
    hidden, c, p = w.shape[0], w.shape[1], w.shape[2]
    rows = sd["final_layer.linear.weight"].shape[0]
    if family == "sit" and rows == p * p * 2 * c:  # learned σ: per pixel (a, b) the rows (a·p + b)·2C + [C, 2C)
        weight = sd["final_layer.linear.weight"].reshape(p * p, 2 * c, hidden)
        bias = sd["final_layer.linear.bias"].reshape(p * p, 2 * c)
        sd["final_layer.linear.weight"] = weight[:, :c].reshape(p * p * c, hidden).clone()
        sd["final_layer.linear.bias"] = bias[:, :c].reshape(p * p * c).clone()
        notes.append(f"dropped the learned-σ half of final_layer.linear: {2 * c} → {c} output channels per pixel "
                     f"(a flow sampler does not use it)")
    elif rows != p * p * c:
        raise ValueError(f"{src}: final_layer.linear has {rows} outputs; a {family} model with {c} channels and "
                         f"patch {p} has {p * p * c}" + (f" (or {2 * p * p * c} with learned σ)"
                                                         if family == "sit" else ""))
    qk_norm = "blocks.0.attn.q_norm.weight" in sd
    if args is not None and _arg(args, "qk_norm") is not None and bool(_arg(args, "qk_norm")) != qk_norm:
        raise ValueError(f"{src}: args.qk_norm is {_arg(args, 'qk_norm')} but the weights "
                         f"{'have' if qk_norm else 'lack'} blocks.N.attn.q_norm")
    heads = num_heads
    if qk_norm:  # the norm's size is the head dimension: it fixes the head count
        from_norm = hidden // sd["blocks.0.attn.q_norm.weight"].shape[0]
        if heads is not None and heads != from_norm:
            raise ValueError(f"{src}: --num-heads {heads}, but the qk-norm weights have head dimension "
                             f"{hidden // from_norm} (→ {from_norm} heads)")
        heads = from_norm
    if heads is None and args is not None and isinstance(_arg(args, "model"), str):
        m = re.fullmatch(r"SiT-(S|B|L|XL)/\d+", _arg(args, "model"))
        heads = REPA_HEADS[m.group(1)] if m else None
    cfg = infer_config(sd, heads)
    cfg.update(learn_sigma=False, qk_norm=qk_norm)
    if args is not None and _arg(args, "num_classes") is not None and _arg(args, "num_classes") != cfg["num_classes"]:
        raise ValueError(f"{src}: args.num_classes is {_arg(args, 'num_classes')} but y_embedder has "
                         f"{cfg['num_classes'] + 1} rows (classes + the null class)")
    model = DiT(**cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    unused = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    if unused or missing:
        parts = []
        if unused:
            parts.append(f"{len(unused)} keys the {family} model does not use: {unused[:8]}"
                         + (" …" if len(unused) > 8 else ""))
        if missing:
            parts.append(f"{len(missing)} keys it needs are missing: {missing[:8]}"
                         + (" …" if len(missing) > 8 else ""))
        raise ValueError(f"{src}: " + "; ".join(parts))
    wrong = [f"{k} {list(sd[k].shape)} (expected {list(s)})" for k, s in expected.items() if tuple(sd[k].shape) != s]
    if wrong:
        raise ValueError(f"{src}: tensors of the wrong shape: {wrong[:8]}")
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return model.eval(), cfg, notes


# --------------------------------------------------------------------------------------------------------------
# Image decoders (--vae)

LDM_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                    "nin_shortcut": "conv_shortcut"}
LDM_ATTENTION_PARTS = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
LDM_IGNORED_PREFIXES = ("encoder.", "quant_conv.", "loss.", "model_ema.")  # encoder half, training-only state


def load_tensors(path):
    """A checkpoint's tensors: safetensors, or a torch file (a state_dict, possibly under "state_dict")."""
    if path.endswith(".safetensors"):
        sd, _ = safetensors_io.read(path)
        return sd
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state_dict")
    return {k: v for k, v in obj.items() if torch.is_tensor(v)}


def ldm_key(key, num_up):
    """One original LDM autoencoder key → its diffusers name, or None when it is not a decode-path key we know.
    LDM numbers the up levels by resolution (up.0 is the full-resolution level, which has no upsampler) and the
    decoder runs them from the last; diffusers numbers the up blocks in running order: up.i = up_blocks.(n−1−i)."""
    if re.fullmatch(r"(post_quant_conv|decoder\.conv_in|decoder\.conv_out)\.(weight|bias)", key):
        return key
    m = re.fullmatch(r"decoder\.norm_out\.(weight|bias)", key)
    if m:
        return f"decoder.conv_norm_out.{m.group(1)}"
    m = re.fullmatch(r"decoder\.mid\.block_([12])\.(\w+)\.(weight|bias)", key)
    if m and m.group(2) in LDM_RESNET_PARTS:
        return f"decoder.mid_block.resnets.{int(m.group(1)) - 1}.{LDM_RESNET_PARTS[m.group(2)]}.{m.group(3)}"
    m = re.fullmatch(r"decoder\.mid\.attn_1\.(\w+)\.(weight|bias)", key)
    if m and m.group(1) in LDM_ATTENTION_PARTS:
        return f"decoder.mid_block.attentions.0.{LDM_ATTENTION_PARTS[m.group(1)]}.{m.group(2)}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.block\.(\d+)\.(\w+)\.(weight|bias)", key)
    if m and m.group(3) in LDM_RESNET_PARTS and int(m.group(1)) < num_up:
        i = num_up - 1 - int(m.group(1))
        return f"decoder.up_blocks.{i}.resnets.{m.group(2)}.{LDM_RESNET_PARTS[m.group(3)]}.{m.group(4)}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if m and int(m.group(1)) < num_up:
        return f"decoder.up_blocks.{num_up - 1 - int(m.group(1))}.upsamplers.0.conv.{m.group(2)}"
    return None


def ldm_vae_to_diffusers(sd):
    """Original LDM/CompVis autoencoder tensors → diffusers AutoencoderKL decode-path tensors (encoder dropped).
    The attention projections are 1×1 convolutions there and linears here: the trailing unit dimensions go."""
    if any(k.startswith("first_stage_model.") for k in sd):  # a full Stable Diffusion checkpoint
        sd = {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}
    num_up = 1 + max((int(m.group(1)) for k in sd for m in [re.match(r"decoder\.up\.(\d+)\.", k)] if m), default=-1)
    if num_up == 0:
        raise ValueError("no decoder.up.* keys: not an LDM autoencoder checkpoint")
    out, unknown = {}, []
    for k, v in sd.items():
        if k.startswith(LDM_IGNORED_PREFIXES):
            continue
        new = ldm_key(k, num_up)
        if new is None:
            unknown.append(k)
            continue
        if ".attentions.0.to_" in new and new.endswith(".weight") and v.dim() == 4:
            if tuple(v.shape[2:]) != (1, 1):
                raise ValueError(f"{k}: expected a 1×1 convolution, found shape {list(v.shape)}")
            v = v.reshape(v.shape[0], v.shape[1])
        out[new] = v
    if unknown:
        raise ValueError(f"{len(unknown)} keys of the LDM autoencoder are not part of the known decoder layout: "
                         f"{sorted(unknown)[:8]}")
    return out


def infer_kl_config(sd, scaling_factor=None, norm_num_groups=None):
    """A diffusers AutoencoderKL config (the sd-vae-ft layout) from diffusers-named decoder tensors. GroupNorm's
    group count is not visible in the shapes: 32 unless given (every LDM/SD autoencoder uses 32)."""
    n = 1 + max(int(m.group(1)) for k in sd for m in [re.match(r"decoder\.up_blocks\.(\d+)\.", k)] if m)
    widths = [sd[f"decoder.up_blocks.{i}.resnets.0.conv2.weight"].shape[0] for i in range(n)]
    resnets = {int(m.group(1)) for k in sd for m in [re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", k)] if m}
    cfg = dict(vae.SD_VAE_FT_EMA_CONFIG)
    cfg.update({
        "_diffusers_version": vae.DIFFUSERS_VERSION,
        "block_out_channels": list(reversed(widths)), "down_block_types": ["DownEncoderBlock2D"] * n,
        "up_block_types": ["UpDecoderBlock2D"] * n, "layers_per_block": len(resnets) - 1,
        "latent_channels": sd["decoder.conv_in.weight"].shape[1],
        "out_channels": sd["decoder.conv_out.weight"].shape[0],
        "norm_num_groups": norm_num_groups or 32,
        "scaling_factor": scaling_factor if scaling_factor is not None else 0.18215, "shift_factor": None,
        "use_post_quant_conv": "post_quant_conv.weight" in sd,
        "mid_block_add_attention": any(".mid_block.attentions." in k for k in sd),
    })
    return cfg


def taesd_original_to_diffusers(sd):
    """madebyollin's taesd_decoder file (its layer 0 is the clamp, so every index is one higher than diffusers')
    → diffusers `decoder.layers.*` tensors and the AutoencoderTiny config inferred from them."""
    out = {}
    for k, v in sd.items():
        idx, rest = k.split(".", 1)
        out[f"decoder.layers.{int(idx) - 1}.{rest}"] = v
    # plain convolutions end a stage; blocks (keys .conv.0.weight) are counted in between
    indices = sorted({int(k.split(".")[2]) for k in out})
    stages, count = [], 0
    for i in indices[1:]:
        if f"decoder.layers.{i}.conv.0.weight" in out:
            count += 1
        else:
            stages.append(count)
            count = 0
    widths = [out["decoder.layers.0.weight"].shape[0]] * len(stages)
    cfg = dict(vae.TAESD_CONFIG, decoder_block_out_channels=widths, encoder_block_out_channels=widths,
               num_decoder_blocks=stages, num_encoder_blocks=list(reversed(stages)),
               latent_channels=out["decoder.layers.0.weight"].shape[1],
               out_channels=out[f"decoder.layers.{indices[-1]}.weight"].shape[0])
    return out, cfg


def is_taesd_original(sd):
    return "1.weight" in sd and "0.weight" not in sd and all(re.match(r"\d+\.", k) for k in sd)


def convert_vae(src, out_dir, scaling_factor=None, norm_num_groups=None, onnx=True):
    """Converts or copies an image decoder into a diffusers folder at out_dir; returns the loaded decoder."""
    src_folder = src if os.path.isdir(src) else None
    if src_folder is None and os.path.basename(src) == vae.WEIGHTS_FILE \
            and os.path.exists(os.path.join(os.path.dirname(src), "config.json")):
        src_folder = os.path.dirname(src) or "."
    with vae.staged_folder(out_dir) as tmp:
        if src_folder is not None:  # a diffusers folder: validate, then copy as is
            if scaling_factor is not None or norm_num_groups is not None:
                raise ValueError("--scaling-factor and --norm-num-groups apply to LDM checkpoints, not to a diffusers "
                                 "folder (edit its config.json)")
            module = vae.load_decoder(src_folder)
            for name in ("config.json", vae.WEIGHTS_FILE):
                shutil.copyfile(os.path.join(src_folder, name), os.path.join(tmp, name))
        else:
            sd = load_tensors(src)
            if is_taesd_original(sd):
                sd, cfg = taesd_original_to_diffusers(sd)
            else:
                if any(".up_blocks." in k for k in sd):  # diffusers names without a config.json
                    sd = vae.decoder_state_dict(sd)
                else:
                    sd = ldm_vae_to_diffusers(sd)
                cfg = infer_kl_config(sd, scaling_factor, norm_num_groups)
            module = vae.load_decoder_state(vae.decoder_from_config(cfg), sd, src).eval()
            vae.save_decoder_folder(module, cfg, tmp, encoder_stub=False)
            vae.load_decoder(tmp)  # what was written reads back
        if onnx:
            vae.export_decoder_onnx(module, os.path.join(tmp, vae.ONNX_FILE))
    return module


def describe(folder, sizes, cfg=None):
    """What a model folder write produced, one line per file."""
    lines = [f"wrote {folder}" + (f": {cfg}" if cfg else "")]
    for name, size in sizes.items():
        note = {"model.onnx": " (graph; weights in model.onnx.data)" if "model.onnx.data" in sizes else " (graph)",
                "model.onnx.data": " (the graph's weights, ONNX external data)"}.get(name, "")
        amount = f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size} B"
        lines.append(f"  {name:<22} {amount:>12}{note}")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--vae", action="store_true", help="convert an image decoder (VAE or TAESD), not a DiT")
    ap.add_argument("--family", choices=["dit", "sit", "repa"], default="dit",
                    help="dit (default): DiT, config format 1 as before; sit / repa: flow models (format 2)")
    ap.add_argument("--scaling-factor", type=float, default=None,
                    help="--vae from an LDM checkpoint: the latent scaling (default 0.18215)")
    ap.add_argument("--norm-num-groups", type=int, default=None,
                    help="--vae from an LDM checkpoint: GroupNorm groups (default 32)")
    ap.add_argument("--name", default=None)
    ap.add_argument("--num-heads", type=int, default=None)
    ap.add_argument("--input-size", type=int, default=None)
    ap.add_argument("--class-names", default=None, help="text file, one class name per line")
    ap.add_argument("--space", choices=["latent", "pixel"], default=None,
                    help="default: latent for 4-channel models, else pixel")
    ap.add_argument("--guidance-mode", choices=["first3", "all"], default=None,
                    help="default: first3 (dit, sit), all (repa)")
    ap.add_argument("--guidance", type=float, default=None, help="default: 4.0 (dit, sit), 1.8 (repa)")
    ap.add_argument("--sampler", choices=sorted(set(VP_SAMPLERS) | set(FLOW_SAMPLERS)), default=None,
                    help="default: ddpm (dit), euler_maruyama (sit, repa); dit takes ddpm|ddim|dpmpp_2m, sit and repa "
                         "euler|heun|euler_maruyama|dpmpp_2m")
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--guidance-interval", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                    help="sit/repa: guide only steps whose network time τ is in [LO, HI] (default: repa [0, 0.7], "
                         "sit none)")
    ap.add_argument("--no-guidance-interval", action="store_true", help="sit/repa: guide every step")
    ap.add_argument("--timestep-shift", type=float, default=1.0, help="sit/repa: default timestep shift")
    ap.add_argument("--no-onnx", action="store_true")
    ap.add_argument("--onnx-external-data", action="store_true",
                    help="keep the ONNX graph's weights in model.onnx.data beside it even when the graph is under "
                         "2 GB (a graph over 2 GB always does)")
    a = ap.parse_args(argv)
    if a.vae:
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        module = convert_vae(a.checkpoint, a.out_dir, a.scaling_factor, a.norm_num_groups, onnx=not a.no_onnx)
        print(f"wrote {a.out_dir}: {module.class_name} f={module.scale_factor} {module.config}")
        return
    if a.family != "dit":
        convert_flow_main(a)
        return
    if a.guidance_interval is not None or a.no_guidance_interval or a.timestep_shift != 1.0:
        ap.error("--guidance-interval, --no-guidance-interval and --timestep-shift are for --family sit|repa")
    if a.sampler is not None and a.sampler not in VP_SAMPLERS:
        ap.error(f"--sampler {a.sampler} does not fit a dit model: it takes {', '.join(VP_SAMPLERS)}")
    a.sampler = a.sampler or "ddpm"
    a.guidance = 4.0 if a.guidance is None else a.guidance
    a.guidance_mode = a.guidance_mode or "first3"
    model, cfg = convert(a.checkpoint, a.num_heads, a.input_size)
    if cfg["qk_norm"]:
        raise SystemExit("convert.py: the checkpoint has qk-norm weights (blocks.N.attn.q_norm), which a format-1 DiT "
                         "folder cannot declare: convert it with --family repa")
    names = None
    if a.class_names:
        with open(a.class_names) as f:
            names = [line.strip() for line in f if line.strip()]
    space = a.space or ("latent" if cfg["in_channels"] == 4 else "pixel")
    name = a.name or os.path.basename(os.path.normpath(a.out_dir))
    conf = make_config(model, name, names, a.guidance_mode, a.sampler, a.steps, a.guidance, 0.0, space,
                       description=f"converted from {os.path.basename(a.checkpoint)}")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with vae.staged_folder(a.out_dir) as tmp:
        sizes = write_model_folder(model, tmp, conf, onnx=not a.no_onnx, onnx_external_data=a.onnx_external_data
                                   or None)
        extra = sorted(set(os.listdir(tmp)) - set(sizes))
        if extra:
            raise RuntimeError(f"unexpected files in the model folder: {extra}")
    print(describe(a.out_dir, sizes, cfg))


def convert_flow_main(a):
    d = FLOW_DEFAULTS[a.family]
    if a.sampler is not None and a.sampler not in FLOW_SAMPLERS:
        raise SystemExit(f"convert.py: --sampler {a.sampler} does not fit a {a.family} model: it takes "
                         f"{', '.join(FLOW_SAMPLERS)}")
    if a.input_size is not None:
        raise SystemExit("convert.py: --input-size is for checkpoints without pos_embed; SiT and REPA have one")
    model, cfg, notes = convert_flow(a.checkpoint, a.family, a.num_heads)
    for line in notes:
        print(line)
    names = None
    if a.class_names:
        with open(a.class_names) as f:
            names = [line.strip() for line in f if line.strip()]
    interval = None if a.no_guidance_interval else (a.guidance_interval or d["guidance_interval"])
    conf = make_config_v2(model, a.name or os.path.basename(os.path.normpath(a.out_dir)), a.family, names,
                          guidance_mode=a.guidance_mode or d["guidance_mode"], sampler=a.sampler or d["sampler"],
                          steps=a.steps if a.steps is not None else d["steps"],
                          guidance=a.guidance if a.guidance is not None else d["guidance"],
                          guidance_interval=interval, timestep_shift=a.timestep_shift,
                          space=a.space or ("latent" if cfg["in_channels"] == 4 else "pixel"),
                          description=f"converted from {os.path.basename(a.checkpoint)} ({a.family})")
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with vae.staged_folder(a.out_dir) as tmp:
        sizes = write_model_folder(model, tmp, conf, onnx=not a.no_onnx,
                                   onnx_external_data=a.onnx_external_data or None)
        extra = sorted(set(os.listdir(tmp)) - set(sizes))
        if extra:
            raise RuntimeError(f"unexpected files in the model folder: {extra}")
    print(describe(a.out_dir, sizes, cfg))


if __name__ == "__main__":
    main()
