"""Converter output for released checkpoints at full size (issue 16), on small models:

  * a graph forced into the >2 GB form (--onnx-external-data) keeps its weights in one model.onnx.data and nothing
    else lies in the folder (its forward against PyTorch is backends/onnx ExternalDataTest, on latent-tiny converted
    this way by tools/test.sh: Debian's onnx 1.12 has no reference evaluator and there is no Python ONNX Runtime);
  * the folder appears only complete: a run that fails midway leaves no folder (and no temporary one), and an older
    folder of that name is kept as it was.

  * --family sit|repa (issue 23): SiT's and REPA's released layouts (random weights from
    tools/make_flow_checkpoint.py) convert; the learned-σ half and REPA's projectors are dropped; a key left unused
    or missing fails naming it; the converted network equals the released architecture written here independently
    (torch.nn.functional, timm's Attention with qk-norm) at the family's network time.

  /usr/bin/python3 -m unittest discover -s tools/tests -p test_convert.py -v
"""
import io
import json
import math
import os
import sys
import tempfile
import unittest
from contextlib import redirect_stdout
from unittest import mock

import torch
import torch.nn.functional as F

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
import make_flow_checkpoint  # noqa: E402
from dit import export, flow, safetensors_io  # noqa: E402
from dit.model import DiT, dit_from_config  # noqa: E402
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


# ---------------------------------------------------------------------------------------------------------------
# Flow families

SMALL = dict(hidden=48, depth=2, heads=3, patch=2, input_size=8, in_channels=4, num_classes=5)


def flow_checkpoint(folder, family, qk_norm=False, learn_sigma=True, seed=3):
    path = os.path.join(folder, f"{family}.pt")
    make_flow_checkpoint.write_checkpoint(path, family, SMALL["hidden"], SMALL["depth"], SMALL["heads"],
                                          SMALL["patch"], SMALL["input_size"], SMALL["in_channels"],
                                          SMALL["num_classes"], learn_sigma=learn_sigma, qk_norm=qk_norm, seed=seed,
                                          projector_dim=16, z_dims=(8,), encoder_depth=1)
    return path


