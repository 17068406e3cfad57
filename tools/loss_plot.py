#!/usr/bin/env python3
"""Draws a training loss curve (PNG, drawn with PIL: no plotting library here) from a loss.csv of tools/train.py or
tools/train_vae.py, or a log.jsonl of tools/shapes/train.py (its records with "step" and "loss"): the per-step
values in grey and a moving average in black, log-scale y.

  /usr/bin/python3 tools/loss_plot.py runs/latent/loss.csv models/fashion-latent-dit/card/loss.png --title "latent DiT"
"""
import argparse
import csv
import json
import math

from PIL import Image, ImageDraw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("csv")
    ap.add_argument("png")
    ap.add_argument("--column", default="loss")
    ap.add_argument("--window", type=int, default=100, help="moving-average window in steps")
    ap.add_argument("--title", default="training loss")
    a = ap.parse_args()
    with open(a.csv) as f:
        if a.csv.endswith(".jsonl"):
            recs = (json.loads(line) for line in f if line.strip())
            rows = [(int(r["step"]), float(r[a.column])) for r in recs if "step" in r and a.column in r]
        else:
            rows = [(int(r["step"]), float(r[a.column])) for r in csv.DictReader(f) if r[a.column] not in ("", "nan")]
    rows.sort()
    steps = [s for s, _ in rows]
    vals = [max(v, 1e-12) for _, v in rows]
    avg, acc = [], 0.0
    for i, v in enumerate(vals):
        acc += v
        if i >= a.window:
            acc -= vals[i - a.window]
        avg.append(acc / min(i + 1, a.window))
    W, H, L, R, T, B = 800, 420, 70, 20, 36, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    lo, hi = math.log10(min(vals)), math.log10(max(vals))
    hi = max(hi, lo + 1e-6)
    px = lambda s: L + (s - steps[0]) / max(1, steps[-1] - steps[0]) * (W - L - R)  # noqa: E731
    py = lambda v: T + (hi - math.log10(v)) / (hi - lo) * (H - T - B)  # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline="black")
    for s, v in zip(steps, vals):
        d.point((px(s), py(v)), fill=(190, 190, 190))
    d.line([(px(s), py(v)) for s, v in zip(steps, avg)], fill="black", width=2)
    for k in range(5):
        v = 10 ** (lo + (hi - lo) * k / 4)
        d.text((4, py(v) - 6), f"{v:.3g}", fill="black")
    for k in range(5):
        s = steps[0] + (steps[-1] - steps[0]) * k / 4
        d.text((px(s) - 10, H - B + 8), f"{int(s)}", fill="black")
    d.text((W // 2 - 20, H - 24), "step", fill="black")
    d.text((L, 12), f"{a.title}: {a.column} per step (grey), mean over {a.window} steps (black), log scale",
           fill="black")
    img.save(a.png)
    print(f"wrote {a.png}: {len(rows)} steps, last mean {avg[-1]:.4g}")


if __name__ == "__main__":
    main()
