#!/usr/bin/env python3
"""Writes a bundled model folder from a training result (ema.pt or checkpoint.pt: the EMA weights).

  /usr/bin/python3 tools/export_bundled.py runs/gpu/ema.pt models/fashion-dit
  /usr/bin/python3 tools/export_bundled.py runs/latent/checkpoint.pt models/fashion-latent-dit \\
      --vae runs/vae/export --guidance 6

A latent model (4 input channels) needs --vae, the diffusers AutoencoderKL folder tools/train_vae.py --export wrote:
it is copied into the model folder as vae/ (config.json, diffusion_pytorch_model.safetensors, decoder.onnx).
"""
import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import data as fmnist  # noqa: E402
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT  # noqa: E402
from dit.vae import ONNX_FILE, WEIGHTS_FILE, staged_folder  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    ap.add_argument("--vae", default=None, help="latent models: the AutoencoderKL folder to bundle as vae/")
    ap.add_argument("--guidance", type=float, default=3.0, help="default guidance scale (default 3)")
    ap.add_argument("--steps", type=int, default=50, help="default DDIM steps (default 50)")
    a = ap.parse_args()
    ck = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    model = DiT(**ck["config"])
    model.load_state_dict(ck["ema"])
    model.eval()
    latent = ck["config"]["in_channels"] == 4
    if latent and not a.vae:
        raise SystemExit("a latent model needs --vae")
    name = os.path.basename(os.path.normpath(a.out_dir))
    size = ck["config"]["input_size"]
    what = (f"Class-conditional latent DiT trained on Fashion-MNIST latents ({size}x{size}x4; the bundled vae/ "
            f"decodes them to 32x32 grayscale, Fashion-MNIST padded by 2)" if latent
            else "Class-conditional DiT trained on Fashion-MNIST (28x28 grayscale)")
    conf = make_config(model, name, fmnist.CLASS_NAMES, guidance_mode="all", sampler="ddim", steps=a.steps,
                       guidance=a.guidance, space="latent" if latent else "pixel",
                       description=f"{what}, EMA weights after {ck['step']} steps")
    with staged_folder(a.out_dir) as tmp:
        write_model_folder(model, tmp, conf)
        if latent:
            os.makedirs(os.path.join(tmp, "vae"))
            for f in ("config.json", WEIGHTS_FILE, ONNX_FILE):
                shutil.copy2(os.path.join(a.vae, f), os.path.join(tmp, "vae", f))
        for keep in ("README.md", "card"):  # the model card is written by hand and by the evaluation
            old = os.path.join(a.out_dir, keep)
            if os.path.isdir(old):
                shutil.copytree(old, os.path.join(tmp, keep))
            elif os.path.exists(old):
                shutil.copy2(old, os.path.join(tmp, keep))
    print(f"wrote {a.out_dir}")


if __name__ == "__main__":
    main()
