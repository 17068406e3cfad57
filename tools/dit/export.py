"""Writes a model folder in the project's format (docs/MODEL_FORMAT.md):

  config.json           constructor arguments, class names, noise schedule, guidance mode, sampler defaults
  weights.safetensors   the state_dict under the released key names, float32 little-endian
  model.onnx            x [N,C,H,W] float32, t [N] int64, y [N] int64 → out [N,C_out,H,W] float32, dynamic N
"""
import json
import os

import torch

from . import safetensors_io
from .model import CONSTRUCTOR_ARGS

FORMAT_VERSION = 1
ONNX_OPSET = 14  # torch 1.13 exports the parameter-free LayerNorm as primitive ops at 14; 17 fails


def make_config(model, name, class_names=None, guidance_mode="all", sampler="ddim", steps=50, guidance=4.0,
                eta=0.0, space="pixel", description=""):
    cfg = model.config()
    out = {"format_version": FORMAT_VERSION, "name": name, "description": description}
    out.update({k: cfg[k] for k in CONSTRUCTOR_ARGS})
    out["class_names"] = list(class_names) if class_names else [str(i) for i in range(cfg["num_classes"])]
    if len(out["class_names"]) != cfg["num_classes"]:
        raise ValueError("class_names must have num_classes entries")
    out["schedule"] = {"type": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000,
                       "respacing": "dit"}
    out["variance"] = "learned_range" if cfg["learn_sigma"] else "fixed_small"
    out["space"] = space  # "pixel": output is the image in [−1, 1]; "latent": SD VAE latent (scale 0.18215)
    out["guidance_mode"] = guidance_mode  # "first3" (released) or "all"
    out["defaults"] = {"sampler": sampler, "steps": steps, "guidance": guidance, "eta": eta}
    return out


def export_onnx(model, path, batch=2):
    cfg = model.config()
    model = model.eval()
    x = torch.randn(batch, cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    t = torch.tensor([10 * (i + 1) for i in range(batch)], dtype=torch.long)
    y = torch.tensor([i % cfg["num_classes"] for i in range(batch)], dtype=torch.long)
    dyn = {"x": {0: "N"}, "t": {0: "N"}, "y": {0: "N"}, "out": {0: "N"}}
    with torch.no_grad():
        torch.onnx.export(model, (x, t, y), path, input_names=["x", "t", "y"], output_names=["out"],
                          dynamic_axes=dyn, opset_version=ONNX_OPSET, do_constant_folding=True)
    import onnx
    onnx.checker.check_model(onnx.load(path))


def write_model_folder(model, out_dir, config, onnx=True):
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    sd = {k: v.float() for k, v in model.state_dict().items()}
    safetensors_io.write(os.path.join(out_dir, "weights.safetensors"), sd, {"format": "pt", "model": config["name"]})
    if onnx:
        export_onnx(model, os.path.join(out_dir, "model.onnx"))
