#!/usr/bin/env python3
"""Checks what `./dit generate --format png,tensor [--format image-tensor] --previews` wrote for a LATENT model with
a VAE (tools/e2e.sh, latent section), in one or more output folders (e.g. one per backend):

  - each result PNG is RGB and f× the latent size (f = the VAE's scale factor, 8 for sd-vae-ft-ema);
  - it equals tools/decode_reference.py's decoding (PyTorch, the server's PNG quantisation) of the latent tensor the
    server returned, within one level in every channel on at least --min-close (default 99.9 %) of the pixels; the
    measured fraction and the largest difference are printed;
  - with image-tensor files: the decoded float image matches the reference within one level (1/127.5) on the same
    fraction of values, and the PNG is exactly that image quantised;
  - with --previews LAST: preview frames per image up to step LAST, including LAST's (a slow client may miss older
    frames, never the newest), each RGB and as large as the result (the tiny decoder renders full-size frames), and
    the animated GIF.

  /usr/bin/python3 tools/check_latent_e2e.py MODEL_DIR OUT_DIR [OUT_DIR ...] --count 2 [--previews LAST_STEP]
      [--min-close 0.999]

Files are found by the client's names: MODEL-LABEL-SEED.png, MODEL-LABEL-SEED.tensor.CxHxW.f32,
MODEL-LABEL-SEED.image.CxHxW.f32, MODEL-LABEL-SEED-stepNNNN.png, MODEL-LABEL-SEED.gif. All latents of all folders
are decoded by one decode_reference.py run.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from decode_reference import to_bytes  # noqa: E402  (the server's quantisation, ImageCodec.toByte)

TENSOR = re.compile(r"^(?P<base>.+)\.(?P<kind>tensor|image)\.(?P<shape>\d+(?:x\d+)*)\.f32$")


def read_tensor(path):
    shape = tuple(int(d) for d in TENSOR.match(os.path.basename(path)).group("shape").split("x"))
    data = np.fromfile(path, dtype="<f4")
    if data.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: {data.size} floats for shape {shape}")
    return data.reshape(shape)


def scale_factor(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        named = json.load(f).get("vae")
    vae = os.path.normpath(os.path.join(model_dir, named)) if named else os.path.join(model_dir, "vae")
    with open(os.path.join(vae, "config.json")) as f:
        cfg = json.load(f)
    return 2 ** (len(cfg.get("block_out_channels", [64])) - 1)


def check_image(base, ref_px, ref_image, f, h, w, previews, min_close, say):
    """Returns the failures of one image."""
    failures = []
    name = os.path.basename(base)
    im = Image.open(base + ".png")
    if im.mode != "RGB" or im.size != (f * w, f * h):
        return [f"{name}.png is {im.mode} {im.size}, expected RGB {(f * w, f * h)}"]
    px = np.asarray(im, dtype=np.int16)
    diff = np.abs(px - ref_px).max(axis=2)  # a pixel is close when all three channels are
    close = float(np.mean(diff <= 1))
    say(f"{name}.png vs decode_reference.py: {close:.5f} of pixels within one level "
        f"(max diff {int(diff.max())}, {int(np.sum(diff > 1))} of {diff.size} pixels beyond)")
    if close < min_close:
        failures.append(f"{name}.png: only {close:.5f} of pixels within one level (need {min_close})")
    # a saturated or flat image would make the comparison meaningless
    mid = float(np.mean((px > 0) & (px < 255)))
    if mid < 0.25 or px.std() < 10:
        failures.append(f"{name}.png is nearly flat or saturated ({mid:.2f} unsaturated, std {px.std():.1f})")

    images = glob.glob(glob.escape(base) + ".image.*.f32")
    if images:
        img = read_tensor(images[0])
        if img.shape != (3, f * h, f * w):
            failures.append(f"{os.path.basename(images[0])}: shape {img.shape}")
        else:
            err = np.abs(img - ref_image)
            close_f = float(np.mean(err * 127.5 <= 1))
            say(f"{name} image tensor vs reference: {close_f:.5f} of values within 1/127.5, "
                f"max abs diff {float(err.max()):.2e}")
            if close_f < min_close:
                failures.append(f"{name} image tensor: only {close_f:.5f} within 1/127.5")
            if not np.array_equal(to_bytes(img).transpose(1, 2, 0), px.astype(np.uint8)):
                failures.append(f"{name}.png is not its image tensor quantised")

    if previews:
        frames = sorted(glob.glob(glob.escape(base) + "-step*.png"))
        steps = [int(re.search(r"-step(\d+)\.png$", p).group(1)) for p in frames]
        sizes = {Image.open(p).size for p in frames}
        modes = {Image.open(p).mode for p in frames}
        say(f"{name}: preview frames at steps {steps}, sizes {sorted(sizes)}, modes {sorted(modes)}")
        if previews not in steps or max(steps) > previews:
            failures.append(f"{name}: preview frames at steps {steps}, expected up to and including {previews}")
        if sizes != {(f * w, f * h)} or modes != {"RGB"}:
            failures.append(f"{name}: preview frames are {sorted(modes)} {sorted(sizes)}, expected RGB "
                            f"{(f * w, f * h)} (the tiny decoder's full size)")
        if not os.path.isfile(base + ".gif") or not os.path.getsize(base + ".gif"):
            failures.append(f"{name}.gif is missing or empty")
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("out_dirs", nargs="+")
    ap.add_argument("--count", type=int, required=True, help="images each generation made")
    ap.add_argument("--previews", type=int, default=0, metavar="LAST_STEP",
                    help="the step of the last preview frame of each image (0: previews not checked)")
    ap.add_argument("--min-close", type=float, default=0.999)
    a = ap.parse_args()

    f = scale_factor(a.model_dir)
    items = []  # (out_dir, base, latent)
    for d in a.out_dirs:
        latents = sorted(glob.glob(os.path.join(glob.escape(d), "*.tensor.*.f32")))
        if len(latents) != a.count:
            raise SystemExit(f"{d}: {len(latents)} latent tensor files, expected {a.count}")
        for path in latents:
            items.append((d, os.path.join(d, TENSOR.match(os.path.basename(path)).group("base")), read_tensor(path)))
    shapes = {x.shape for _, _, x in items}
    if len(shapes) != 1:
        raise SystemExit(f"latents of different shapes: {shapes}")
    c, h, w = shapes.pop()
    print(f"latent [{c}, {h}, {w}] → image {f * h}×{f * w} (f = {f}); {len(items)} image(s) in {len(a.out_dirs)} "
          "folder(s)", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        stacked = os.path.join(tmp, "latents.f32")
        np.stack([x for _, _, x in items]).astype("<f4").tofile(stacked)
        ref_png = os.path.join(tmp, "ref.png")
        ref_img = os.path.join(tmp, "ref-image.f32")
        subprocess.run([sys.executable, os.path.join(HERE, "decode_reference.py"), a.model_dir, stacked, ref_png,
                        "--decoder", "vae", "--height", str(h), "--width", str(w), "--image-out", ref_img],
                       check=True, stdout=subprocess.DEVNULL)
        n = len(items)
        refs = [ref_png] if n == 1 else [os.path.join(tmp, f"ref-{i}.png") for i in range(n)]
        ref_pixels = [np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in refs]
        ref_images = np.fromfile(ref_img, dtype="<f4").reshape(n, 3, f * h, f * w)

    failures = []
    for i, (d, base, _) in enumerate(items):
        tag = f"[{os.path.basename(os.path.normpath(d))}] "
        failures += [tag + m for m in check_image(base, ref_pixels[i], ref_images[i], f, h, w, a.previews,
                                                  a.min_close, lambda s, t=tag: print(t + s, flush=True))]
    if failures:
        for m in failures:
            print(f"FAIL: {m}", file=sys.stderr)
        return 1
    print(f"latent e2e ok: {n} image(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
