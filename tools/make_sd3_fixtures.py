#!/usr/bin/env python3
"""Random-weight SD3-layout pipeline folders and the reference pipeline's outputs on them, for the server's
end-to-end text-to-image tests (issue 24; server/src/test/.../TextToImageTest.java):

  tools/pipeline-fixtures/sd3-tiny/    SD3-medium's layout at a tiny size (two CLIPs, no T5: its context part is zero rows),
                              pixel space (no VAE yet in the reference), F32, one file per component
  tools/pipeline-fixtures/sd35-tiny/   SD3.5-medium's: RMS qk-norm, MMDiT-X dual attention in blocks 0 and 1, BF16 weights
                              in shards with their index
  tools/pipeline-fixtures/sd3-tiny-full/   the complete SD3 layout: two CLIPs, T5 (text_encoder_3 + tokenizer_3, the
                              SentencePiece folder of tools/fixtures/tokenizers/t5; FP16) of width joint_attention_dim
                              96 (> the CLIP widths' 80, so the CLIP part is zero-padded), max_sequence_length 12, a
                              16-channel latent and an AutoencoderKL in SD3's configuration (scaling 1.5305, shift
                              0.0609, no post_quant_conv; block_out_channels [8, 16, 16]: f = 4, 8×8 latent → 32×32)
  tools/pipeline-fixtures/sd35-tiny-full/  the same with SD3.5's transformer (RMS qk-norm, dual attention in blocks 0, 1),
                              BF16 shards, and a VAE WITH post_quant_conv (the other AutoencoderKL variant)

Each gets cases.safetensors beside model_index.json (the loader ignores it): per case k, `case.k.noise` [1, C, H, W]
(the initial noise, given to the server as initial_noise), `case.k.sample` [1, C, H, W] (the reference pipeline's
float32 output) and `case.k.image` U8 as float32 [H, W, 3] (its 8-bit image); the header's metadata `cases` lists
prompt, negative prompt, guidance and steps per case (guidance 1 = none; a long prompt is cut by the tokenizer).
In the latent folders (-full) `sample` is the latent, `image` its VAE decode, `decoded` that image as float32
[1, 3, H, W] before the 8-bit rounding, and a case's `t5` says whether the T5 encoder was used: false means the
pipeline loaded without text_encoder_3 (diffusers' text_encoder_3=None: the T5 part of the context is zeros), which
the server tests serve as a copy of the folder whose model_index.json leaves text_encoder_3/tokenizer_3 out.

  OPENBLAS_CORETYPE=Haswell /usr/bin/python3 tools/make_sd3_fixtures.py [--out tools/pipeline-fixtures] [--only NAME]

(Not under tools/fixtures, which the server tests serve as a models folder on every backend: a pipeline needs
text encoders, which the onnx backend does not run yet.)
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from tools.dit import safetensors_io  # noqa: E402
from tools.sd3 import layout  # noqa: E402
from tools.sd3 import pipeline as sd3pipe  # noqa: E402

FOLDERS = {
    "sd3-tiny": ["--in-channels", "3", "--sample-size", "8", "--max-length", "16", "--max-sequence-length", "6",
                 "--seed", "11"],
    "sd35-tiny": ["--in-channels", "3", "--sample-size", "8", "--max-length", "16", "--max-sequence-length", "6",
                  "--qk-norm", "--dual-attention-layers", "0,1", "--dtype", "bf16", "--shard-bytes", "60000",
                  "--seed", "12"],
    "sd3-tiny-full": ["--in-channels", "16", "--sample-size", "8", "--max-length", "16", "--max-sequence-length",
                      "12", "--joint-attention-dim", "96", "--t5", "--t5-dtype", "fp16", "--vae", "--seed", "13"],
    "sd35-tiny-full": ["--in-channels", "16", "--sample-size", "8", "--max-length", "16", "--max-sequence-length",
                       "12", "--joint-attention-dim", "96", "--t5", "--vae", "--vae-post-quant-conv", "--qk-norm",
                       "--dual-attention-layers", "0,1", "--dtype", "bf16", "--shard-bytes", "200000",
                       "--seed", "14"],
}
CASES = [
    dict(prompt="a red cube to the left of a blue sphere", negative="", guidance=4.0, steps=6),
    dict(prompt="A photograph of an astronaut riding a horse on the moon, highly detailed!",
         negative="blurry, low quality", guidance=5.5, steps=5),
    dict(prompt="the quick brown fox " * 12, negative="", guidance=1.0, steps=4),  # cut, unguided
]
FULL_CASES = [
    dict(prompt="a red cube to the left of a blue sphere", negative="", guidance=4.0, steps=6, t5=True),
    dict(prompt="A photograph of an astronaut riding a horse on the moon, highly detailed!",
         negative="blurry, low quality", guidance=5.5, steps=5, t5=True),
    dict(prompt="a red cube to the left of a blue sphere", negative="blurry, low quality", guidance=4.0, steps=5,
         t5=False),
    dict(prompt="the quick brown fox " * 12, negative="", guidance=1.0, steps=4, t5=True),  # cut by both, unguided
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tools", "pipeline-fixtures"))
    ap.add_argument("--only", action="append", choices=sorted(FOLDERS), help="write only this folder (repeatable)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, args in FOLDERS.items():
        if a.only and name not in a.only:
            continue
        folder = os.path.join(a.out, name)
        subprocess.run([sys.executable, "-m", "tools.sd3.make_random_sd3", "--out", folder, *args], check=True,
                       cwd=ROOT)
        pipes = {True: layout.load_pipeline(folder), False: layout.load_pipeline(folder, drop_t5=True)}
        latent = pipes[True].vae is not None
        cases = FULL_CASES if latent else CASES
        cfg = pipes[True].transformer.config
        tensors, meta = {}, []
        g = torch.Generator().manual_seed(7)
        for k, c in enumerate(cases):
            pipe = pipes[c.get("t5", True)]
            noise = torch.randn((1, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"]), generator=g)
            x = pipe.sample([c["prompt"]], negative_prompt=c["negative"], guidance_scale=c["guidance"],
                            num_inference_steps=c["steps"], noise=noise)
            decoded = pipe.decode(x)
            img = sd3pipe.to_uint8(decoded)[0]
            tensors[f"case.{k}.noise"] = noise.float()
            tensors[f"case.{k}.sample"] = x.float()
            tensors[f"case.{k}.image"] = torch.from_numpy(img.astype(np.float32))
            if latent:
                tensors[f"case.{k}.decoded"] = decoded.float()
                clipped = ((decoded.abs() > 1).float().mean().item())
                print(f"  case {k}: image in [{decoded.min().item():.2f}, {decoded.max().item():.2f}], "
                      f"{100 * clipped:.1f} % clipped")
            meta.append(c)
        safetensors_io.write(os.path.join(folder, "cases.safetensors"), tensors,
                             metadata={"cases": json.dumps(meta)})
        print(f"{folder}: {len(cases)} cases, {layout.folder_bytes(folder)} bytes")


if __name__ == "__main__":
    main()
