#!/usr/bin/env python3
"""Decoder cases at real image sizes for the cuda backend's GPU parity check (CudaParityCheck --decoder-cases).

  python3 tools/gpu/make_decoder_cases.py OUT_DIR [--sizes 32,64] [--batch-small 2]

Writes OUT_DIR/vae and OUT_DIR/taesd: the sd-vae-ft-ema and TAESD architectures (tools/dit/vae.py) with the random
weights of tools/make_decoder_fixtures.py --real (same seeds), as diffusers folders (config.json,
diffusion_pytorch_model.safetensors), plus one cases file per latent size:

  cases.safetensors      the first size (default 32×32, a 256 px image), a batch of --batch-small latents
  cases-64.safetensors   every further size S as cases-S.safetensors (default 64×64: 512 px), one latent

each with decode.latent F32 and decode.image F32, the image computed in FLOAT64 (on the GPU when torch sees one,
else on the CPU), so the check measures the backend's own error. No ONNX export (the GPU machine need not have the
onnx package). A folder whose `done` marker matches the recipe is kept, so a rerun costs nothing.
"""
import argparse
import json
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
from dit import safetensors_io  # noqa: E402
from dit.vae import (SD_VAE_FT_EMA_CONFIG, TAESD_CONFIG, decoder_from_config,  # noqa: E402
                     save_decoder_folder, staged_folder)
from make_decoder_fixtures import randomize  # noqa: E402

VERSION = 1
DECODERS = [("vae", SD_VAE_FT_EMA_CONFIG, 20), ("taesd", TAESD_CONFIG, 21)]  # seeds of make_decoder_fixtures --real


def reference(module, latent, device):
    """The image in float64 (TF32 off, so nothing rounds below float64), returned as float32."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    m = module.to(device=device, dtype=torch.float64)
    with torch.no_grad():
        image = m(latent.to(device=device, dtype=torch.float64))
    module.to(device="cpu", dtype=torch.float32)
    return image.float().cpu()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="output folder (e.g. /tmp/dit-decoder-cases)")
    ap.add_argument("--sizes", default="32,64", help="latent sides, comma-separated (default 32,64)")
    ap.add_argument("--batch-small", type=int, default=2, help="latents in the first size's case (default 2)")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(os.cpu_count() or 1)
    for name, config, seed in DECODERS:
        folder = os.path.join(a.out, name)
        marker = {"version": VERSION, "name": name, "seed": seed, "sizes": sizes, "batch_small": a.batch_small,
                  "torch": torch.__version__}
        try:
            with open(os.path.join(folder, "done")) as f:
                if json.load(f) == marker:
                    print(f"{folder}: up to date")
                    continue
        except (OSError, ValueError):
            pass
        t0 = time.time()
        module = randomize(decoder_from_config(config), seed)
        with staged_folder(folder) as tmp:
            save_decoder_folder(module, config, tmp)
            for i, side in enumerate(sizes):
                n = a.batch_small if i == 0 else 1
                g = torch.Generator().manual_seed(seed + 2000 + side)
                latent = torch.randn((n, module.latent_channels, side, side), generator=g)
                image = reference(module, latent, device)
                file = "cases.safetensors" if i == 0 else f"cases-{side}.safetensors"
                safetensors_io.write(os.path.join(tmp, file), {"decode.latent": latent, "decode.image": image},
                                     {"generator": "tools/gpu/make_decoder_cases.py", "reference": "float64 " + device,
                                      "torch": torch.__version__})
                print(f"{folder}/{file}: latent {list(latent.shape)} → image {list(image.shape)}, |image| max "
                      f"{float(image.abs().max()):.3g}, reference on {device} in float64")
            with open(os.path.join(tmp, "done"), "w") as f:
                json.dump(marker, f, sort_keys=True)
                f.write("\n")
        print(f"{folder}: {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
