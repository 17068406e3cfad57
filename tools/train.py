#!/usr/bin/env python3
"""Trains a class-conditional DiT on Fashion-MNIST (10 classes, 28×28, scaled to [−1, 1]).

10 % label dropout to the null class (for classifier-free guidance), EMA of the weights, resumable checkpoints
(written atomically every --ckpt-every steps and at the end), and a CSV log of the loss of every step.
Stops at --steps or after --time-budget seconds, whichever comes first; run it again with the same --out to resume.

With --latents (the latents.pt that tools/train_vae.py --export writes) it trains a LATENT model instead: each step
draws a fresh sample of every chosen image's VAE posterior, times the VAE's scaling_factor (so that the latents have
unit variance), on a 4×8×8 latent with patch 2.

  /usr/bin/python3 tools/train.py --out runs/fmnist --steps 40000            # CPU: hours
  python3 tools/train.py --out runs/fmnist --time-budget 360 --batch 512      # one GPU: minutes
"""
import argparse
import copy
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import data as fmnist  # noqa: E402
from dit.diffusion import training_loss  # noqa: E402
from dit.model import DiT  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (default: Debian's)")
    p.add_argument("--steps", type=int, default=40000)
    p.add_argument("--time-budget", type=float, default=0, help="seconds; 0 = no limit")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.9995)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--ckpt-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ema-reset", action="store_true",
                   help="on resume, restart the EMA from the current weights (an EMA that still averages in the "
                        "first steps of a short run is worse than the weights themselves)")
    p.add_argument("--latents", default=None, help="train on VAE latents (latents.pt of tools/train_vae.py)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(args.threads or os.cpu_count())
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)

    images, labels = fmnist.load("train", args.data)
    y_all = torch.from_numpy(labels).to(dev)
    if args.latents:
        lat = torch.load(args.latents, map_location=dev)
        scale = lat["scaling_factor"]
        lat_mean, lat_std = lat["mean"] * scale, torch.exp(0.5 * lat["logvar"]) * scale
        x_all = None
        size, channels = lat_mean.shape[-1], lat_mean.shape[1]
    else:
        x_all = torch.from_numpy(fmnist.to_model_range(images)).to(dev)
        size, channels = 28, 1
    cfg = dict(input_size=size, patch_size=args.patch, in_channels=channels, hidden_size=args.hidden, depth=args.depth,
               num_heads=args.heads, mlp_ratio=4.0, class_dropout_prob=0.1, num_classes=10, learn_sigma=False)
    model = DiT(**cfg).to(dev)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    step, elapsed_before = 0, 0.0
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=dev, weights_only=False)
        if ck["config"] != cfg:
            raise SystemExit(f"{ckpt_path}: checkpoint config {ck['config']} differs from requested {cfg}")
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["model"] if args.ema_reset else ck["ema"])
        opt.load_state_dict(ck["opt"])
        step, elapsed_before = ck["step"], ck.get("elapsed", 0.0)
        torch.set_rng_state(ck["rng_cpu"])
        print(f"resumed at step {step}", flush=True)
    nparams = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"device {dev}, {nparams / 1e6:.2f} M trainable parameters, config {cfg}", flush=True)

    def save(final=False):
        tmp = ckpt_path + ".tmp"
        torch.save(dict(model=model.state_dict(), ema=ema.state_dict(), opt=opt.state_dict(), step=step,
                        config=cfg, elapsed=elapsed_before + time.time() - t0, args=vars(args),
                        rng_cpu=torch.get_rng_state()), tmp)
        os.replace(tmp, ckpt_path)
        with open(os.path.join(args.out, "train_state.json"), "w") as f:
            json.dump(dict(step=step, elapsed_s=elapsed_before + time.time() - t0, config=cfg, args=vars(args),
                           device=str(dev), final=final, trainable_params=nparams), f, indent=1)

    log = open(os.path.join(args.out, "loss.csv"), "a")
    if step == 0:
        log.write("step,loss,lr,elapsed_s\n")
    model.train()
    pending, pending_last = [], [float("nan")]

    def flush_log():
        if not pending:
            return
        values = torch.stack([p[1] for p in pending]).tolist()
        now = elapsed_before + time.time() - t0
        for (s_, _, lr_), v in zip(pending, values):
            log.write(f"{s_},{v:.6f},{lr_:.3e},{now:.1f}\n")
        pending_last[0] = values[-1]
        pending.clear()
        log.flush()

    t0 = time.time()
    n = y_all.shape[0]
    ema_params = list(ema.parameters())
    model_params = list(model.parameters())
    while step < args.steps:
        if args.time_budget and time.time() - t0 >= args.time_budget:
            break
        idx = torch.randint(0, n, (args.batch,), device=dev)
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        for g in opt.param_groups:
            g["lr"] = lr
        if x_all is None:
            x0 = lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, device=dev)
        else:
            x0 = x_all[idx]
        loss = training_loss(model, x0, y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema_params, args.ema)
            torch._foreach_add_(ema_params, [p.detach() for p in model_params], alpha=1 - args.ema)
        step += 1
        # losses stay on the device and are fetched every 100 steps, so that logging does not sync every step
        pending.append((step, loss.detach(), lr))
        if step % 100 == 0 or step == args.steps:
            flush_log()
            print(f"step {step} loss {pending_last[0]:.4f} {elapsed_before + time.time() - t0:.0f}s", flush=True)
        if step % args.ckpt_every == 0:
            save()
    flush_log()
    log.close()
    save(final=True)
    print(f"stopped at step {step} after {elapsed_before + time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
