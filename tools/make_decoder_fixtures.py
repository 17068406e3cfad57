#!/usr/bin/env python3
"""Writes the image-decoder fixtures the Java tests compare against (docs/DECODERS.md describes them).

  /usr/bin/python3 tools/make_decoder_fixtures.py --small [tools/fixtures]     small, committed
  /usr/bin/python3 tools/make_decoder_fixtures.py --real target/decoder-fixtures  real shapes, not committed

Each fixture is a diffusers folder (config.json, diffusion_pytorch_model.safetensors) plus decoder.onnx and
cases.safetensors (decode.latent F32 [N, 4, h, w], decode.image F32 [N, C_out, f·h, f·w], the PyTorch float32
output). Weights are random with every path active. Each folder is written into a temporary folder and moved into
place when complete; --real skips a folder whose `done` marker matches the recipe, so a rerun costs nothing.
Deterministic: the same torch version writes the same files.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import safetensors_io  # noqa: E402
from dit.vae import (ONNX_FILE, SD_VAE_FT_EMA_CONFIG, TAESD_CONFIG, TinyDecoder, WEIGHTS_FILE,  # noqa: E402
                     decoder_from_config, export_decoder_onnx, save_decoder_folder, staged_folder)

RECIPE_VERSION = 1  # bump when the weights, cases or layout change, so --real regenerates

# The small fixtures keep the structure of the real decoders (an up block that changes width, so conv_shortcut;
# the mid attention; several TAESD stages) at a size that can be committed. h != w so transposition bugs show.
VAE_SMALL = dict(SD_VAE_FT_EMA_CONFIG, block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=8,
                 down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                 scaling_factor=0.18215, shift_factor=None)
TAESD_SMALL = dict(TAESD_CONFIG, decoder_block_out_channels=[16, 16, 16, 16], encoder_block_out_channels=[16] * 4)

SMALL = [  # folder, config, latent shape [N, C, h, w], seed, legacy attention names
    ("vae-small", VAE_SMALL, (2, 4, 6, 5), 10, False),
    ("vae-small-legacy", VAE_SMALL, (2, 4, 6, 5), 10, True),
    ("taesd-small", TAESD_SMALL, (2, 4, 4, 3), 11, False),
]
REAL = [
    ("vae", SD_VAE_FT_EMA_CONFIG, (1, 4, 5, 4), 20, False),
    ("taesd", TAESD_CONFIG, (1, 4, 5, 4), 21, False),
]


def randomize(module, seed):
    """Random weights with every path active: GroupNorm affine weights 1 ± 0.2 and non-zero biases, convolutions
    and linears N(0, 1/fan_in) with biases N(0, 0.1²), so activations stay O(1) (checked layer by layer: about
    half of every ReLU's outputs are positive)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / fan_in ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        if isinstance(module, TinyDecoder):
            # TAESD's layers end in [0, 1] (the image is then x·2 − 1): centre the last conv there, so the image
            # spans [−1, 1] rather than sitting at −1
            last = module.decoder.layers[-1]
            last.weight.mul_(2.5)
            last.bias.add_(0.5)
    return module.eval()


def recipe(name, config, shape, seed, legacy):
    return {"version": RECIPE_VERSION, "name": name, "config": config, "latent": list(shape), "seed": seed,
            "legacy_names": legacy, "torch": torch.__version__}


def is_complete(folder, rec):
    try:
        with open(os.path.join(folder, "done")) as f:
            if json.load(f) != rec:
                return False
    except (OSError, ValueError):
        return False
    return all(os.path.isfile(os.path.join(folder, n))
               for n in ("config.json", WEIGHTS_FILE, ONNX_FILE, "cases.safetensors"))


def write_fixture(folder, config, shape, seed, legacy, marker=None):
    """Builds the decoder, writes the folder into a temporary sibling and moves it into place when complete."""
    module = randomize(decoder_from_config(config), seed)
    g = torch.Generator().manual_seed(seed + 1000)
    latent = torch.randn(shape, generator=g)
    with torch.no_grad():
        image = module(latent)  # float32, like the backends
    with staged_folder(folder) as tmp:
        save_decoder_folder(module, config, tmp, legacy_names=legacy)
        export_decoder_onnx(module, os.path.join(tmp, ONNX_FILE), example_hw=shape[2:])
        meta = {"generator": "tools/make_decoder_fixtures.py", "torch": torch.__version__,
                "class": module.class_name, "scale_factor": str(module.scale_factor)}
        safetensors_io.write(os.path.join(tmp, "cases.safetensors"),
                             {"decode.latent": latent, "decode.image": image}, meta)
        if marker is not None:
            with open(os.path.join(tmp, "done"), "w") as f:
                json.dump(marker, f, sort_keys=True)
                f.write("\n")
    return module, image


def size_of(folder):
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_small = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
    ap.add_argument("--small", nargs="?", const=default_small, default=None, metavar="DIR",
                    help=f"write the small committed fixtures (default DIR {default_small})")
    ap.add_argument("--real", default=None, metavar="DIR", help="write the real-shape fixtures (idempotent)")
    a = ap.parse_args(argv)
    if a.small is None and a.real is None:
        a.small = default_small
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    jobs = []
    if a.small is not None:
        jobs += [(os.path.join(a.small, name), cfg, shape, seed, legacy, None)
                 for name, cfg, shape, seed, legacy in SMALL]
    if a.real is not None:
        jobs += [(os.path.join(a.real, name), cfg, shape, seed, legacy, recipe(name, cfg, shape, seed, legacy))
                 for name, cfg, shape, seed, legacy in REAL]
    for folder, cfg, shape, seed, legacy, marker in jobs:
        if marker is not None and is_complete(folder, marker):
            print(f"{folder}: up to date")
            continue
        t0 = time.time()
        module, image = write_fixture(folder, cfg, shape, seed, legacy, marker)
        print(f"{folder}: {module.class_name} f={module.scale_factor} latent {list(shape)} → image "
              f"{list(image.shape)}, |image| max {float(image.abs().max()):.3g} std {float(image.std()):.3g}, "
              f"{size_of(folder) / 1e6:.2f} MB, {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
