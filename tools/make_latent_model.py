#!/usr/bin/env python3
"""Writes a random-weight LATENT DiT model folder with its decoders, for end-to-end tests (not a useful model):

  OUT_DIR/config.json, weights.safetensors, model.onnx   a small 4-channel DiT (docs/MODEL_FORMAT.md)
  OUT_DIR/vae/     AutoencoderKL, the real sd-vae-ft-ema shapes (or --vae-config small), with decoder.onnx
  OUT_DIR/taesd/   AutoencoderTiny, the real TAESD shapes, with decoder.onnx

  /usr/bin/python3 tools/make_latent_model.py OUT_DIR [--vae-config real|small] [--name NAME]

Each decoder folder also holds cases.safetensors for one latent of the model's size. Decode the server's raw latents
with tools/decode_reference.py to compare images. The folder is written next to OUT_DIR and moved into place when
complete. Deterministic: the same torch version writes the same files.
"""
import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT  # noqa: E402
from dit.vae import SD_VAE_FT_EMA_CONFIG, TAESD_CONFIG, staged_folder  # noqa: E402
from make_decoder_fixtures import VAE_SMALL, write_fixture  # noqa: E402
from make_fixtures import randomize  # noqa: E402

MODEL = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=2, mlp_ratio=4.0,
             class_dropout_prob=0.1, num_classes=4, learn_sigma=True)
VAE_CONFIGS = {"real": SD_VAE_FT_EMA_CONFIG, "small": VAE_SMALL}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--vae-config", choices=sorted(VAE_CONFIGS), default="real")
    ap.add_argument("--name", default=None, help="model name in config.json (default: the folder name)")
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    t0 = time.time()
    name = a.name or os.path.basename(os.path.normpath(a.out_dir))
    model = randomize(DiT(**MODEL), 500).eval()
    conf = make_config(model, name, [f"class-{i}" for i in range(MODEL["num_classes"])], guidance_mode="first3",
                       sampler="ddim", steps=4, guidance=4.0, space="latent",
                       description="random weights with random decoders: an end-to-end test model, not a useful one")
    latent = (1, MODEL["in_channels"], MODEL["input_size"], MODEL["input_size"])
    with staged_folder(a.out_dir) as tmp:
        write_model_folder(model, tmp, conf)
        write_fixture(os.path.join(tmp, "vae"), VAE_CONFIGS[a.vae_config], latent, 510, False)
        write_fixture(os.path.join(tmp, "taesd"), TAESD_CONFIG, latent, 511, False)
    print(f"wrote {a.out_dir} (vae: {a.vae_config} config) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
