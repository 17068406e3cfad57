#!/usr/bin/env python3
"""Quality against cost for sampler and step-caching settings on the bundled model, scored by the project's judge.

  /usr/bin/python3 tools/quality_curve.py --images 2000 --out docs/quality            # the README's table and plot
  /usr/bin/python3 tools/quality_curve.py --images 200 --settings ddim:10 ddim:20:cache2 --out runs/q   # a quick look

A latent model (one with a vae/ folder) is decoded by its VAE and the central 28×28 of the 32×32 decode is judged,
as tools/evaluate.py does. Every scored setting is appended to OUT/rows.jsonl as soon as it is done, and a run with
the same --out, model, image count, guidance and seed skips the settings found there: an interrupted run resumes,
and settings can be added later. The report is rewritten after every setting.

For every setting (SAMPLER:STEPS or SAMPLER:STEPS:cacheK, K the step-cache interval of docs/STEP_CACHE.md) it
generates --images images (classes in equal shares, guidance --guidance on all channels, by default the model's
own; the model's defaults otherwise) with the PyTorch reference (tools/dit/), quantises them to 8 bits as the
server delivers them, and scores:

  * class accuracy: the fraction the judge (tools/classifier.py, tools/eval/classifier.pt) assigns to the requested
    class;
  * Fréchet distance in the judge's penultimate features (the 256 ReLU outputs of fc1) between the generated images
    and the 10,000 Fashion-MNIST test images: |μ_g − μ_r|² + Tr(Σ_g + Σ_r − 2(Σ_r^½ Σ_g Σ_r^½)^½);
  * model evaluations per image (steps, doubled by guidance) and transformer-block evaluations per image.

Every setting draws x_T and labels from the same seed, except that the reference setting (--reference, DDIM 50) is
also run --repeats times with other seeds: the spread of its Fréchet distance over those runs (max − min) is the
run-to-run spread the comparisons use. The tool names the cheapest setting (fewest model evaluations per image)
whose Fréchet distance is within that spread of the reference's, and for each cached setting its block saving and
Fréchet distance against the same sampler and steps without caching. Writes quality.json, quality.md (the table)
and quality.png (Fréchet distance against model evaluations) into --out.

The Fréchet distance measures the distance to the data, not to what the sampler should compute: with strong
guidance the converged samples are over-saturated, and a coarse solver that falls short of them can score a LOWER
distance. So the tool also measures how far each deterministic setting (DDIM with eta 0, DPM-Solver++) lands from
the converged solution of the same ODE: --converged (default DDIM 500) is run on the first --converged-images images
(same x_T and labels for every setting), and each setting's root-mean-square difference from it, over the decoded
pixels in [−1, 1], is its "solver error" (DDPM, being stochastic, has none).
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import classifier as judge  # noqa: E402
from dit import data as fmnist  # noqa: E402
from dit.diffusion import StepCache, sample  # noqa: E402
from evaluate import central_crop, load_model, load_vae, to_uint8  # noqa: E402

# cheapest first, so that an interrupted run has the most rows
DEFAULT_SETTINGS = ["dpmpp_2m:10", "ddim:10", "dpmpp_2m:15", "dpmpp_2m:20", "ddim:20", "dpmpp_2m:25",
                    "dpmpp_2m:20:cache2", "ddim:50:cache4", "ddim:50:cache3", "ddim:50:cache2", "ddim:100",
                    "ddpm:250"]


def parse_setting(s):
    parts = s.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("ddim", "ddpm", "dpmpp_2m") or not parts[1].isdigit() or (
            len(parts) == 3 and not (parts[2].startswith("cache") and parts[2][5:].isdigit())):
        raise argparse.ArgumentTypeError(f"expected SAMPLER:STEPS[:cacheK], got '{s}'")
    return parts[0], int(parts[1]), int(parts[2][5:]) if len(parts) == 3 else 0


def name(setting):
    sampler, steps, k = setting
    return f"{sampler}:{steps}" + (f":cache{k}" if k else "")


def features(clf, x):
    """The judge's penultimate features (fc1 after ReLU) of images in [−1, 1], [N, 1, 28, 28]."""
    m = clf
    with torch.no_grad():
        h = torch.relu(m.bn1(m.c1(x)))
        h = torch.nn.functional.max_pool2d(torch.relu(m.bn2(m.c2(h))), 2)
        h = torch.nn.functional.max_pool2d(torch.relu(m.bn3(m.c3(h))), 2)
        return torch.relu(m.fc1(h.flatten(1))).double().numpy()


def stats(f):
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet(a, b):
    """Fréchet distance between Gaussians (μ, Σ), with the matrix square roots from symmetric eigendecompositions."""
    (mu1, s1), (mu2, s2) = a, b
    w, v = np.linalg.eigh(s2)
    root2 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root2 @ s1 @ root2)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(cross, 0, None))))


