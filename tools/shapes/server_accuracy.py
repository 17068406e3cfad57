#!/usr/bin/env python3
"""Prompt-following accuracy of the bundled text-to-image model THROUGH THE SERVER (issue 25 item 5): starts
`./dit serve` with the model's folder on a free port, sends the prompts of a fixed evaluation set
(tools/shapes/scenes.eval_set: forms in equal shares, synonyms included; and the held-out combinations separately)
at the model's defaults, one image per prompt, and judges each PNG with the scene judge (tools/shapes/scenes.judge).

  /usr/bin/python3 tools/shapes/server_accuracy.py [--model-dir models/shapes] [--n 500] [--held-out 100]
      [--seed 2026] [--backend java|onnx] [--out target/shapes-accuracy]

Writes OUT/accuracy.json (overall, by form, by relation, held-out) and the PNGs named by prompt index and verdict.
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools", "clients", "python"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tools.shapes import scenes  # noqa: E402
from dit_client import DitClient  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_server(model_dir, backend, log_path):
    """`./dit serve` on a free port with a models folder holding only the model (a link); waits for it."""
    models = tempfile.mkdtemp(prefix="shapes-models-")
    os.symlink(os.path.abspath(model_dir), os.path.join(models, os.path.basename(os.path.normpath(model_dir))))
    port = free_port()
    log = open(log_path, "w")
    proc = subprocess.Popen([os.path.join(ROOT, "dit"), "serve", "--port", str(port), "--models", models,
                             "--backend", backend, "--set", "metrics_port=-1"], stdout=log, stderr=subprocess.STDOUT,
                            cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{open(log_path).read()}")
        if "serving models" in open(log_path).read():
            return proc, port, models
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"no server within 300 s:\n{open(log_path).read()}")


def form_of(spec):
    return spec.kind if spec.kind != "relation" else "relation:" + spec.relation


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default=os.path.join(ROOT, "models", "shapes"))
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--held-out", type=int, default=100)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--backend", default="java")
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "shapes-accuracy"))
    a = ap.parse_args()
    out = os.path.join(a.out, a.backend)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    proc, port, models = start_server(a.model_dir, a.backend, os.path.join(out, "server.log"))
    try:
        client = DitClient(f"127.0.0.1:{port}")
        model = client.list_models()[0].name
        sets = [("main", scenes.eval_set(a.n, a.seed, held_out=False)),
                ("held_out", scenes.eval_set(a.held_out, a.seed, held_out=True))]
        report = {"model": model, "backend": a.backend, "seed": a.seed}
        t0 = time.time()
        for name, prompts in sets:
            by_form, right = {}, 0
            for i, prompt in enumerate(prompts):
                png = None
                for ev in client.generate(model=model, prompt=prompt, seed=a.seed + i):
                    if ev.WhichOneof("event") == "result":
                        png = ev.result.png
                path = os.path.join(out, f"{name}-{i:04d}.png")
                with open(path, "wb") as f:
                    f.write(png)
                image = np.asarray(Image.open(path).convert("RGB"))
                ok, why = scenes.judge(image, prompt)
                right += ok
                form = form_of(scenes.parse_prompt(prompt))
                f = by_form.setdefault(form, [0, 0])
                f[0] += ok
                f[1] += 1
                os.rename(path, os.path.join(out, f"{name}-{i:04d}-{'ok' if ok else 'no'}-"
                                                  f"{re.sub('[^a-z]+', '_', prompt)}.png"))
            report[name] = {"accuracy": right / len(prompts), "n": len(prompts),
                            "by_form": {k: {"accuracy": v[0] / v[1], "n": v[1]} for k, v in sorted(by_form.items())}}
            print(f"{name}: {right}/{len(prompts)} = {100 * right / len(prompts):.1f} % right", flush=True)
        report["seconds"] = round(time.time() - t0, 1)
        with open(os.path.join(out, "accuracy.json"), "w") as f:
            json.dump(report, f, indent=2)
        print(json.dumps(report, indent=2))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(models, ignore_errors=True)


if __name__ == "__main__":
    main()
