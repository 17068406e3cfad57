"""Training is resumable and logs every step (tiny model, a few steps on the CPU).

  /usr/bin/python3 -m unittest discover -s tools/tests -v
"""
import csv
import json
import os
import sys
import tempfile
import unittest

import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import train  # noqa: E402

TINY = ["--hidden", "32", "--depth", "1", "--heads", "2", "--patch", "7", "--batch", "8", "--threads", "1"]


class TrainingTest(unittest.TestCase):
    def test_resume_continues_from_the_checkpoint_and_logs_each_step(self):
        with tempfile.TemporaryDirectory() as out:
            train.main(["--out", out, "--steps", "3"] + TINY)
            first = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
            self.assertEqual(first["step"], 3)
            train.main(["--out", out, "--steps", "5"] + TINY)
            ck = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=False)
            self.assertEqual(ck["step"], 5)
            # the EMA moved on from the first run's EMA, and is not the raw weights
            name = "blocks.0.attn.qkv.weight"
            self.assertFalse(torch.equal(first["ema"][name], ck["ema"][name]))
            self.assertFalse(torch.equal(ck["model"][name], ck["ema"][name]))
            with open(os.path.join(out, "loss.csv")) as f:
                rows = list(csv.DictReader(f))
            self.assertEqual([int(r["step"]) for r in rows], [1, 2, 3, 4, 5])
            self.assertTrue(all(float(r["loss"]) > 0 for r in rows))
            with open(os.path.join(out, "train_state.json")) as f:
                self.assertTrue(json.load(f)["final"])

    def test_resume_refuses_a_different_architecture(self):
        with tempfile.TemporaryDirectory() as out:
            train.main(["--out", out, "--steps", "1"] + TINY)
            with self.assertRaises(SystemExit):
                train.main(["--out", out, "--steps", "2", "--hidden", "64", "--depth", "1", "--heads", "2",
                            "--patch", "7", "--batch", "8", "--threads", "1"])


if __name__ == "__main__":
    unittest.main()
