"""tools/judge_images.py scores folders of PNGs by class: real test images, padded to 32×32 as the latent model's
decoder writes them, get exactly the judge's verdicts on the originals.

  /usr/bin/python3 -m unittest tools/tests/test_judge_images.py -v
"""
import os
import sys
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import classifier as judge  # noqa: E402
import judge_images  # noqa: E402
from dit import data as fmnist  # noqa: E402


class JudgeImagesTest(unittest.TestCase):
    def test_padded_pngs_are_cut_to_28_and_judged_per_class_folder(self):
        images, labels = fmnist.load("test")
        clf = judge.load(os.path.join(TOOLS, "eval", "classifier.pt"), "cpu")
        with tempfile.TemporaryDirectory() as d:
            expected = {}
            for c in (3, 6):  # Dress, and Shirt (the judge's weakest class, so some misses are likely)
                idx = np.flatnonzero(labels == c)[:30]
                os.makedirs(os.path.join(d, str(c)))
                for i in idx:
                    padded = np.pad(images[i], 2)  # 32×32 with a 2-pixel background border
                    # RGB on purpose: the tool converts to grey
                    Image.fromarray(padded).convert("RGB").save(os.path.join(d, str(c), f"img-{i}.png"))
                pred = judge.predict(clf, torch.from_numpy(fmnist.to_model_range(images[idx])))
                expected[c] = int((pred == c).sum())
            report = judge_images.main([d])
        self.assertEqual(report["images"], 60)
        for c in (3, 6):
            self.assertEqual(report["per_class"][c]["images"], 30)
            self.assertEqual(report["per_class"][c]["recognised"], expected[c])
        self.assertAlmostEqual(report["accuracy"], (expected[3] + expected[6]) / 60)

    def test_an_image_smaller_than_28_is_refused(self):
        with tempfile.TemporaryDirectory() as d:
            os.makedirs(os.path.join(d, "0"))
            Image.fromarray(np.zeros((16, 16), np.uint8)).save(os.path.join(d, "0", "small.png"))
            with self.assertRaises(SystemExit) as e:
                judge_images.main([d])
            self.assertIn("smaller than 28×28", str(e.exception))


if __name__ == "__main__":
    unittest.main()
