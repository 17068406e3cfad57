#!/usr/bin/env python3
"""Writes a random-weight DiT model folder for benchmarks (not committed): by default DiT-S/2-shaped
(4×32×32 latents, patch 2, width 384, depth 12, 6 heads, learned sigma, 1000 classes).

  /usr/bin/python3 tools/make_bench_model.py runs/bench/dit-s2 [--shape S|B|XL]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT  # noqa: E402
from dit.vae import staged_folder  # noqa: E402
from make_fixtures import randomize  # noqa: E402

SHAPES = {"S": (384, 12, 6), "B": (768, 12, 12), "XL": (1152, 28, 16)}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="S")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--no-onnx", action="store_true")
    a = ap.parse_args()
    d, depth, heads = SHAPES[a.shape]
    torch.manual_seed(0)
    model = DiT(input_size=a.input_size, patch_size=2, in_channels=4, hidden_size=d, depth=depth, num_heads=heads,
                num_classes=1000, learn_sigma=True)
    randomize(model, 7).eval()
    conf = make_config(model, os.path.basename(os.path.normpath(a.out)), None, guidance_mode="first3",
                       sampler="ddim", steps=50, guidance=4.0, space="latent",
                       description=f"random-weight DiT-{a.shape}/2 for benchmarks")
    with staged_folder(a.out) as tmp:
        write_model_folder(model, tmp, conf, onnx=not a.no_onnx)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
