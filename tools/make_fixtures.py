#!/usr/bin/env python3
"""Generates the reference fixtures the Java tests compare against (tools/fixtures/README.md describes them).

  /usr/bin/python3 tools/make_fixtures.py [--out tools/fixtures] [--bundled models/fashion-dit] [--keep-existing]
      [--only NAME ...]

--only writes just the named model folders (pixel-tiny, latent-tiny, sit-tiny, repa-tiny; no bundled case unless
--bundled is given too): `--only sit-tiny repa-tiny` adds the flow fixtures without touching the others.
The flow folders (sit-tiny, repa-tiny) are converted by tools/convert.py from random checkpoints in the released
layouts (tools/make_flow_checkpoint.py).

Deterministic on one machine: the same torch version on the same CPU writes the same files. Another CPU can differ
in the last bits of the model's float32 output (its BLAS kernels differ), so --keep-existing keeps every tensor that
an existing cases.safetensors already holds byte for byte and adds only the missing ones (new trajectories).
"""
import argparse
import json
import os
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import flow, safetensors_io  # noqa: E402
from dit.diffusion import Schedule, StepCache, sample  # noqa: E402
from dit.export import make_config, make_config_v2, write_model_folder  # noqa: E402
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


# Flow models (issue 23): converted from random released-layout checkpoints; models m = 0, 1
FLOW_FIXTURE_MODELS = {
    # SiT: released state_dict with learned σ (dropped at conversion), guidance on the first 3 channels
    "sit-tiny": dict(family="sit", hidden=96, depth=3, heads=3, patch=2, input_size=16, in_channels=4,
                     num_classes=10, qk_norm=False, seed=610),
    # REPA: last.pt's ema with qk-norm and projectors (dropped), guidance on all channels
    "repa-tiny": dict(family="repa", hidden=64, depth=3, heads=2, patch=4, input_size=16, in_channels=4,
                      num_classes=10, qk_norm=True, seed=620),
}
FLOW_TRAJ_STEPS = 8
FLOW_FORWARD_T = [0.0, 0.137, float(np.float32(1.0 / 3.0)), 1.0]  # float32 values; 1/3 has no short decimal
FLOW_TRAJECTORIES = [
    # name, sampler, guidance, interval [lo, hi] in the network's time τ (None: every step), timestep shift
    ("euler", "euler", 1.0, None, 1.0),
    ("euler_cfg", "euler", 4.0, None, 1.0),
    ("heun_cfg", "heun", 4.0, None, 1.0),
    ("heun_cfg_interval", "heun", 4.0, [0.3, 0.8], 1.0),  # 8 steps: 4 guided, 4 not (sit and repa)
    ("euler_maruyama_cfg_interval", "euler_maruyama", 4.0, [0.0, 0.7], 1.0),  # REPA's interval
    ("dpmpp_2m_cfg", "dpmpp_2m", 4.0, None, 1.0),
    ("heun_cfg_shift3", "heun", 4.0, None, 3.0),
]


def write_flow_model(name, spec, folder):
    """A random checkpoint in the family's released layout, converted by tools/convert.py into `folder`."""
    import convert
    import make_flow_checkpoint
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, f"{name}.pt")
        make_flow_checkpoint.write_checkpoint(
            src, spec["family"], spec["hidden"], spec["depth"], spec["heads"], spec["patch"], spec["input_size"],
            spec["in_channels"], spec["num_classes"], qk_norm=spec["qk_norm"], seed=spec["seed"], projector_dim=32,
            z_dims=(24,), encoder_depth=2)
        model, cfg, notes = convert.convert_flow(src, spec["family"], spec["heads"])
    d = convert.FLOW_DEFAULTS[spec["family"]]
    conf = make_config_v2(model, name, spec["family"], [f"class-{i}" for i in range(cfg["num_classes"])],
                          guidance_mode=d["guidance_mode"], sampler=d["sampler"], steps=FLOW_TRAJ_STEPS,
                          guidance=d["guidance"], guidance_interval=d["guidance_interval"], space="latent",
                          description="random weights in the released layout, converted by tools/convert.py: a test "
                                      "fixture, not a useful model")
    write_model_folder(model, folder, conf)
    return notes


