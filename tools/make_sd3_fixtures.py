#!/usr/bin/env python3
"""Random-weight SD3-layout pipeline folders and the reference pipeline's outputs on them, for the server's
end-to-end text-to-image tests (issue 24; server/src/test/.../TextToImageTest.java):

  tools/pipeline-fixtures/sd3-tiny/    SD3-medium's layout at a tiny size (two CLIPs, no T5: its context part is zero rows),
                              pixel space (no VAE yet in the reference), F32, one file per component
  tools/pipeline-fixtures/sd35-tiny/   SD3.5-medium's: RMS qk-norm, MMDiT-X dual attention in blocks 0 and 1, BF16 weights
                              in shards with their index

Each gets cases.safetensors beside model_index.json (the loader ignores it): per case k, `case.k.noise` [1, C, H, W]
(the initial noise, given to the server as initial_noise), `case.k.sample` [1, C, H, W] (the reference pipeline's
float32 output) and `case.k.image` U8 as float32 [H, W, 3] (its 8-bit image); the header's metadata `cases` lists
prompt, negative prompt, guidance and steps per case (guidance 1 = none; a long prompt is cut by the tokenizer).

  /usr/bin/python3 tools/make_sd3_fixtures.py [--out tools/pipeline-fixtures]

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
}
CASES = [
    dict(prompt="a red cube to the left of a blue sphere", negative="", guidance=4.0, steps=6),
    dict(prompt="A photograph of an astronaut riding a horse on the moon, highly detailed!",
         negative="blurry, low quality", guidance=5.5, steps=5),
    dict(prompt="the quick brown fox " * 12, negative="", guidance=1.0, steps=4),  # cut, unguided
]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "tools", "pipeline-fixtures"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    for name, args in FOLDERS.items():
        folder = os.path.join(a.out, name)
        subprocess.run([sys.executable, "-m", "tools.sd3.make_random_sd3", "--out", folder, *args], check=True,
                       cwd=ROOT)
        pipe = layout.load_pipeline(folder)
        cfg = pipe.transformer.config
        tensors, meta = {}, []
        g = torch.Generator().manual_seed(7)
        for k, c in enumerate(CASES):
            noise = torch.randn((1, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"]), generator=g)
            x = pipe.sample([c["prompt"]], negative_prompt=c["negative"], guidance_scale=c["guidance"],
                            num_inference_steps=c["steps"], noise=noise)
            img = sd3pipe.to_uint8(x)[0]
            tensors[f"case.{k}.noise"] = noise.float()
            tensors[f"case.{k}.sample"] = x.float()
            tensors[f"case.{k}.image"] = torch.from_numpy(img.astype(np.float32))
            meta.append(c)
        safetensors_io.write(os.path.join(folder, "cases.safetensors"), tensors,
                             metadata={"cases": json.dumps(meta)})
        print(f"{folder}: {len(CASES)} cases")


if __name__ == "__main__":
    main()
