#!/usr/bin/env python3
"""Measures how often an independent classifier recognises generated samples as the requested class.

  /usr/bin/python3 tools/evaluate.py --model models/fashion-dit --classifier models/fashion-dit/eval/classifier.pt \
      --per-class 50 --guidance 1 2 4 --json out.json [--grid grid.png]

--model is a model folder (config.json + weights.safetensors) or a training checkpoint.pt (its EMA weights).
If --classifier does not exist it is trained first (tools/classifier.py) and saved there.
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classifier as judge  # noqa: E402
from dit import data as fmnist  # noqa: E402
from dit.diffusion import sample  # noqa: E402
from dit.model import DiT, dit_from_config  # noqa: E402
from dit import safetensors_io  # noqa: E402


def load_model(path, device):
    if os.path.isdir(path):
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
        model = dit_from_config(cfg)
        sd, _ = safetensors_io.read(os.path.join(path, "weights.safetensors"))
        model.load_state_dict(sd)
        names = cfg.get("class_names")
    else:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        model = DiT(**ck["config"])
        model.load_state_dict(ck["ema"])
        names = fmnist.CLASS_NAMES
    return model.to(device).eval(), names


@torch.no_grad()
def generate(model, labels, steps, guidance, seed, device, sampler="ddim", mode="all", batch=500, decoder=None):
    """Images in [−1, 1]. With a decoder (a latent model's vae/), the latents are decoded, then the decoded 32×32
    image is cut to the central 28×28 that the judge and the Fashion-MNIST images have (the VAE was trained on
    Fashion-MNIST padded by 2 on every side, tools/train_vae.py)."""
    g = torch.Generator(device=device).manual_seed(seed)
    cfg = model.config()
    outs = []
    for k in range(0, len(labels), batch):
        y = labels[k:k + batch].to(device)
        x = torch.randn((len(y), cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=g,
                        device=device)
        z = sample(model, x, y, steps, sampler=sampler, guidance=guidance, guidance_mode=mode, generator=g)
        if decoder is not None:
            z = central_crop(decoder(z.cpu()))
        outs.append(z.clamp(-1, 1).cpu())
    return torch.cat(outs)


def central_crop(img, size=28):
    """The central size×size of images [..., H, W] (tensor or array): the judge's 28×28 out of a latent model's
    32×32 decode (Fashion-MNIST padded by 2 on every side, tools/train_vae.py)."""
    h, w = img.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"{w}×{h} is smaller than {size}×{size}")
    top, left = (h - size) // 2, (w - size) // 2
    return img[..., top:top + size, left:left + size]


def load_vae(model_path, vae_path=None):
    """The model's full decoder: --vae, else the model folder's vae/ (None for a pixel model)."""
    from dit.vae import load_decoder
    folder = vae_path or (os.path.join(model_path, "vae") if os.path.isdir(model_path) else None)
    return load_decoder(folder) if folder and os.path.isdir(folder) else None


def to_uint8(x):
    return ((x.clamp(-1, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def save_grid(images, names, path, scale=2):
    """images: [rows·cols, 1, H, W] in [−1, 1], one row per class; a label column on the left."""
    from PIL import Image, ImageDraw
    rows = len(names)
    cols = images.shape[0] // rows
    h, w = images.shape[2] * scale, images.shape[3] * scale
    label_w = 90
    canvas = Image.new("L", (label_w + cols * (w + 2), rows * (h + 2)), 255)
    draw = ImageDraw.Draw(canvas)
    u8 = to_uint8(images).numpy()
    for r in range(rows):
        draw.text((4, r * (h + 2) + h // 2 - 6), f"{r} {names[r]}", fill=0)
        for c in range(cols):
            tile = Image.fromarray(u8[r * cols + c, 0]).resize((w, h), Image.NEAREST)
            canvas.paste(tile, (label_w + c * (w + 2), r * (h + 2)))
    canvas.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--mode", default="all")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--json", default=None)
    ap.add_argument("--grid", default=None, help="also write a 10×10 labelled grid PNG at the first guidance")
    ap.add_argument("--grid-guidance", type=float, default=None)
    ap.add_argument("--vae", default=None, help="latent models: the vae/ folder (default: MODEL/vae when present)")
    ap.add_argument("--frechet", action="store_true",
                    help="also the Fréchet distance in the judge's features against the 10,000 test images")
    a = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    model, names = load_model(a.model, dev)
    decoder = load_vae(a.model, a.vae)
    if os.path.exists(a.classifier):
        clf = judge.load(a.classifier, dev)
        with open(os.path.splitext(a.classifier)[0] + ".json") as f:
            clf_info = json.load(f)
    else:
        clf, clf_info = judge.train(a.classifier)
        clf = clf.to(dev)
    report = dict(classifier_test_accuracy=clf_info["test_accuracy"], per_class=a.per_class, steps=a.steps,
                  sampler=a.sampler, eta=0.0, guidance_mode=a.mode, seed=a.seed, results=[])
    nc = model.config()["num_classes"]
    labels = torch.arange(nc).repeat_interleave(a.per_class)
    for gs in (a.guidance if a.per_class > 0 else []):
        t0 = time.time()
        imgs = generate(model, labels, a.steps, gs, a.seed, dev, a.sampler, a.mode, decoder=decoder)
        # judge the images as the server would deliver them: quantised to 8-bit
        q = to_uint8(imgs).float() / 127.5 - 1.0
        pred = judge.predict(clf, q)
        per = [float((pred[labels == c] == c).float().mean()) for c in range(nc)]
        res = dict(guidance=gs, accuracy=float((pred == labels).float().mean()), per_class_accuracy=per,
                   seconds=round(time.time() - t0, 1))
        if a.frechet:
            from quality_curve import features, frechet, stats
            test_images, _ = fmnist.load("test")
            ref = stats(features(clf.cpu(), torch.from_numpy(fmnist.to_model_range(test_images))))
            res["frechet"] = frechet(stats(features(clf.cpu(), q.cpu())), ref)
        report["results"].append(res)
        print(json.dumps(res), flush=True)
    if a.grid:
        gg = a.grid_guidance if a.grid_guidance is not None else a.guidance[-1]
        grid_labels = torch.arange(nc).repeat_interleave(10)
        save_grid(generate(model, grid_labels, a.steps, gg, a.seed + 1, dev, a.sampler, a.mode, decoder=decoder),
                  names, a.grid)
        report["grid"] = dict(path=os.path.basename(a.grid), guidance=gg, seed=a.seed + 1)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
