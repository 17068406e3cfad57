#!/usr/bin/env python3
"""What a sampler setting buys on a model: class accuracy by the project's judge (tools/classifier.py) and the
distance to a near-converged solution from the same starting noise, per (sampler, steps) setting.

  /usr/bin/python3 tools/sampler_quality.py --model models/fashion-dit --classifier tools/eval/classifier.pt \
      --per-class 20 --guidance 3 --settings ddim:10 dpmpp_2m:10 ddim:15 dpmpp_2m:15 ddim:20 dpmpp_2m:20 \
      --reference ddim:100 --json out/sampler-quality.json

Every setting starts from the same x_T and labels (paired comparison), so the differences between settings are
not sampling noise of x_T. Columns: model evaluations per image (2 per step with guidance, 1 without), accuracy with
its binomial standard error, and rms / mean-absolute distance (on the [−1, 1] image scale, before quantisation)
to the --reference setting's images. Deterministic samplers only (DDIM eta 0, DPM-Solver++(2M)): a stochastic one
would not be comparable to a reference from the same x_T.
"""
import argparse
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classifier as judge  # noqa: E402
from dit.diffusion import sample  # noqa: E402
from evaluate import load_model, to_uint8  # noqa: E402

DETERMINISTIC = ("ddim", "dpmpp_2m")


def parse_setting(s):
    sampler, _, steps = s.partition(":")
    if sampler not in DETERMINISTIC or not steps.isdigit():
        raise argparse.ArgumentTypeError(f"expected SAMPLER:STEPS with SAMPLER in {DETERMINISTIC}, got '{s}'")
    return sampler, int(steps)


@torch.no_grad()
def run(model, x_T, labels, sampler, steps, guidance, mode):
    return sample(model, x_T, labels, steps, sampler=sampler, eta=0.0, guidance=guidance, guidance_mode=mode,
                  generator=torch.Generator().manual_seed(0)).clamp(-1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--per-class", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--mode", default="all")
    ap.add_argument("--settings", type=parse_setting, nargs="+", required=True, help="SAMPLER:STEPS ...")
    ap.add_argument("--reference", type=parse_setting, default=("ddim", 100))
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    model, _ = load_model(a.model, "cpu")
    clf = judge.load(a.classifier, "cpu")
    cfg = model.config()
    nc = cfg["num_classes"]
    labels = torch.arange(nc).repeat_interleave(a.per_class)
    g = torch.Generator().manual_seed(a.seed)
    x_T = torch.randn((len(labels), cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=g)
    evals_per_step = 2 if a.guidance != 1.0 else 1

    t0 = time.time()
    ref = run(model, x_T, labels, *a.reference, a.guidance, a.mode)
    print(f"reference {a.reference[0]}:{a.reference[1]} in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    rows = []
    for sampler, steps in [a.reference] + list(a.settings):
        t0 = time.time()
        imgs = ref if (sampler, steps) == a.reference else run(model, x_T, labels, sampler, steps, a.guidance,
                                                               a.mode)
        q = to_uint8(imgs).float() / 127.5 - 1.0  # judged as the server delivers them: 8-bit
        acc = float((judge.predict(clf, q) == labels).float().mean())
        d = imgs - ref
        row = dict(sampler=sampler, steps=steps, model_evals_per_image=evals_per_step * steps,
                   accuracy=acc, accuracy_se=math.sqrt(acc * (1 - acc) / len(labels)),
                   rms_to_reference=float(d.pow(2).mean().sqrt()), mean_abs_to_reference=float(d.abs().mean()),
                   seconds=round(time.time() - t0, 1))
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = dict(model=os.path.basename(os.path.normpath(a.model)), images_per_setting=len(labels),
                  guidance=a.guidance, guidance_mode=a.mode, seed=a.seed,
                  reference=f"{a.reference[0]}:{a.reference[1]}", results=rows)
    print(f"\n{len(labels)} images per setting, guidance {a.guidance}, reference {report['reference']} "
          f"from the same x_T\n")
    print("| sampler | steps | model evals / image | class accuracy | rms to reference |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['sampler']} | {r['steps']} | {r['model_evals_per_image']} | "
              f"{100 * r['accuracy']:.1f} % ± {100 * r['accuracy_se']:.1f} | {r['rms_to_reference']:.4f} |")
    if a.json:
        os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
        with open(a.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
