#!/usr/bin/env python3
"""Decodes raw latents with a model folder's decoder (the PyTorch reference, tools/dit/vae.py) and writes 8-bit PNGs
quantised exactly like the server (ImageCodec.toByte: clamp(⌊127.5·x + 128⌋, 0, 255) in float32), so an
end-to-end check can compare the server's PNG with this one within one level.

  /usr/bin/python3 tools/decode_reference.py MODEL_DIR LATENTS.f32 OUT.png [--decoder vae|taesd]
      [--height h --width w] [--image-out IMAGE.f32]

LATENTS holds little-endian float32 [N, C, h, w] (C = the model's in_channels; h = w = input_size unless given).
With N > 1 the images are OUT-0.png, OUT-1.png, ... The decoder folder is MODEL_DIR/<decoder>, or the path that
config.json names under the key "vae" / "taesd" (relative to MODEL_DIR), as the server finds it.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit.vae import load_decoder  # noqa: E402


def to_bytes(x):
    """ImageCodec.toByte on float32: v = 127.5·x + 128; 0 when v ≤ 0 or NaN, 255 when v ≥ 255, else ⌊v⌋."""
    v = np.float32(127.5) * np.asarray(x, dtype=np.float32) + np.float32(128.0)
    with np.errstate(invalid="ignore"):
        out = np.where(v >= np.float32(255.0), 255.0, np.floor(v))
        out = np.where(v > 0, out, 0.0)  # also NaN
    return out.astype(np.uint8)


def decoder_folder(model_dir, which):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    named = cfg.get(which)
    folder = os.path.normpath(os.path.join(model_dir, named)) if named else os.path.join(model_dir, which)
    if not os.path.isdir(folder):
        raise SystemExit(f"{model_dir}: no {which} decoder folder ({folder})")
    return cfg, folder


def png_paths(out, n):
    if n == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    return [f"{stem}-{i}{ext or '.png'}" for i in range(n)]


def write_png(path, image_chw):
    from PIL import Image
    px = to_bytes(image_chw)
    if px.shape[0] == 3:
        Image.fromarray(np.ascontiguousarray(px.transpose(1, 2, 0)), "RGB").save(path)
    else:
        Image.fromarray(np.ascontiguousarray(px[0]), "L").save(path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("latents")
    ap.add_argument("out")
    ap.add_argument("--decoder", choices=["vae", "taesd"], default="vae")
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--image-out", default=None, help="also write the float32 image [N, C, H, W] (little-endian)")
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg, folder = decoder_folder(a.model_dir, a.decoder)
    c = int(cfg["in_channels"])
    h = a.height or int(cfg["input_size"])
    w = a.width or int(cfg["input_size"])
    raw = np.fromfile(a.latents, dtype="<f4")
    if raw.size == 0 or raw.size % (c * h * w):
        raise SystemExit(f"{a.latents}: {raw.size} floats is not a whole number of [{c}, {h}, {w}] latents")
    latent = torch.from_numpy(raw.astype(np.float32).reshape(-1, c, h, w))
    module = load_decoder(folder)
    if module.latent_channels != c:
        raise SystemExit(f"{folder}: latent_channels {module.latent_channels} != the model's in_channels {c}")
    with torch.no_grad():
        image = module(latent).numpy()
    if a.image_out:
        image.astype("<f4").tofile(a.image_out)
    for path, img in zip(png_paths(a.out, image.shape[0]), image):
        write_png(path, img)
        print(f"wrote {path} ({img.shape[2]}×{img.shape[1]})")


if __name__ == "__main__":
    main()
