#!/usr/bin/env python3
"""Generates the reference fixtures the Java tests compare against (tools/fixtures/README.md describes them).

  /usr/bin/python3 tools/make_fixtures.py [--out tools/fixtures] [--bundled models/fashion-dit] [--keep-existing]

Deterministic on one machine: the same torch version on the same CPU writes the same files. Another CPU can differ
in the last bits of the model's float32 output (its BLAS kernels differ), so --keep-existing keeps every tensor that
an existing cases.safetensors already holds byte for byte and adds only the missing ones (new trajectories).
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import safetensors_io  # noqa: E402
from dit.diffusion import Schedule, StepCache, sample  # noqa: E402
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT, dit_from_config  # noqa: E402

FIXTURE_MODELS = {
    # (a) pixel-space: 1 channel, fixed variance
    "pixel-tiny": dict(input_size=16, patch_size=4, in_channels=1, hidden_size=64, depth=2, num_heads=2,
                       mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10, learn_sigma=False),
    # (b) latent-style: 4 channels, learned sigma, patch 2, 3 heads, 12 classes
    "latent-tiny": dict(input_size=16, patch_size=2, in_channels=4, hidden_size=96, depth=3, num_heads=3,
                        mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=12, learn_sigma=True),
}
TRAJ_STEPS = 8
TRAJ_LABELS = [1, 5]
TRAJECTORIES = [
    # name, sampler, eta, guidance, guidance mode
    ("ddim", "ddim", 0.0, 1.0, "all"),
    ("ddim_cfg_first3", "ddim", 0.0, 4.0, "first3"),
    ("ddim_cfg_all", "ddim", 0.0, 4.0, "all"),
    ("ddim_eta05", "ddim", 0.5, 1.0, "all"),
    ("ddpm", "ddpm", 0.0, 1.0, "all"),
    ("ddpm_cfg_first3", "ddpm", 0.0, 4.0, "first3"),
    ("ddpm_cfg_all", "ddpm", 0.0, 4.0, "all"),
    # appended after the others so that their seeds (seed + index) and tensors stay unchanged
    ("dpmpp_2m", "dpmpp_2m", 0.0, 1.0, "all"),
    ("dpmpp_2m_cfg_first3", "dpmpp_2m", 0.0, 4.0, "first3"),
    ("dpmpp_2m_cfg_all", "dpmpp_2m", 0.0, 4.0, "all"),
    # step caching, interval 3 (docs/STEP_CACHE.md): steps 0, 3, 6 and the last run blocks 1..depth−1
    ("ddim_cache3_cfg_all", "ddim", 0.0, 4.0, "all", 3),
    ("dpmpp_2m_cache3_cfg_first3", "dpmpp_2m", 0.0, 4.0, "first3", 3),
]


def randomize(model, seed):
    """Random weights with every path active: non-zero adaLN and output layers (released init zeroes them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "pos_embed":
                continue
            fan_in = p.shape[1] if p.dim() == 2 else (p[0].numel() if p.dim() > 2 else 1)
            std = 0.02 if p.dim() == 1 else 1.0 / fan_in ** 0.5
            if "embedding_table" in name:
                std = 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def forward_case(model, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    n = 4
    x = torch.randn((n, cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=g)
    t = torch.tensor([0, 137, 500, 999], dtype=torch.long)
    y = torch.tensor([0, 3, cfg["num_classes"], cfg["num_classes"] - 1], dtype=torch.long)  # includes the null class
    with torch.no_grad():
        out = model(x, t, y)
    return {"forward.x": x, "forward.t": t, "forward.y": y, "forward.out": out}


def cached_forward_case(model, cfg, seed):
    """Step caching in one pass (docs/STEP_CACHE.md): the forward case's 4 samples with cache_run = [0, 2] (they
    run blocks 1..depth−1 and return their residual) while samples 1 and 3 reuse a given residual (that of another
    input at another t, so that a backend which ran them anyway or ignored the current t would be caught)."""
    g = torch.Generator().manual_seed(seed)
    base = forward_case(model, cfg, seed - 50)
    x, t, y = base["forward.x"], base["forward.t"], base["forward.y"]
    tokens = (cfg["input_size"] // cfg["patch_size"]) ** 2
    with torch.no_grad():
        other = torch.randn(x.shape, generator=g)
        all_run = torch.arange(4)
        _, stored = model.forward_cached(other, torch.tensor([50, 600, 300, 990]), y.flip(0),
                                         torch.zeros((4, tokens, cfg["hidden_size"])), all_run)
        run = torch.tensor([0, 2])
        out, residual_out = model.forward_cached(x, t, y, stored, run)
    return {"cache.x": x, "cache.t": t, "cache.y": y, "cache.residual": stored, "cache.run": run,
            "cache.out": out, "cache.residual_out": residual_out}


def trajectory_cases(model, cfg, seed):
    tensors, meta = {}, {}
    shape = (len(TRAJ_LABELS), cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    sched = Schedule(TRAJ_STEPS)
    for k, (name, sampler, eta, guidance, mode, *interval) in enumerate(TRAJECTORIES):
        cache = StepCache(interval[0], TRAJ_STEPS, cfg["depth"]) if interval else None
        g = torch.Generator().manual_seed(seed + k)
        x_T = torch.randn(shape, generator=g)
        noise = torch.randn((TRAJ_STEPS,) + shape, generator=g)  # in sampling order: noise[k] is used at i = S-1-k
        y = torch.tensor(TRAJ_LABELS, dtype=torch.long)
        trace = []
        final = sample(model, x_T, y, TRAJ_STEPS, sampler=sampler, eta=eta, guidance=guidance, guidance_mode=mode,
                       noises=[noise[TRAJ_STEPS - 1 - i] for i in range(TRAJ_STEPS)], trace=trace, cache=cache)
        p = f"traj.{name}."
        tensors[p + "x"] = torch.stack([tr[2] for tr in trace] + [final])
        tensors[p + "x0"] = torch.stack([tr[3] for tr in trace])
        tensors[p + "noise"] = noise
        tensors[p + "y"] = y
        tensors[p + "t"] = torch.tensor([tr[1] for tr in trace], dtype=torch.long)
        meta[name] = dict(sampler=sampler, steps=TRAJ_STEPS, eta=eta, guidance=guidance, guidance_mode=mode,
                          timesteps_ascending=sched.timesteps)
        if interval:
            meta[name]["cache_interval"] = interval[0]
    return tensors, meta


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--bundled", default=None, help="also write a forward case for this model folder")
    ap.add_argument("--keep-existing", action="store_true",
                    help="keep the tensors an existing cases.safetensors holds; add only the missing ones")
    a = ap.parse_args()
    torch.manual_seed(0)
    for idx, (name, cfg) in enumerate(FIXTURE_MODELS.items()):
        model = randomize(DiT(**cfg), 100 + idx).eval()
        folder = os.path.join(a.out, name)
        conf = make_config(model, name, [f"class-{i}" for i in range(cfg["num_classes"])],
                           guidance_mode="first3" if cfg["in_channels"] == 4 else "all",
                           sampler="ddim", steps=TRAJ_STEPS, guidance=4.0,
                           space="latent" if cfg["in_channels"] == 4 else "pixel",
                           description="random weights: a test fixture, not a useful model")
        write_model_folder(model, folder, conf)
        tensors = forward_case(model, cfg, 200 + idx)
        tensors.update(cached_forward_case(model, cfg, 250 + idx))
        traj, meta = trajectory_cases(model, cfg, 300 + 10 * idx)
        tensors.update(traj)
        cases = os.path.join(folder, "cases.safetensors")
        if a.keep_existing and os.path.exists(cases):
            old, _ = safetensors_io.read(cases)
            kept = [k for k in tensors if k in old]
            tensors.update({k: old[k] for k in kept})
            print(f"{folder}: kept {len(kept)} existing tensors, added {len(tensors) - len(kept)}")
        safetensors_io.write(os.path.join(folder, "cases.safetensors"), tensors,
                             {"trajectories": json.dumps(meta), "generator": "tools/make_fixtures.py",
                              "torch": torch.__version__})
        mx = max(float(v.abs().max()) for k, v in tensors.items() if v.dtype == torch.float32)
        print(f"{folder}: {len(tensors)} tensors, max |value| {mx:.3g}")
    if a.bundled:
        with open(os.path.join(a.bundled, "config.json")) as f:
            cfg = json.load(f)
        model = dit_from_config(cfg)
        sd, _ = safetensors_io.read(os.path.join(a.bundled, "weights.safetensors"))
        model.load_state_dict(sd)
        model.eval()
        name = os.path.basename(os.path.normpath(a.bundled))
        os.makedirs(a.out, exist_ok=True)
        case = forward_case(model, cfg, 400)
        case.update(cached_forward_case(model, cfg, 450))
        path = os.path.join(a.out, f"{name}.forward.safetensors")
        if a.keep_existing and os.path.exists(path):
            old, _ = safetensors_io.read(path)
            case.update({k: old[k] for k in case if k in old})
        safetensors_io.write(os.path.join(a.out, f"{name}.forward.safetensors"), case,
                             {"model": name, "generator": "tools/make_fixtures.py"})
        print(f"wrote forward case for {name}")


if __name__ == "__main__":
    main()
