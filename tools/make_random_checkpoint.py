#!/usr/bin/env python3
"""Writes a random-weight DiT checkpoint in the released layout (a plain PyTorch state_dict under the released key
names, as `DiT-XL-2-256x256.pt` is distributed), seeded, for the full-size benchmark (tools/bench_full_size.sh).
Not a useful model: every weight is Gaussian (tools/make_fixtures.randomize, all paths active).

  /usr/bin/python3 tools/make_random_checkpoint.py runs/full-size/DiT-XL-2-256x256.pt [--shape XL] [--seed 7]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit.model import DiT  # noqa: E402
from make_fixtures import randomize  # noqa: E402

SHAPES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="XL")
    ap.add_argument("--input-size", type=int, default=32, help="latent size: 32 for 256 px, 64 for 512 px")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    d, depth, heads = SHAPES[a.shape]
    torch.manual_seed(a.seed)
    model = DiT(input_size=a.input_size, patch_size=2, in_channels=4, hidden_size=d, depth=depth, num_heads=heads,
                num_classes=1000, learn_sigma=True)
    randomize(model, a.seed)
    sd = model.state_dict()
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    torch.save(sd, tmp)
    os.replace(tmp, a.out)
    params = sum(v.numel() for v in sd.values())
    print(f"wrote {a.out}: DiT-{a.shape}/2, {params:,} values ({os.path.getsize(a.out) / 1e9:.2f} GB), seed {a.seed}")


if __name__ == "__main__":
    main()
