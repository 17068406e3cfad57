#!/usr/bin/env python3
"""Writes the MMDiT reference fixtures the Java tests compare against (docs/TEXT_MODELS.md, "MMDiT"):

  /usr/bin/python3 tools/make_mmdit_fixtures.py [--out tools/fixtures] [--only mmdit-tiny mmdit-x-tiny]

Two small random SD3Transformer2DModel transformer folders in diffusers' layout (config.json with "_class_name",
weights as diffusion_pytorch_model*.safetensors; tools/sd3/layout.py), each with a cases.safetensors beside the
config holding one forward pass of tools/sd3/mmdit.py:

  mmdit-tiny/    SD3-medium's structure: no qk-norm, no dual attention; F32, one file; 4 channels
  mmdit-x-tiny/  SD3.5-medium's: qk_norm "rms_norm", MMDiT-X dual attention in blocks 0 and 1; BF16, three shards
                 with diffusion_pytorch_model.safetensors.index.json; 16 channels

Both: sample_size 8, patch 2 (a 4×4 grid, 16 image tokens), 3 layers (the last one context_pre_only), 2 heads of
16 (D = 32), joint_attention_dim 24, pooled_projection_dim 20, pos_embed_max_size 6 (the centred crop starts at
row and column 1, so a wrong crop changes the output).

Weights: torch's default initialisation (seeded), so unlike SD3's training initialisation the adaLN modulations,
gates and proj_out are non-zero and every path changes the output; RMSNorm weights 1 + N(0, 0.1²)
(make_random_sd3.perturb_norms); the stored pos_embed table is uniform in [−1, 1] instead of the sin-cos table,
so the crop's offsets and its row/column order matter. The reference output is computed by the model read back
from the written folder (layout.read_transformer), i.e. with exactly the stored (for BF16: rounded) weights.

cases.safetensors (F32):
  forward.x        [3, C, 8, 8]     N(0, 1)
  forward.t        [3]              σ·1000 = [1000, 3, 417.25]: what the timestep sinusoid receives
  forward.context  [3, 7, 24]       encoder_hidden_states, N(0, 1)
  forward.pooled   [3, 20]          pooled_projections, N(0, 1)
  forward.out      [3, C, 8, 8]     the reference's output

Deterministic on one machine; another CPU may differ in the last bits of forward.out (its BLAS kernels differ).
These folders are not served: DecoderConfigs.isComponentFolder skips a config.json with "_class_name".
"""
import argparse
import os
import sys

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.sd3 import layout, mmdit  # noqa: E402
from tools.sd3.make_random_sd3 import perturb_norms  # noqa: E402

COMMON = dict(sample_size=8, patch_size=2, num_layers=3, attention_head_dim=16, num_attention_heads=2,
              joint_attention_dim=24, caption_projection_dim=32, pooled_projection_dim=20, pos_embed_max_size=6)
FIXTURES = {
    # name: (config, dtype, shard bytes (None: one file), seed)
    "mmdit-tiny": (dict(COMMON, in_channels=4, out_channels=4), "fp32", None, 10),
    "mmdit-x-tiny": (dict(COMMON, in_channels=16, out_channels=16, qk_norm="rms_norm",
                          dual_attention_layers=[0, 1]), "bf16", 120_000, 20),
}
TIMES = [1000.0, 3.0, 417.25]
CONTEXT_TOKENS = 7


def build(config, seed):
    torch.manual_seed(seed)
    model = mmdit.SD3Transformer2DModel(**config)
    gen = torch.Generator().manual_seed(seed + 1)
    perturb_norms(model, gen)
    with torch.no_grad():
        table = model.pos_embed.pos_embed
        table.copy_(torch.rand(table.shape, generator=gen) * 2 - 1)
    return model.eval()


def write_fixture(out, name):
    config, dtype, shard_bytes, seed = FIXTURES[name]
    folder = os.path.join(out, name)
    if os.path.isdir(folder):  # stale shards of another layout must not stay beside the new files
        for f in os.listdir(folder):
            if f.startswith(layout.DIFFUSERS_WEIGHTS):
                os.remove(os.path.join(folder, f))
    files = layout.write_transformer(folder, build(config, seed), dtype, shard_bytes)
    model, dtypes = layout.read_transformer(folder)
    gen = torch.Generator().manual_seed(seed + 2)
    n, c, size = len(TIMES), config["in_channels"], config["sample_size"]
    x = torch.randn((n, c, size, size), generator=gen)
    context = torch.randn((n, CONTEXT_TOKENS, config["joint_attention_dim"]), generator=gen)
    pooled = torch.randn((n, config["pooled_projection_dim"]), generator=gen)
    t = torch.tensor(TIMES, dtype=torch.float32)
    with torch.no_grad():
        y = model(x, context, pooled, t)
    layout.write_safetensors(os.path.join(folder, "cases.safetensors"),
                             {"forward.x": x, "forward.t": t, "forward.context": context, "forward.pooled": pooled,
                              "forward.out": y})
    print(f"{folder}: {len(files)} weight files, {sorted(set(dtypes.values()))}, "
          f"{sum(p.numel() for p in model.parameters())} parameters, max |out| {y.abs().max():.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "tools", "fixtures"))
    p.add_argument("--only", nargs="+", choices=sorted(FIXTURES), default=sorted(FIXTURES))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    for name in args.only:
        write_fixture(args.out, name)


if __name__ == "__main__":
    main()