@torch.no_grad()
def generate(model, setting, n, guidance, seed, batch, decoder=None):
    """Images in [−1, 1] as the judge sees them: a latent model's samples decoded and cut to the central 28×28."""
    sampler, steps, k = setting
    cfg = model.config()
    dev = next(model.parameters()).device
    labels = torch.arange(n) % cfg["num_classes"]
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, cfg["in_channels"], cfg["input_size"], cfg["input_size"]), generator=g)
    gd = torch.Generator(device=dev).manual_seed(seed + 1)  # DDPM's per-step noise
    outs, blocks = [], 0
    for i in range(0, n, batch):
        cache = StepCache(k, steps, cfg["depth"]) if k else None
        z = sample(model, x_T[i:i + batch].to(dev), labels[i:i + batch].to(dev), steps, sampler=sampler, eta=0.0,
                   guidance=guidance, guidance_mode="all", generator=gd, cache=cache).cpu()
        if decoder is not None:
            z = central_crop(decoder(z))
        outs.append(z.clamp(-1, 1))
        blocks = cache.block_evals if cache else steps * cfg["depth"]
    return torch.cat(outs), labels, blocks


def score(model, clf, ref_stats, setting, n, guidance, seed, batch, decoder=None):
    t0 = time.time()
    imgs, labels, blocks_per_row = generate(model, setting, n, guidance, seed, batch, decoder)
    q = to_uint8(imgs).float() / 127.5 - 1.0
    acc = float((judge.predict(clf, q) == labels).float().mean())
    fd = frechet(stats(features(clf, q)), ref_stats)
    evals = setting[1] * (2 if guidance != 1.0 else 1)
    return dict(setting=name(setting), sampler=setting[0], steps=setting[1], cache_interval=setting[2],
                model_evals_per_image=evals, block_evals_per_image=blocks_per_row * (2 if guidance != 1.0 else 1),
                accuracy=acc, accuracy_se=math.sqrt(acc * (1 - acc) / n), frechet=fd, seed=seed,
                seconds=round(time.time() - t0, 1))


COLORS = {"ddim": (31, 119, 180), "ddpm": (44, 160, 44), "dpmpp_2m": (214, 39, 40)}


