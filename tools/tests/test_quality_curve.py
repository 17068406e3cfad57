"""tools/quality_curve.py scores settings on the bundled latent model and resumes (a few images, few steps).

  /usr/bin/python3 -m unittest tools/tests/test_quality_curve.py -v
"""
import json
import os
import sys
import tempfile
import unittest

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import quality_curve  # noqa: E402

MODEL = os.path.join(ROOT, "models", "fashion-latent-dit")
BASE = ["--model", MODEL, "--classifier", os.path.join(TOOLS, "eval", "classifier.pt"), "--images", "20",
        "--reference", "ddim:6", "--repeats", "2", "--batch", "20", "--threads", "1", "--device", "cpu",
        "--converged", "ddim:6", "--converged-images", "10"]


def rows(out):
    with open(os.path.join(out, "rows.jsonl")) as f:
        return [json.loads(line) for line in f]


class QualityCurveTest(unittest.TestCase):
    def test_scores_decoded_images_counts_evaluations_and_resumes(self):
        with tempfile.TemporaryDirectory() as out:
            quality_curve.main(BASE + ["--settings", "ddim:3", "ddim:6:cache3", "ddpm:2", "--out", out])
            with open(os.path.join(out, "quality.json")) as f:
                rep = json.load(f)
            with open(os.path.join(MODEL, "config.json")) as f:
                cfg = json.load(f)
            # the model's own guidance by default, so every step is two model evaluations
            self.assertEqual(rep["guidance"], cfg["defaults"]["guidance"])
            by = {r["setting"]: r for r in rep["results"]}
            self.assertEqual(set(by), {"ddim:6", "ddim:3", "ddim:6:cache3", "ddpm:2"})
            self.assertEqual(by["ddim:3"]["model_evals_per_image"], 6)
            depth = cfg["depth"]
            self.assertEqual(by["ddim:6"]["block_evals_per_image"], 2 * 6 * depth)
            # interval 3 over 6 steps: steps 0, 3 and the last run every block, the other three block 0 only
            self.assertEqual(by["ddim:6:cache3"]["block_evals_per_image"], 2 * (3 * depth + 3))
            self.assertEqual(len(rep["reference_runs"]), 2)
            self.assertNotEqual(rep["reference_runs"][0], rep["reference_runs"][1])  # other seeds, other images
            self.assertEqual(rep["spread"], max(rep["reference_runs"]) - min(rep["reference_runs"]))
            for r in rep["results"]:
                self.assertTrue(0.0 <= r["accuracy"] <= 1.0)
                self.assertGreater(r["frechet"], 0.0)
            self.assertEqual(rep["caching"][0]["setting"], "ddim:6:cache3")
            self.assertAlmostEqual(rep["caching"][0]["block_saving"], (6 * depth) / (3 * depth + 3))
            for f in ("quality.md", "quality.png"):
                self.assertGreater(os.path.getsize(os.path.join(out, f)), 0)
            self.assertEqual(len(rows(out)), 5)  # reference, its repeat, three settings
            # solver errors against the converged setting (here the reference itself, so its own error is 0): the
            # same x_T and labels for every setting; none for the stochastic DDPM
            self.assertEqual(by["ddim:6"]["solver_error"], 0.0)
            self.assertGreater(by["ddim:3"]["solver_error"], 0.01)
            self.assertGreater(by["ddim:6:cache3"]["solver_error"], 0.0)
            self.assertIsNone(by["ddpm:2"]["solver_error"])
            self.assertEqual(rep["cheapest_within_reference_solver_error"], "ddim:6")
            self.assertGreater(os.path.getsize(os.path.join(out, "solver_error.png")), 0)

            # a second run with one more setting scores only that one and reports all
            quality_curve.main(BASE + ["--settings", "ddim:3", "ddim:6:cache3", "ddpm:2", "ddim:2", "--out", out])
            self.assertEqual([r["setting"] for r in rows(out)][5:], ["ddim:2"])
            with open(os.path.join(out, "solver_errors.jsonl")) as f:
                self.assertEqual([json.loads(line)["setting"] for line in f][-1], "ddim:2")
            with open(os.path.join(out, "quality.json")) as f:
                again = json.load(f)
            self.assertEqual(again["results"][:4], rep["results"])
            self.assertEqual(len(again["results"]), 5)

    def test_rejects_a_malformed_setting(self):
        with self.assertRaises(SystemExit):
            quality_curve.main(BASE + ["--settings", "ddim:ten", "--out", "/nonexistent"])


if __name__ == "__main__":
    unittest.main()