def load_model_folder(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = dit_from_config(cfg)
    model.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
    return model.eval(), cfg


def flow_forward_case(model, cfg, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((4, cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=g)
    t = torch.tensor(FLOW_FORWARD_T, dtype=torch.float32)
    y = torch.tensor([0, 3, cfg["num_classes"], cfg["num_classes"] - 1], dtype=torch.long)
    with torch.no_grad():
        out = model(x, t, y)
    return {"forward.x": x, "forward.t": t, "forward.y": y, "forward.out": out}


def flow_cached_forward_case(model, cfg, seed):
    """cached_forward_case with float times: the forward case's samples, cache_run = [0, 2], samples 1 and 3 reuse
    the residual that another input at other times stored."""
    g = torch.Generator().manual_seed(seed)
    base = flow_forward_case(model, cfg, seed - 50)
    x, t, y = base["forward.x"], base["forward.t"], base["forward.y"]
    tokens = (cfg["input_size"] // cfg["patch_size"]) ** 2
    with torch.no_grad():
        other = torch.randn(x.shape, generator=g)
        _, stored = model.forward_cached(other, torch.tensor([0.05, 0.6, 0.3, 0.99]), y.flip(0),
                                         torch.zeros((4, tokens, cfg["hidden_size"])), torch.arange(4))
        run = torch.tensor([0, 2])
        out, residual_out = model.forward_cached(x, t, y, stored, run)
    return {"cache.x": x, "cache.t": t, "cache.y": y, "cache.residual": stored, "cache.run": run,
            "cache.out": out, "cache.residual_out": residual_out}


def flow_trajectory(model, cfg, name, sampler, guidance, interval, shift, seed):
    """One trajectory: x_init and the noise [N, 2, C, H, W] drawn from seed (the noise is kept for
    euler_maruyama only, zeros otherwise); returns (tensors, metadata)."""
    n = FLOW_TRAJ_STEPS
    shape = (len(TRAJ_LABELS), cfg["in_channels"], cfg["input_size"], cfg["input_size"])
    g = torch.Generator().manual_seed(seed)
    x_init = torch.randn(shape, generator=g)
    noise = torch.randn((n,) + shape, generator=g)
    if sampler != "euler_maruyama":
        noise = torch.zeros_like(noise)
    y = torch.tensor(TRAJ_LABELS, dtype=torch.long)
    trace, stats = [], {}
    final = flow.sample_flow(model, cfg, x_init, y, n, sampler, guidance=guidance, interval=interval, shift=shift,
                             noises=noise, trace=trace, stats=stats)
    p = f"traj.{name}."
    tensors = {p + "x": torch.stack([tr[1] for tr in trace] + [final]),
               p + "x0": torch.stack([tr[2] for tr in trace]),
               p + "noise": noise, p + "y": y,
               p + "s": torch.tensor(flow.grid(n, sampler, shift), dtype=torch.float64),
               p + "guided": torch.tensor([int(tr[3]) for tr in trace], dtype=torch.long)}
    meta = dict(sampler=sampler, steps=n, guidance=guidance, mode=cfg["guidance_mode"], interval=interval,
                shift=shift, seed=seed, evaluations=stats["evaluations"], forward_rows=stats["forward_rows"])
    return tensors, meta


def flow_trajectory_cases(model, cfg, seed):
    tensors, meta = {}, {}
    for k, (name, sampler, guidance, interval, shift) in enumerate(FLOW_TRAJECTORIES):
        t, m = flow_trajectory(model, cfg, name, sampler, guidance, interval, shift, seed + k)
        tensors.update(t)
        meta[name] = m
    return tensors, meta


def write_cases(folder, tensors, metadata, keep_existing):
    cases = os.path.join(folder, "cases.safetensors")
    if keep_existing and os.path.exists(cases):
        old, _ = safetensors_io.read(cases)
        kept = [k for k in tensors if k in old]
        tensors.update({k: old[k] for k in kept})
        print(f"{folder}: kept {len(kept)} existing tensors, added {len(tensors) - len(kept)}")
    safetensors_io.write(cases, tensors, metadata)
    mx = max(float(v.abs().max()) for k, v in tensors.items() if v.dtype == torch.float32)
    print(f"{folder}: {len(tensors)} tensors, max |value| {mx:.3g}")


def make_flow_fixtures(out, keep_existing, only=None):
    for idx, (name, spec) in enumerate(FLOW_FIXTURE_MODELS.items()):
        if only is not None and name not in only:
            continue
        folder = os.path.join(out, name)
        for line in write_flow_model(name, spec, folder):
            print(f"{name}: {line}")
        model, cfg = load_model_folder(folder)  # the cases come from the folder as written, as a backend reads it
        tensors = flow_forward_case(model, cfg, 700 + idx)
        tensors.update(flow_cached_forward_case(model, cfg, 750 + idx))
        traj, meta = flow_trajectory_cases(model, cfg, 500 + 10 * idx)
        tensors.update(traj)
        write_cases(folder, tensors, {"trajectories": json.dumps(meta), "generator": "tools/make_fixtures.py",
                                      "torch": torch.__version__}, keep_existing)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures"))
    ap.add_argument("--bundled", default=None, help="also write a forward case for this model folder")
    ap.add_argument("--keep-existing", action="store_true",
                    help="keep the tensors an existing cases.safetensors holds; add only the missing ones")
    ap.add_argument("--only", nargs="+", default=None, metavar="NAME",
                    choices=list(FIXTURE_MODELS) + list(FLOW_FIXTURE_MODELS),
                    help="write only these model folders")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    for idx, (name, cfg) in enumerate(FIXTURE_MODELS.items()):
        if a.only is not None and name not in a.only:
            continue
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
    make_flow_fixtures(a.out, a.keep_existing, a.only)
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