def plot(rows, path, spread_band=None, key="frechet",
         title="Frechet distance in the judge's features (lower is better); hollow = step caching", from_zero=False):
    """rows[key] (the Fréchet distance, or the solver error) against model evaluations per image (log scale), one
    colour per sampler; cached settings hollow; the y axis starts at 0 with from_zero, else just below the lowest
    value. Drawn with PIL (no plotting library here)."""
    rows = [r for r in rows if r.get(key) is not None]
    W, H, L, R, T, B = 900, 560, 80, 30, 40, 70
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    xs = [r["model_evals_per_image"] for r in rows]
    ys = [r[key] for r in rows]
    x0, x1 = math.log10(min(xs) / 1.3), math.log10(max(xs) * 1.3)
    y0 = 0.0 if from_zero else max(0.0, min(ys) - 0.1 * (max(ys) - min(ys)))
    y1 = max(ys) + 0.1 * (max(ys) - y0) if max(ys) > y0 else y0 + 1.0
    px = lambda v: L + (math.log10(v) - x0) / (x1 - x0) * (W - L - R)  # noqa: E731
    py = lambda v: H - B - (v - y0) / (y1 - y0) * (H - T - B)  # noqa: E731
    d.rectangle([L, T, W - R, H - B], outline="black")
    for e in (10, 20, 50, 100, 200, 500):
        if 10 ** x0 <= e <= 10 ** x1:
            d.line([px(e), H - B, px(e), H - B + 5], fill="black")
            d.text((px(e) - 8, H - B + 8), str(e), fill="black")
    for k in range(6):
        v = y0 + (y1 - y0) * k / 5
        d.line([L - 5, py(v), L, py(v)], fill="black")
        d.text((8, py(v) - 6), f"{v:.3g}", fill="black")
    d.text((W // 2 - 140, H - 30), "model evaluations per image (log scale)", fill="black")
    d.text((L, 12), title, fill="black")
    if spread_band:
        lo, hi = max(spread_band[0], y0), min(spread_band[1], y1)
        d.rectangle([L + 1, py(hi), W - R - 1, py(lo)], fill=(235, 235, 235))
    for sampler, color in COLORS.items():
        pts = sorted((r["model_evals_per_image"], r[key]) for r in rows
                     if r["sampler"] == sampler and not r["cache_interval"])
        for a, b in zip(pts, pts[1:]):
            d.line([px(a[0]), py(a[1]), px(b[0]), py(b[1])], fill=color, width=2)
    for r in rows:
        c = COLORS[r["sampler"]]
        x, y = px(r["model_evals_per_image"]), py(r[key])
        d.ellipse([x - 5, y - 5, x + 5, y + 5], outline=c, width=2, fill=None if r["cache_interval"] else c)
        d.text((x + 7, y - 12), r["setting"], fill=c)
    img.save(path)


def report(a, model_name, rows, ref_runs):
    """quality.json, quality.md and quality.png from the rows scored so far (the reference first)."""
    ref = rows[0]
    spread = max(ref_runs) - min(ref_runs) if len(ref_runs) > 1 else float("nan")
    within = [r for r in rows if len(ref_runs) > 1 and r["frechet"] <= ref["frechet"] + spread]
    cheapest = min(within, key=lambda r: (r["model_evals_per_image"], r["block_evals_per_image"], r["frechet"]),
                   default=None)
    caching = []
    for r in rows:
        if r["cache_interval"]:
            base = next((b for b in rows if b["sampler"] == r["sampler"] and b["steps"] == r["steps"]
                         and not b["cache_interval"]), None)
            if base:
                caching.append(dict(setting=r["setting"], base=base["setting"],
                                    block_saving=base["block_evals_per_image"] / r["block_evals_per_image"],
                                    frechet_increase=r["frechet"] / base["frechet"] - 1))
    rep = dict(model=model_name, images_per_setting=a.images, guidance=a.guidance, seed=a.seed,
               reference=name(a.reference), reference_runs=ref_runs, spread=spread,
               cheapest_within_spread=cheapest["setting"] if cheapest else None, caching=caching, results=rows,
               solver_error_against=name(a.converged) if any("solver_error" in r for r in rows) else None,
               solver_error_images=a.converged_images,
               torch=torch.__version__, threads=torch.get_num_threads(), device=a.device)
    lines = [f"{model_name}: {a.images} images per setting (classes in equal shares), guidance {a.guidance:g}; "
             f"Fréchet distance against the 10,000 test images in the judge's features; reference "
             f"{name(a.reference)} run {len(ref_runs)}× with different seeds: "
             f"{', '.join(f'{v:.2f}' for v in ref_runs)} (spread {spread:.2f}).", "",
             f"| setting | model evals / image | block evals / image | class accuracy | Fréchet distance | "
             f"solver error (RMS to {name(a.converged)}, {a.converged_images} images) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["sampler"], r["steps"], r["cache_interval"])):
        err = r.get("solver_error")
        lines.append(f"| {r['setting']} | {r['model_evals_per_image']} | {r['block_evals_per_image']} | "
                     f"{100 * r['accuracy']:.1f} % ± {100 * r['accuracy_se']:.1f} | {r['frechet']:.2f} | "
                     f"{'—' if err is None else f'{err:.4f}'} |")
    lines.append("")
    if cheapest:
        lines.append(f"Cheapest setting within the spread of {name(a.reference)}: **{cheapest['setting']}** "
                     f"({cheapest['model_evals_per_image']} model evaluations per image vs "
                     f"{ref['model_evals_per_image']}).")
    errs = [r for r in rows if r.get("solver_error") is not None]
    ref_err = ref.get("solver_error")
    closest = min((r for r in errs if r["solver_error"] <= ref_err),
                  key=lambda r: (r["model_evals_per_image"], r["block_evals_per_image"]), default=None) \
        if ref_err is not None else None
    rep["cheapest_within_reference_solver_error"] = closest["setting"] if closest else None
    if closest:
        lines.append(f"Cheapest setting at most {name(a.reference)}'s solver error ({ref_err:.4f}): "
                     f"**{closest['setting']}** ({closest['model_evals_per_image']} model evaluations per image).")
    for c in caching:
        lines.append(f"Step caching {c['setting']}: {c['block_saving']:.2f}× fewer block evaluations than "
                     f"{c['base']}, Fréchet distance {100 * c['frechet_increase']:+.1f} %.")
    with open(os.path.join(a.out, "quality.json"), "w") as f:
        json.dump(rep, f, indent=1)
    with open(os.path.join(a.out, "quality.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    plot(rows, os.path.join(a.out, "quality.png"),
         (min(ref_runs), ref["frechet"] + spread) if len(ref_runs) > 1 else None)
    if any(r.get("solver_error") is not None for r in rows):
        plot(rows, os.path.join(a.out, "solver_error.png"), key="solver_error",
             title=f"solver error: RMS distance to {name(a.converged)} over the decoded pixels (lower is better)",
             from_zero=True)
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/fashion-latent-dit")
    ap.add_argument("--classifier", default="tools/eval/classifier.pt")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--guidance", type=float, default=None, help="default: the model's own (config.json)")
    ap.add_argument("--settings", type=parse_setting, nargs="+", default=[parse_setting(s) for s in DEFAULT_SETTINGS])
    ap.add_argument("--reference", type=parse_setting, default=parse_setting("ddim:50"))
    ap.add_argument("--repeats", type=int, default=3, help="runs of the reference setting, for the spread")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--converged", type=parse_setting, default=parse_setting("ddim:500"),
                    help="the converged solution the solver errors are measured against")
    ap.add_argument("--converged-images", type=int, default=200, help="images for the solver errors (0 = none)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    if a.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 like the reference tests
    model, _ = load_model(a.model, a.device)
    if a.guidance is None:  # the model folder's default; a training checkpoint has none
        cfg_path = os.path.join(a.model, "config.json")
        a.guidance = 1.0
        if os.path.isfile(cfg_path):
            with open(cfg_path) as f:
                a.guidance = float(json.load(f).get("defaults", {}).get("guidance", 1.0))
    decoder = load_vae(a.model)
    model_name = os.path.basename(os.path.normpath(a.model))
    clf = judge.load(a.classifier, "cpu")
    test_images, _ = fmnist.load("test")
    ref_stats = stats(features(clf, torch.from_numpy(fmnist.to_model_range(test_images))))

    # what was scored before with this model, count, guidance and seed is reused (resume, or settings added later)
    done_path = os.path.join(a.out, "rows.jsonl")
    done = {(r["setting"], r["seed"]): r
            for r in kept(done_path, dict(model=model_name, images=a.images, guidance=a.guidance))}

    def scored(setting, seed):
        key = (name(setting), seed)
        if key not in done:
            r = score(model, clf, ref_stats, setting, a.images, a.guidance, seed, a.batch, decoder)
            r.update(model=model_name, images=a.images, guidance=a.guidance)
            with open(done_path, "a") as f:
                f.write(json.dumps(r) + "\n")
            print(json.dumps(r), flush=True)
            done[key] = r
        return done[key]

    rows = [scored(a.reference, a.seed)]
    ref_runs = [rows[0]["frechet"]] + [scored(a.reference, a.seed + 1000 * r)["frechet"] for r in range(1, a.repeats)]
    known = solver_errors(a, model, decoder, model_name, [], compute=False) if a.converged_images > 0 else {}
    for s in a.settings:
        if s != a.reference:
            rows.append(scored(s, a.seed))
            for r in rows:  # the errors measured by an earlier run, so that an interrupted run's report keeps them
                if r["setting"] in known:
                    r["solver_error"] = known[r["setting"]]
            report(a, model_name, rows, ref_runs)
    if a.converged_images > 0:
        errors = solver_errors(a, model, decoder, model_name, [parse_setting(r["setting"]) for r in rows])
        for r in rows:
            r["solver_error"] = errors.get(r["setting"])
    print("\n".join(report(a, model_name, rows, ref_runs)))


def kept(path, match):
    """The records of a JSON-lines file (none if it does not exist) whose fields equal those of match."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    return [r for r in records if all(r.get(k) == v for k, v in match.items())]


def deterministic(setting):
    return setting[0] in ("ddim", "dpmpp_2m")  # the tool runs DDIM with eta 0


def solver_errors(a, model, decoder, model_name, settings, compute=True):
    """{setting name: RMS difference from a.converged over a.converged_images images}, deterministic settings only;
    kept in OUT/solver_errors.jsonl (and the converged images in OUT/converged-*.pt) so that a rerun reuses them.
    With compute=False only what is kept there."""
    k, conv = a.converged_images, name(a.converged)
    key = dict(model=model_name, images=k, guidance=a.guidance, seed=a.seed, converged=conv)
    path = os.path.join(a.out, "solver_errors.jsonl")
    done = {r["setting"]: r["rms"] for r in kept(path, key)}
    todo = [s for s in settings if deterministic(s) and name(s) not in done]
    if todo and compute:
        ref_path = os.path.join(a.out, f"converged-{conv.replace(':', '-')}-{k}-g{a.guidance:g}-s{a.seed}.pt")
        if os.path.exists(ref_path):
            ref = torch.load(ref_path)
        else:
            t0 = time.time()
            ref = generate(model, a.converged, k, a.guidance, a.seed, a.batch, decoder)[0]
            torch.save(ref, ref_path)
            print(f"converged solution {conv}, {k} images: {time.time() - t0:.0f} s", flush=True)
        for s in todo:
            imgs = generate(model, s, k, a.guidance, a.seed, a.batch, decoder)[0]
            done[name(s)] = float(torch.sqrt(torch.mean((imgs.double() - ref.double()) ** 2)))
            with open(path, "a") as f:
                f.write(json.dumps(dict(key, setting=name(s), rms=done[name(s)])) + "\n")
            print(f"solver error {name(s)}: {done[name(s)]:.4f}", flush=True)
    return done


if __name__ == "__main__":
    main()