def released_forward(sd, x, t, y, heads, qk_norm):
    """SiT's / REPA's forward as released, written from their models.py with torch.nn.functional: timm's
    PatchEmbed, GLIDE's timestep embedding (cos half first), the label table, blocks with parameter-free LayerNorm
    (eps 1e-6), timm's Attention (qk-norm: nn.LayerNorm(head_dim) with its default eps 1e-5, on q and k per head),
    tanh-GELU Mlp, adaLN-Zero modulation; the final layer and unpatchify ('nhwpqc->nchpwq'). All output channels
    (SiT's forward then keeps the first C)."""
    w = sd["x_embedder.proj.weight"]
    d, p = w.shape[0], w.shape[2]
    h = F.conv2d(x, w, sd["x_embedder.proj.bias"], stride=p).flatten(2).transpose(1, 2) + sd["pos_embed"]
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(0, half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    temb = F.linear(F.silu(F.linear(emb, sd["t_embedder.mlp.0.weight"], sd["t_embedder.mlp.0.bias"])),
                    sd["t_embedder.mlp.2.weight"], sd["t_embedder.mlp.2.bias"])
    c = temb + sd["y_embedder.embedding_table.weight"][y]
    n, tokens, _ = h.shape
    hd = d // heads
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b = f"blocks.{i}."
        shift1, scale1, gate1, shift2, scale2, gate2 = F.linear(
            F.silu(c), sd[b + "adaLN_modulation.1.weight"], sd[b + "adaLN_modulation.1.bias"]).chunk(6, dim=-1)
        u = F.layer_norm(h, (d,), eps=1e-6) * (1 + scale1.unsqueeze(1)) + shift1.unsqueeze(1)
        qkv = F.linear(u, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(n, tokens, 3, heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        if qk_norm:
            q = F.layer_norm(q, (hd,), sd[b + "attn.q_norm.weight"], sd[b + "attn.q_norm.bias"])
            k = F.layer_norm(k, (hd,), sd[b + "attn.k_norm.weight"], sd[b + "attn.k_norm.bias"])
        att = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        a = (att @ v).transpose(1, 2).reshape(n, tokens, d)
        h = h + gate1.unsqueeze(1) * F.linear(a, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        u = F.layer_norm(h, (d,), eps=1e-6) * (1 + scale2.unsqueeze(1)) + shift2.unsqueeze(1)
        m = F.gelu(F.linear(u, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]), approximate="tanh")
        h = h + gate2.unsqueeze(1) * F.linear(m, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    shift, scale = F.linear(F.silu(c), sd["final_layer.adaLN_modulation.1.weight"],
                            sd["final_layer.adaLN_modulation.1.bias"]).chunk(2, dim=-1)
    u = F.layer_norm(h, (d,), eps=1e-6) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)
    out = F.linear(u, sd["final_layer.linear.weight"], sd["final_layer.linear.bias"])
    g = math.isqrt(tokens)
    c_out = out.shape[-1] // (p * p)
    out = torch.einsum("nhwpqc->nchpwq", out.reshape(n, g, g, p, p, c_out))
    return out.reshape(n, c_out, g * p, g * p)


def load_folder(folder):
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = dit_from_config(cfg)
    model.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
    return model.eval(), cfg


class FlowConvertTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name
        torch.set_num_threads(1)

    def tearDown(self):
        self.tmp.cleanup()

    def convert(self, family, src, *extra):
        out = os.path.join(self.d, f"out-{family}")
        printed = run_convert("--family", family, src, out, *extra)
        return out, printed

    def inputs(self):
        g = torch.Generator().manual_seed(11)
        x = torch.randn(4, 4, 8, 8, generator=g)
        y = torch.tensor([0, 3, SMALL["num_classes"], 1])  # the null class included
        return x, y

    def test_sit_converts_with_the_sigma_half_dropped_and_its_time_mapping(self):
        src = flow_checkpoint(self.d, "sit")
        sd = torch.load(src)
        out, printed = self.convert("sit", src, "--num-heads", "3")
        self.assertIn("learned-σ half of final_layer.linear: 8 → 4", printed)
        model, cfg = load_folder(out)
        self.assertEqual(cfg["format_version"], 2)
        self.assertEqual(cfg["family"], "sit")
        self.assertEqual(cfg["process"], {"prediction": "velocity", "path": "linear", "time_input": "1-s",
                                          "velocity": "data_minus_noise"})
        self.assertFalse(cfg["learn_sigma"])
        self.assertFalse(cfg["qk_norm"])
        self.assertNotIn("schedule", cfg)
        self.assertNotIn("variance", cfg)
        self.assertEqual(cfg["guidance_mode"], "first3")
        self.assertEqual(cfg["defaults"], {"sampler": "euler_maruyama", "steps": 250, "guidance": 4.0})
        # the σ half: per pixel (a, b) the rows (a·p + b)·2C + [C, 2C) are gone, the first C kept as they were
        w = safetensors_io.read(os.path.join(out, "weights.safetensors"))[0]["final_layer.linear.weight"]
        self.assertEqual(list(w.shape), [2 * 2 * 4, 48])
        want = sd["final_layer.linear.weight"].reshape(4, 8, 48)[:, :4].reshape(16, 48)
        self.assertTrue(torch.equal(w, want))
        # the converted network at τ = 1 − s is the released SiT forward (first C channels), D = −v
        x, y = self.inputs()
        s = [1.0, 0.75, 0.3, 0.0]
        tau = torch.tensor([1.0 - v for v in s], dtype=torch.float32)
        with torch.no_grad():
            ref = released_forward(sd, x, tau, y, 3, False)[:, :4]
            got = model(x, tau, y)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        for i, si in enumerate(s):
            deriv = flow.Derivative(model, cfg, None, None)
            with torch.no_grad():
                dd = deriv(x[i:i + 1], si, y[i:i + 1], False)
            torch.testing.assert_close(dd, -ref[i:i + 1], rtol=1e-5, atol=1e-5)

    def test_repa_converts_from_ema_with_qk_norm_and_projectors_dropped(self):
        src = flow_checkpoint(self.d, "repa", qk_norm=True)
        ckpt = torch.load(src)
        out, printed = self.convert("repa", src)
        self.assertIn('using the "ema" state_dict', printed)
        self.assertIn("dropped 6 tensors projectors.*", printed)
        model, cfg = load_folder(out)
        self.assertEqual(cfg["family"], "repa")
        self.assertEqual(cfg["process"], {"prediction": "velocity", "path": "linear", "time_input": "s",
                                          "velocity": "noise_minus_data"})
        self.assertTrue(cfg["qk_norm"])
        self.assertEqual(cfg["num_heads"], 3)  # from the qk-norm size (head dimension 16)
        self.assertEqual(cfg["guidance_mode"], "all")
        self.assertEqual(cfg["defaults"], {"sampler": "euler_maruyama", "steps": 250, "guidance": 1.8,
                                           "guidance_interval": [0.0, 0.7]})
        weights = safetensors_io.read(os.path.join(out, "weights.safetensors"))[0]
        ema = {k: v for k, v in ckpt["ema"].items() if not k.startswith("projectors.")}
        self.assertEqual(set(weights), set(ema))
        for k in ema:
            self.assertTrue(torch.equal(weights[k], ema[k]), k)
        self.assertFalse(torch.equal(weights["blocks.0.attn.qkv.weight"], ckpt["model"]["blocks.0.attn.qkv.weight"]))
        x, y = self.inputs()
        tau = torch.tensor([1.0, 0.7, 0.137, 0.0], dtype=torch.float32)  # τ = s
        with torch.no_grad():
            ref = released_forward(ema, x, tau, y, 3, True)
            got = model(x, tau, y)
            deriv = flow.Derivative(model, cfg, None, None)
            dd = deriv(x[1:2], 0.7, y[1:2], False)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dd, ref[1:2], rtol=1e-5, atol=1e-5)  # D = +v
        # qk-norm is live: the same weights without it give another output
        with torch.no_grad():
            self.assertGreater(float((released_forward(ema, x, tau, y, 3, False) - ref).abs().max()), 1e-3)

    def test_the_graph_takes_float_time(self):
        import onnx
        out, _ = self.convert("repa", flow_checkpoint(self.d, "repa"))
        g = onnx.load(os.path.join(out, "model.onnx")).graph
        self.assertEqual([i.name for i in g.input], ["x", "t", "y", "cache_residual", "cache_run"])
        elem = {i.name: i.type.tensor_type.elem_type for i in g.input}
        self.assertEqual(elem["t"], onnx.TensorProto.FLOAT)
        self.assertEqual(elem["y"], onnx.TensorProto.INT64)

    def test_dit_family_is_unchanged(self):
        import onnx
        _, src = small_checkpoint(self.d)
        a, b = os.path.join(self.d, "a"), os.path.join(self.d, "b")
        run_convert(src, a, "--num-heads", "3", "--no-onnx")
        run_convert("--family", "dit", src, b, "--num-heads", "3")
        with open(os.path.join(a, "config.json")) as f:
            cfg = json.load(f)
        self.assertEqual(cfg["format_version"], 1)
        self.assertNotIn("family", cfg)
        self.assertNotIn("qk_norm", cfg)
        with open(os.path.join(b, "config.json")) as f:
            self.assertEqual(json.load(f), dict(cfg, name="b"))
        g = onnx.load(os.path.join(b, "model.onnx")).graph
        self.assertEqual({i.name: i.type.tensor_type.elem_type for i in g.input}["t"], onnx.TensorProto.INT64)

    def test_unused_and_missing_keys_fail_naming_them(self):
        src = flow_checkpoint(self.d, "sit")
        sd = torch.load(src)
        extra = dict(sd, **{"blocks.0.attn.extra_scale": torch.ones(3)})
        torch.save(extra, os.path.join(self.d, "extra.pt"))
        with self.assertRaisesRegex(ValueError, r"does not use: \['blocks.0.attn.extra_scale'\]"):
            self.convert("sit", os.path.join(self.d, "extra.pt"), "--num-heads", "3")
        lacking = {k: v for k, v in sd.items() if k != "blocks.1.mlp.fc2.bias"}
        torch.save(lacking, os.path.join(self.d, "lacking.pt"))
        with self.assertRaisesRegex(ValueError, r"missing: \['blocks.1.mlp.fc2.bias'\]"):
            self.convert("sit", os.path.join(self.d, "lacking.pt"), "--num-heads", "3")
        # REPA: a qk-norm key of one block missing; no "ema" entry at all
        ckpt = torch.load(flow_checkpoint(self.d, "repa", qk_norm=True))
        del ckpt["ema"]["blocks.1.attn.k_norm.bias"]
        torch.save(ckpt, os.path.join(self.d, "partial.pt"))
        with self.assertRaisesRegex(ValueError, r"blocks.1.attn.k_norm.bias"):
            self.convert("repa", os.path.join(self.d, "partial.pt"))
        torch.save({"model": ckpt["model"]}, os.path.join(self.d, "no-ema.pt"))
        with self.assertRaisesRegex(ValueError, r'under "ema"'):
            self.convert("repa", os.path.join(self.d, "no-ema.pt"))
        self.assertEqual(sorted(n for n in os.listdir(self.d) if n.startswith("out")), [])  # no folder written

    def test_samplers_must_fit_the_family(self):
        src = flow_checkpoint(self.d, "repa")
        with self.assertRaisesRegex(SystemExit, "does not fit a repa model: it takes euler, heun, euler_maruyama"):
            self.convert("repa", src, "--sampler", "ddim")
        _, dit_src = small_checkpoint(self.d)
        with self.assertRaises(SystemExit):
            with mock.patch("sys.stderr", io.StringIO()):
                run_convert(dit_src, os.path.join(self.d, "x"), "--sampler", "heun")
        # qk-norm weights cannot go into a format-1 DiT folder
        ema = {k: v for k, v in torch.load(flow_checkpoint(self.d, "repa", qk_norm=True))["ema"].items()
               if not k.startswith("projectors.")}
        torch.save(ema, os.path.join(self.d, "qk.pt"))
        with self.assertRaisesRegex(SystemExit, "--family repa"):
            run_convert(os.path.join(self.d, "qk.pt"), os.path.join(self.d, "qk"))
        # a repa folder with options: Heun, no interval, shift 3
        out, _ = self.convert("repa", src, "--sampler", "heun", "--steps", "40", "--no-guidance-interval",
                              "--timestep-shift", "3", "--guidance", "2.5")
        with open(os.path.join(out, "config.json")) as f:
            self.assertEqual(json.load(f)["defaults"], {"sampler": "heun", "steps": 40, "guidance": 2.5,
                                                        "timestep_shift": 3.0})

    def test_released_size_checkpoint_layout(self):
        # the XL/2 key list (not written: 2.7 GB) has the released names and shapes
        keys = dict(make_flow_checkpoint.released_keys("repa", 1152, 28, 2, 4, 1000, 256, qk_norm=True, heads=16))
        self.assertEqual(keys["y_embedder.embedding_table.weight"], (1001, 1152))
        self.assertEqual(keys["blocks.27.attn.q_norm.weight"], (72,))
        self.assertEqual(keys["projectors.0.4.weight"], (768, 2048))
        self.assertEqual(keys["final_layer.linear.weight"], (16, 1152))
        sit = dict(make_flow_checkpoint.released_keys("sit", 1152, 28, 2, 4, 1000, 256))
        self.assertEqual(sit["final_layer.linear.weight"], (32, 1152))
        self.assertEqual(len(sit), 1 + 2 + 4 + 1 + 28 * 10 + 4)
        # at a small size: exactly DiT's state_dict (learned σ), and with qk-norm our model's qk-norm keys
        for qk in (False, True):
            model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3,
                        num_classes=5, learn_sigma=not qk, qk_norm=qk)
            want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            got = dict(make_flow_checkpoint.released_keys("repa" if qk else "sit", 48, 2, 2, 4, 5, 16, qk_norm=qk,
                                                          heads=3, projector_dim=16, z_dims=(8,)))
            self.assertEqual({k: v for k, v in got.items() if not k.startswith("projectors.")}, want)


if __name__ == "__main__":
    unittest.main()
