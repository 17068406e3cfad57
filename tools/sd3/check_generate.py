"""Issue 24's first acceptance point through the command line: `./dit generate --prompt` against a running
`./dit serve` gives the reference pipeline's image (tools/sd3/pipeline.py, stored in the fixture's
cases.safetensors by tools/make_sd3_fixtures.py) within one 8-bit level on >= 99.9 % of the values, and the
reference's sample (the latent) within 1e-4 relative.

Each case's initial noise is written as NAME.1xCxHxW.f32 and sent with `--initial-noise`; the prompt, the negative
prompt, the steps and the guidance come from the case. A case with "t5": false is served by the model named
MODEL-no-t5 (make it with `--make-no-t5 DIR`: the folder's components linked, model_index.json without
text_encoder_3/tokenizer_3, as diffusers' text_encoder_3=None).

    python3 -m tools.sd3.check_generate --make-no-t5 MODELS_DIR FIXTURE...        # before the server starts
    python3 -m tools.sd3.check_generate --target HOST:PORT --work DIR FIXTURE...   # FIXTURE: a pipeline folder
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
from PIL import Image

from .layout import read_safetensors

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NO_T5 = "-no-t5"


def cases_of(fixture):
    path = os.path.join(fixture, "cases.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        meta = json.loads(f.read(n))["__metadata__"]
    tensors, _ = read_safetensors(path)
    return json.loads(meta["cases"]), {k: v.numpy() for k, v in tensors.items()}


def make_no_t5(models, fixture):
    name = os.path.basename(os.path.normpath(fixture))
    dst = os.path.join(models, name + NO_T5)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(fixture, "model_index.json")) as f:
        index = json.load(f)
    for comp in ("text_encoder_3", "tokenizer_3"):
        index[comp] = [None, None]
    with open(os.path.join(dst, "model_index.json"), "w") as f:
        json.dump(index, f)
    shutil.copy(os.path.join(fixture, "ditserve.json"), dst)
    for comp in ("scheduler", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "transformer", "vae"):
        if os.path.exists(os.path.join(fixture, comp)):
            os.symlink(os.path.abspath(os.path.join(fixture, comp)), os.path.join(dst, comp))


def check(target, work, fixture):
    name = os.path.basename(os.path.normpath(fixture))
    cases, t = cases_of(fixture)
    worst = 1.0
    for k, c in enumerate(cases):
        model = name if c.get("t5", True) else name + NO_T5
        noise = t[f"case.{k}.noise"].astype("<f4")
        out = os.path.join(work, f"{model}-{k}")
        os.makedirs(out, exist_ok=True)
        noise_file = os.path.join(work, f"{model}-{k}.noise." + "x".join(map(str, noise.shape)) + ".f32")
        noise.tofile(noise_file)
        cmd = [os.path.join(ROOT, "dit"), "generate", "--target", target, "--model", model, "--prompt", c["prompt"],
               "--steps", str(c["steps"]), "--guidance", str(c["guidance"]), "--initial-noise", noise_file,
               "--format", "png,tensor", "--out", out]
        if c["negative"]:
            cmd += ["--negative-prompt", c["negative"]]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, DIT_SKIP_BUILD="1"))
        if run.returncode != 0:
            sys.exit(f"check_generate: {' '.join(cmd)} failed:\n{run.stdout}\n{run.stderr}")
        files = sorted(os.listdir(out))
        png = [f for f in files if f.endswith(".png")]
        tensor = [f for f in files if ".tensor." in f and f.endswith(".f32")]
        if len(png) != 1 or len(tensor) != 1:
            sys.exit(f"check_generate: {model} case {k}: expected one PNG and one tensor in {out}, got {files}")
        img = np.asarray(Image.open(os.path.join(out, png[0])).convert("RGB"), dtype=np.int32)
        ref = np.rint(t[f"case.{k}.image"]).astype(np.int32)
        if img.shape != ref.shape:
            sys.exit(f"check_generate: {model} case {k}: image {img.shape}, reference {ref.shape}")
        diff = np.abs(img - ref)
        within = float(np.mean(diff <= 1))
        want = t[f"case.{k}.sample"].reshape(-1)
        got = np.fromfile(os.path.join(out, tensor[0]), dtype="<f4")
        rel = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
        print(f"check_generate: {model} case {k} ({c['steps']} steps, guidance {c['guidance']}, "
              f"negative {'yes' if c['negative'] else 'no'}): {100 * within:.3f} % of {diff.size} values within one "
              f"level (max difference {int(diff.max())}), sample {rel:.2e} relative")
        if within < 0.999 or rel >= 1e-4:
            sys.exit(f"check_generate: {model} case {k} differs from the reference pipeline")
        worst = min(worst, within)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fixtures", nargs="+")
    ap.add_argument("--make-no-t5", metavar="MODELS_DIR")
    ap.add_argument("--target")
    ap.add_argument("--work")
    a = ap.parse_args()
    if a.make_no_t5:
        for f in a.fixtures:
            make_no_t5(a.make_no_t5, f)
        return
    if not a.target or not a.work:
        ap.error("--target and --work are needed to check")
    for f in a.fixtures:
        check(a.target, a.work, f)


if __name__ == "__main__":
    main()
