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
        "--reference", "ddim:6", "--repeats", "2", "--batch", "20", "--threads", "1", "--device", "cpu"]


def rows(out):
    with open(os.path.join(out, "rows.jsonl")) as f:
        return [json.loads(line) for line in f]


class QualityCurveTest(unittest.TestCase):
    def test_scores_decoded_images_counts_evaluations_and_resumes(self):
        with tempfile.TemporaryDirectory() as out:
            quality_curve.main(BASE + ["--settings", "ddim:3", "ddim:6:cache3", "--out", out])
            with open(os.path.join(out, "quality.json")) as f:
                rep = json.load(f)
            with open(os.path.join(MODEL, "config.json")) as f:
                cfg = json.load(f)
            # the model's own guidance by default, so every step is two model evaluations
            self.assertEqual(rep["guidance"], cfg["defaults"]["guidance"])
            by = {r["setting"]: r for r in rep["results"]}
            self.assertEqual(set(by), {"ddim:6", "ddim:3", "ddim:6:cache3"})
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
            self.assertEqual(len(rows(out)), 4)  # reference, its repeat, two settings

            # a second run with one more setting scores only that one and reports all
            quality_curve.main(BASE + ["--settings", "ddim:3", "ddim:6:cache3", "ddim:2", "--out", out])
            self.assertEqual([r["setting"] for r in rows(out)][4:], ["ddim:2"])
            with open(os.path.join(out, "quality.json")) as f:
                again = json.load(f)
            self.assertEqual(again["results"][:3], rep["results"])
            self.assertEqual(len(again["results"]), 4)

    def test_rejects_a_malformed_setting(self):
        with self.assertRaises(SystemExit):
            quality_curve.main(BASE + ["--settings", "ddim:ten", "--out", "/nonexistent"])


if __name__ == "__main__":
    unittest.main()
