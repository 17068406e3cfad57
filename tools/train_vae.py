#!/usr/bin/env python3
"""Trains the project's small AutoencoderKL on Fashion-MNIST padded to 32×32, and exports it.

  /usr/bin/python3 tools/train_vae.py --out runs/vae --time-budget 1500         # train (resumable)
  /usr/bin/python3 tools/train_vae.py --out runs/vae --export models/fashion-latent-dit/vae

Architecture: the sd-vae-ft-ema family (tools/dit/autoencoder.py, tools/dit/vae.py) scaled down: 1 channel in and out,
block_out_channels (16, 32, 64) so f = 4 (a 32×32 image ↔ a 4×8×8 latent), one resnet per encoder block (two per
decoder block), attention in both mid blocks, GroupNorm with 8 groups. Objective: mean squared error of the
reconstruction from a posterior sample + kl_weight · KL(posterior ‖ N(0, 1)) (no perceptual or adversarial loss:
there is no pretrained network to use here). Adam, resumable checkpoints every --ckpt-every steps, a CSV log of every
step's loss.

--export writes a diffusers AutoencoderKL folder (config.json with the scaling_factor that gives the training
latents unit variance, diffusion_pytorch_model.safetensors with encoder and decoder, decoder.onnx), the test-set
reconstruction PSNR in vae_eval.json, and the training-set posterior (mean, log-variance) as latents.pt in --out for
tools/train.py --latents.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dit import data as fmnist  # noqa: E402
from dit import safetensors_io  # noqa: E402
from dit.autoencoder import AutoencoderKL  # noqa: E402
from dit.vae import DIFFUSERS_VERSION, WEIGHTS_FILE, FullDecoder, export_decoder_onnx, staged_folder  # noqa: E402

CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": DIFFUSERS_VERSION, "act_fn": "silu",
    "block_out_channels": [16, 32, 64], "down_block_types": ["DownEncoderBlock2D"] * 3, "in_channels": 1,
    "latent_channels": 4, "layers_per_block": 1, "norm_num_groups": 8, "out_channels": 1, "sample_size": 32,
    "up_block_types": ["UpDecoderBlock2D"] * 3, "mid_block_add_attention": True,
}
PAD = 2  # 28 → 32: two background rows/columns on every side


def padded(split, data_dir):
    images, labels = fmnist.load(split, data_dir)
    x = torch.from_numpy(fmnist.to_model_range(images))
    return F.pad(x, (PAD, PAD, PAD, PAD), value=-1.0), torch.from_numpy(labels)


def kl_term(mean, logvar):
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=(1, 2, 3)).mean()


def psnr(model, x, batch=500):
    """Test-set PSNR (dB, peak-to-peak 2 on [−1, 1], i.e. 255 levels) of decode(posterior mean), 8-bit quantised."""
    se, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            xb = x[i:i + batch]
            mean, _ = model.encode(xb)
            rec = model.decode_unscaled(mean).clamp(-1, 1)
            q = lambda t: torch.round((t + 1) * 127.5)  # noqa: E731
            se += (q(rec)[..., PAD:-PAD, PAD:-PAD] - q(xb)[..., PAD:-PAD, PAD:-PAD]).pow(2).sum().item()
            n += xb[..., PAD:-PAD, PAD:-PAD].numel()
    mse = se / n
    return 10 * np.log10(255.0 ** 2 / mse)


def train(a):
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(a.seed)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    x_all, _ = padded("train", a.data)
    x_all = x_all.to(dev)
    model = AutoencoderKL(CONFIG).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    ckpt = os.path.join(a.out, "checkpoint.pt")
    step, before = 0, 0.0
    if os.path.exists(ckpt):
        ck = torch.load(ckpt, map_location=dev)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        for g in opt.param_groups:  # a resumed run may continue at another learning rate
            g["lr"] = a.lr
        step, before = ck["step"], ck["elapsed"]
        torch.set_rng_state(ck["rng"].cpu())
        print(f"resumed at step {step}", flush=True)
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.3f} M parameters", flush=True)
    t0 = time.time()

    def save():
        tmp = ckpt + ".tmp"
        torch.save(dict(model={k: v.cpu() for k, v in model.state_dict().items()}, opt=opt.state_dict(), step=step,
                        elapsed=before + time.time() - t0,
                        rng=torch.get_rng_state(), config=CONFIG, args=vars(a)), tmp)
        os.replace(tmp, ckpt)

    log = open(os.path.join(a.out, "loss.csv"), "a")
    if step == 0:
        log.write("step,loss,mse,kl,elapsed_s\n")
    model.train()
    while step < a.steps and not (a.time_budget and time.time() - t0 >= a.time_budget):
        idx = torch.randint(0, x_all.shape[0], (a.batch,), device=dev)
        xb = x_all[idx]
        mean, logvar = model.encode(xb)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        mse = F.mse_loss(model.decode_unscaled(z), xb)
        kl = kl_term(mean, logvar)
        loss = mse + a.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        log.write(f"{step},{loss.item():.6f},{mse.item():.6f},{kl.item():.3f},{before + time.time() - t0:.1f}\n")  # syncs
        if step % 50 == 0:
            log.flush()
            print(f"step {step} mse {mse.item():.5f} kl {kl.item():.1f} {before + time.time() - t0:.0f}s", flush=True)
        if step % a.ckpt_every == 0:
            save()
    log.close()
    save()
    print(f"stopped at step {step} after {before + time.time() - t0:.0f}s", flush=True)


def export(a):
    ck = torch.load(os.path.join(a.out, "checkpoint.pt"), map_location="cpu")
    model = AutoencoderKL(CONFIG)
    model.load_state_dict(ck["model"])
    model.eval()
    x_train, _ = padded("train", a.data)
    x_test, _ = padded("test", a.data)
    means, logvars = [], []
    with torch.no_grad():
        for i in range(0, x_train.shape[0], 1000):
            m, lv = model.encode(x_train[i:i + 1000])
            means.append(m)
            logvars.append(lv)
    mean, logvar = torch.cat(means), torch.cat(logvars)
    g = torch.Generator().manual_seed(0)
    sample = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
    scaling = float(f"{1.0 / sample.std().item():.5g}")
    torch.save(dict(mean=mean, logvar=logvar, scaling_factor=scaling), os.path.join(a.out, "latents.pt"))
    cfg = dict(CONFIG, scaling_factor=scaling)
    value = psnr(model, x_test)
    with staged_folder(a.export) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True)
            f.write("\n")
        safetensors_io.write(os.path.join(tmp, WEIGHTS_FILE), model.state_dict_diffusers(), {"format": "pt"})
        dec = FullDecoder(cfg)
        missing = dec.load_state_dict({k: v for k, v in model.state_dict_diffusers().items()
                                       if not k.startswith(("encoder.", "quant_conv."))})
        assert not missing.missing_keys and not missing.unexpected_keys, missing
        export_decoder_onnx(dec, os.path.join(tmp, "decoder.onnx"))
        facts = dict(test_psnr_db=round(value, 2), train_steps=ck["step"], train_seconds=round(ck["elapsed"]),
                     scaling_factor=scaling, latent_std_unscaled=round(sample.std().item(), 5),
                     latent_mean_unscaled=round(sample.mean().item(), 5), batch=ck["args"]["batch"],
                     lr=ck["args"]["lr"], kl_weight=ck["args"]["kl_weight"])
        with open(os.path.join(tmp, "vae_eval.json"), "w") as f:
            json.dump(facts, f, indent=1)
            f.write("\n")
    print(json.dumps(facts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run folder (checkpoint.pt, loss.csv, latents.pt)")
    ap.add_argument("--data", default=None)
    ap.add_argument("--export", default=None, help="write the diffusers folder here instead of training")
    ap.add_argument("--steps", type=int, default=100000)
    ap.add_argument("--time-budget", type=float, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument("--ckpt-every", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads or os.cpu_count())
    export(a) if a.export else train(a)


if __name__ == "__main__":
    main()
