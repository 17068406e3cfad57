"""Converter output for released checkpoints at full size (issue 16), on small models:

  * a graph forced into the >2 GB form (--onnx-external-data) keeps its weights in one model.onnx.data and nothing
    else lies in the folder (its forward against PyTorch is backends/onnx ExternalDataTest, on latent-tiny converted
    this way by tools/test.sh: Debian's onnx 1.12 has no reference evaluator and there is no Python ONNX Runtime);
  * the folder appears only complete: a run that fails midway leaves no folder (and no temporary one), and an older
    folder of that name is kept as it was.

  /usr/bin/python3 -m unittest discover -s tools/tests -p test_convert.py -v
"""
import io
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout
from unittest import mock

import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
from dit import export  # noqa: E402
from dit.model import DiT  # noqa: E402
from make_fixtures import randomize  # noqa: E402


def small_checkpoint(folder):
    torch.manual_seed(0)
    model = randomize(DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3,
                          num_classes=5, learn_sigma=True), 3).eval()
    path = os.path.join(folder, "small.pt")
    torch.save(model.state_dict(), path)
    return model, path


def contents(folder):
    out = {}
    for name in os.listdir(folder):
        with open(os.path.join(folder, name), "rb") as f:
            out[name] = f.read()
    return out


def run_convert(*argv):
    out = io.StringIO()
    with redirect_stdout(out):
        convert.main(list(argv))
    return out.getvalue()


class ExternalDataTest(unittest.TestCase):
    def test_forced_external_data_is_one_file_beside_the_graph(self):
        import onnx
        with tempfile.TemporaryDirectory() as d:
            model, src = small_checkpoint(d)
            out = os.path.join(d, "models", "small")
            printed = run_convert(src, out, "--num-heads", "3", "--onnx-external-data")
            self.assertEqual(sorted(os.listdir(out)),
                             ["config.json", "model.onnx", "model.onnx.data", "weights.safetensors"])
            self.assertEqual(os.listdir(os.path.join(d, "models")), ["small"])  # no temporary folder left
            for name in ("config.json", "weights.safetensors", "model.onnx", "model.onnx.data"):
                self.assertIn(name, printed)
            graph = onnx.load(os.path.join(out, "model.onnx"), load_external_data=False)
            external = [t for t in graph.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
            self.assertGreater(len(external), 10)
            for t in external:
                self.assertEqual({e.key: e.value for e in t.external_data}["location"], "model.onnx.data")
            self.assertGreater(export.check_onnx(os.path.join(out, "model.onnx")), 0)
            # the data file holds every weight matrix: nearly the whole checkpoint
            self.assertGreater(os.path.getsize(os.path.join(out, "model.onnx.data")),
                               0.9 * sum(v.numel() * 4 for v in model.state_dict().values()))

    def test_small_graph_keeps_its_weights_inside_by_default(self):
        with tempfile.TemporaryDirectory() as d:
            _, src = small_checkpoint(d)
            out = os.path.join(d, "small")
            run_convert(src, out, "--num-heads", "3")
            self.assertEqual(sorted(os.listdir(out)), ["config.json", "model.onnx", "weights.safetensors"])

    def test_large_models_are_exported_with_external_data(self):
        with mock.patch.object(export, "INLINE_WEIGHT_LIMIT", 1000), tempfile.TemporaryDirectory() as d:
            _, src = small_checkpoint(d)
            out = os.path.join(d, "small")
            run_convert(src, out, "--num-heads", "3")
            self.assertIn("model.onnx.data", os.listdir(out))


class AtomicFolderTest(unittest.TestCase):
    def failing_export(self, model, path, **kw):
        with open(path, "wb") as f:  # half a graph, then the failure
            f.write(b"\x08\x07")
        raise RuntimeError("export failed midway")

    def test_failure_midway_leaves_no_folder(self):
        with tempfile.TemporaryDirectory() as d:
            _, src = small_checkpoint(d)
            models = os.path.join(d, "models")
            with mock.patch.object(export, "export_onnx", self.failing_export):
                with self.assertRaisesRegex(RuntimeError, "midway"):
                    run_convert(src, os.path.join(models, "small"), "--num-heads", "3")
            self.assertEqual(os.listdir(models), [])

    def test_failure_keeps_an_older_folder_as_it_was(self):
        with tempfile.TemporaryDirectory() as d:
            _, src = small_checkpoint(d)
            out = os.path.join(d, "small")
            run_convert(src, out, "--num-heads", "3")
            before = contents(out)
            with mock.patch.object(export, "export_onnx", self.failing_export):
                with self.assertRaises(RuntimeError):
                    run_convert(src, out, "--num-heads", "3", "--name", "other")
            self.assertEqual(contents(out), before)
            self.assertEqual([n for n in os.listdir(d) if n.startswith(".")], [])  # no temporary folder left


if __name__ == "__main__":
    unittest.main()
