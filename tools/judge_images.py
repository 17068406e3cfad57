#!/usr/bin/env python3
"""Judges images the server wrote: how many the project's judge recognises as the class they were asked for.

  /usr/bin/python3 tools/judge_images.py DIR [--classifier tools/eval/classifier.pt] [--json out.json]

DIR holds one folder per class, named by the class index (0, 1, …), with the PNGs `./dit generate` wrote for that
class. Images larger than 28×28 (a latent model's decoded 32×32, Fashion-MNIST padded by 2) are cut to their central
28×28, the size the judge was trained on, as tools/evaluate.py does; colour images are converted to grey.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classifier as judge  # noqa: E402
from evaluate import central_crop  # noqa: E402


def load_images(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "*.png"))):
        a = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        try:
            out.append(central_crop(a) / 127.5 - 1.0)
        except ValueError as e:
            raise SystemExit(f"{path}: {e}")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dir")
    ap.add_argument("--classifier", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "eval",
                                                         "classifier.pt"))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    clf = judge.load(a.classifier, "cpu")
    classes = sorted((int(d) for d in os.listdir(a.dir) if d.isdigit()))
    if not classes:
        raise SystemExit(f"{a.dir}: no class folders (0, 1, …)")
    per, total, right = {}, 0, 0
    for c in classes:
        imgs = load_images(os.path.join(a.dir, str(c)))
        if not imgs:
            raise SystemExit(f"{a.dir}/{c}: no PNGs")
        pred = judge.predict(clf, torch.from_numpy(np.stack(imgs)[:, None]))
        hits = int((pred == c).sum())
        per[c] = dict(images=len(imgs), recognised=hits, accuracy=hits / len(imgs))
        total, right = total + len(imgs), right + hits
    report = dict(images=total, accuracy=right / total, per_class=per)
    print(json.dumps(report, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
