"""tools/shapes/train.py: the bundled text-to-image model's trainer at a tiny size — steps run, a checkpoint resumes
to exactly the state of an uninterrupted run, the export is a pipeline folder that tools/sd3 loads and samples.

  OPENBLAS_CORETYPE=Haswell /usr/bin/python3 -m unittest tools/tests/test_shapes_training.py -v
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
from tools.sd3 import layout  # noqa: E402
from tools.shapes import scenes, train  # noqa: E402

TINY = ["--dim", "32", "--depth", "2", "--heads", "2", "--text-hidden", "16", "--text-layers", "2", "--text-heads", "2",
        "--text-proj", "16", "--batch", "4", "--bpe-prompts", "300", "--eval-minutes", "0", "--log-every", "2",
        "--warmup", "2", "--quiet", "--eval-n", "3", "--eval-held-out", "1", "--eval-steps", "2", "--threads", "1"]


def run(out, *extra):
    argv = ["--out", out, *TINY, *extra]
    args = train.parse_args(argv)
    if args.resume:
        ckpt, _ = train.load_checkpoint(os.path.join(out, "ckpt.pt"))
        args = train.resume_args(args, ckpt["args"], train.explicit_options(argv))
    tr = train.Trainer(args)
    tr.run()
    return tr


def flat_state(tr):
    out = {}
    for prefix, sd in (("model.", tr.model.state_dict()), ("ema.", tr.ema.state_dict())):
        out.update({prefix + k: v.clone() for k, v in sd.items()})
    for i, st in tr.opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"opt.{i}.{k}"] = v.clone() if torch.is_tensor(v) else torch.tensor(v)
    return out


class ShapesTrainingTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp()
        cls.straight = run(os.path.join(cls.dir, "a"), "--steps", "6")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir)

    def test_steps_logged_and_loss_finite(self):
        with open(os.path.join(self.dir, "a", "log.jsonl")) as f:
            recs = [json.loads(x) for x in f]
        losses = [r["loss"] for r in recs if "loss" in r]
        self.assertEqual([r["step"] for r in recs if "loss" in r], [2, 4, 6])
        self.assertTrue(all(np.isfinite(losses)))
        self.assertEqual(recs[0]["event"], "start")
        self.assertEqual(recs[-1]["event"], "stopped")

    def test_resume_equals_uninterrupted(self):
        out = os.path.join(self.dir, "b")
        run(out, "--steps", "3")
        resumed = run(out, "--steps", "6", "--resume")
        self.assertEqual(resumed.step, 6)
        a, b = flat_state(self.straight), flat_state(resumed)
        self.assertEqual(set(a), set(b))
        for k in a:
            self.assertTrue(torch.equal(a[k], b[k]), k)
        self.assertEqual(resumed.t1.encoder, self.straight.t1.encoder)

    def test_resume_keeps_checkpoint_options(self):
        out = os.path.join(self.dir, "c")
        run(out, "--steps", "2", "--lr", "0.002", "--cfg-drop", "0.5")
        argv = ["--out", out, "--resume", "--lr", "0.001"]
        ckpt, _ = train.load_checkpoint(os.path.join(out, "ckpt.pt"))
        args = train.resume_args(train.parse_args(argv), ckpt["args"], train.explicit_options(argv))
        self.assertEqual(args.lr, 0.001)          # given: wins
        self.assertEqual(args.cfg_drop, 0.5)      # not given: the checkpoint's
        self.assertEqual(args.dim, 32)

    def test_corrupt_checkpoint_falls_back_to_previous(self):
        out = os.path.join(self.dir, "d")
        run(out, "--steps", "2")
        run(out, "--steps", "3", "--resume")          # ckpt.pt at 3, ckpt.prev.pt at 2
        with open(os.path.join(out, "ckpt.pt"), "r+b") as f:
            f.truncate(100)
        ckpt, path = train.load_checkpoint(os.path.join(out, "ckpt.pt"))
        self.assertTrue(path.endswith("ckpt.prev.pt"))
        self.assertEqual(ckpt["step"], 2)

    def test_export_is_a_loadable_pipeline(self):
        folder = os.path.join(self.dir, "model")
        train.export(self.straight, folder, "fp16", guidance=3.0, steps=3, shift=1.0)
        pipe = layout.load_pipeline(folder)
        with open(os.path.join(folder, "ditserve.json")) as f:
            serve = json.load(f)
        self.assertEqual(serve["max_sequence_length"], 0)
        self.assertEqual(serve["guidance_scale"], 3.0)
        self.assertEqual(serve["num_inference_steps"], 3)
        self.assertTrue(serve["pixel_space"])
        self.assertEqual(pipe.max_sequence_length, 0)
        self.assertFalse(os.path.exists(os.path.join(folder, "vae")))
        self.assertLess(layout.folder_bytes(folder), 30 * 2 ** 20)
        ema = self.straight.ema.transformer.state_dict()
        for k, v in pipe.transformer.state_dict().items():
            self.assertTrue(torch.equal(v, ema[k].half().float()), k)
        prompt = "a yellow triangle to the right of a white pyramid"
        ids, cut = pipe.tokenizer(prompt)
        self.assertFalse(cut)
        self.assertEqual(len(ids), 16)
        imgs = pipe([prompt, "a red cube"], seed=3)
        self.assertEqual(imgs.shape, (2, 32, 32, 3))
        self.assertEqual(imgs.dtype, np.uint8)
        ok, _ = scenes.judge(imgs[0], prompt)      # a 6-step model draws nothing right; the judge must still run
        self.assertFalse(ok)
        # the pipeline's sample equals the trainer's own evaluation pipeline on the same noise
        noise = torch.randn(1, 3, 32, 32)
        mine = train.pipeline_of(self.straight.ema, self.straight.t1, self.straight.t2, 1.0, 3.0, 3)
        half = pipe.sample(["a red cube"], noise=noise)
        full = mine.sample(["a red cube"], noise=noise)
        self.assertLess(float((half - full).abs().max()), 0.05)      # fp16 weights against fp32

    def test_evaluate_reports_forms(self):
        res = train.evaluate(self.straight.ema, self.straight.t1, self.straight.t2, self.straight.args)
        for k in ("main", "held_out", "centre", "side", "relation"):
            self.assertIn(k, res)

    def test_training_data_never_held_out(self):
        rng = np.random.default_rng(5)
        _, prompts = train.batch_of(rng, 400, cfg_drop=0.0)
        self.assertFalse(any(scenes.is_held_out(scenes.parse_prompt(p)) for p in prompts))
        _, prompts = train.batch_of(np.random.default_rng(6), 400, cfg_drop=0.25)
        self.assertTrue(50 < sum(p == "" for p in prompts) < 150)


if __name__ == "__main__":
    unittest.main()
