#!/usr/bin/env python3
"""Writes the bundled model folder from a training result (ema.pt or checkpoint.pt: the EMA weights).

  /usr/bin/python3 tools/export_bundled.py runs/gpu/ema.pt models/fashion-dit
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import data as fmnist  # noqa: E402
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT  # noqa: E402

DEFAULT_GUIDANCE = 3.0
DEFAULT_STEPS = 50


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("checkpoint")
    ap.add_argument("out_dir")
    a = ap.parse_args()
    ck = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    model = DiT(**ck["config"])
    model.load_state_dict(ck["ema"])
    model.eval()
    name = os.path.basename(os.path.normpath(a.out_dir))
    conf = make_config(model, name, fmnist.CLASS_NAMES, guidance_mode="all", sampler="ddim", steps=DEFAULT_STEPS,
                       guidance=DEFAULT_GUIDANCE, space="pixel",
                       description="Class-conditional DiT trained on Fashion-MNIST (28x28 grayscale), "
                                   f"EMA weights after {ck['step']} steps")
    write_model_folder(model, a.out_dir, conf)
    print(f"wrote {a.out_dir}")


if __name__ == "__main__":
    main()
