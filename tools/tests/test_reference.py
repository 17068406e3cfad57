"""Tests of the PyTorch reference: released layout, schedule, respacing, samplers, export and converter.

  /usr/bin/python3 -m unittest discover -s tools/tests -v
"""
import json
import math
import os
import sys
import tempfile
import unittest

import numpy as np
import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
import convert  # noqa: E402
from dit import safetensors_io  # noqa: E402
from dit.diffusion import Schedule, StepCache, alphas_cumprod, linear_betas, respace, sample  # noqa: E402
from dit.export import make_config, write_model_folder  # noqa: E402
from dit.model import DiT, DiT_XL_2, dit_from_config, sincos_pos_embed  # noqa: E402


def released_layout(depth, d, c_in, p, num_classes, learn_sigma, tokens):
    """The released checkpoint's key names and shapes, written down from docs/DIT_MODEL.md."""
    c_out = 2 * c_in if learn_sigma else c_in
    keys = {
        "pos_embed": (1, tokens, d),
        "x_embedder.proj.weight": (d, c_in, p, p), "x_embedder.proj.bias": (d,),
        "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
        "y_embedder.embedding_table.weight": (num_classes + 1, d),
        "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,),
        "final_layer.linear.weight": (p * p * c_out, d), "final_layer.linear.bias": (p * p * c_out,),
    }
    for i in range(depth):
        b = f"blocks.{i}."
        keys.update({
            b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
            b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
            b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
            b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
            b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,),
        })
    return keys


def small_model(seed=0, **over):
    cfg = dict(input_size=8, patch_size=2, in_channels=4, hidden_size=48, depth=2, num_heads=3, mlp_ratio=4.0,
               class_dropout_prob=0.1, num_classes=7, learn_sigma=True)
    cfg.update(over)
    torch.manual_seed(seed)
    m = DiT(**cfg)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name != "pos_embed":
                p.copy_(torch.randn_like(p) * 0.1)
    return m.eval()


class ReleasedLayoutTest(unittest.TestCase):
    def test_dit_xl_2_state_dict_matches_released_layout(self):
        model = DiT_XL_2(input_size=32, num_classes=1000, learn_sigma=True, in_channels=4)
        got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        want = released_layout(28, 1152, 4, 2, 1000, True, 256)
        self.assertEqual(set(got), set(want))
        for k in want:
            self.assertEqual(got[k], want[k], k)
        nparams = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.assertAlmostEqual(nparams / 1e6, 675, delta=1)

    def test_pos_embed_column_first_then_row(self):
        d, grid = 16, 4
        pe = sincos_pos_embed(d, grid)  # token index = row * grid + col
        q = d // 4
        token = 1 * grid + 2  # row 1, column 2
        for k in range(q):
            w = 1.0 / 10000 ** (k / q)
            self.assertAlmostEqual(pe[token, k], math.sin(2 * w), places=12)
            self.assertAlmostEqual(pe[token, q + k], math.cos(2 * w), places=12)
            self.assertAlmostEqual(pe[token, 2 * q + k], math.sin(1 * w), places=12)
            self.assertAlmostEqual(pe[token, 3 * q + k], math.cos(1 * w), places=12)


class ScheduleTest(unittest.TestCase):
    def test_alphas_cumprod_reference_values(self):
        ac = alphas_cumprod(linear_betas())
        self.assertAlmostEqual(ac[0], 0.9999, places=12)
        self.assertAlmostEqual(ac[499], 0.0785872, delta=5e-8)
        self.assertAlmostEqual(ac[999] / 4.0358e-5, 1.0, delta=1e-4)

    def test_respacing_examples(self):
        r50 = respace(50)
        self.assertEqual(r50[:5], [0, 20, 41, 61, 82])
        self.assertEqual(r50[-3:], [958, 979, 999])
        r25 = respace(25)
        self.assertEqual(r25[:4], [0, 42, 83, 125])
        self.assertEqual(r25[-3:], [916, 957, 999])
        r250 = respace(250)
        self.assertEqual(r250[:3], [0, 4, 8])
        self.assertEqual(r250[-2:], [995, 999])
        self.assertEqual(respace(1), [0])
        self.assertEqual(respace(1000), list(range(1000)))

    def test_accumulated_rounding_differs_from_direct_formula_for_278_counts(self):
        differ = [n for n in range(2, 1001)
                  if respace(n) != [round(k * (999 / (n - 1))) for k in range(n)]]
        self.assertEqual(len(differ), 278)
        self.assertEqual(differ[:3], [21, 23, 31])

    def test_respaced_alphas_equal_kept_original_alphas(self):
        ac = alphas_cumprod(linear_betas())
        s = Schedule(50)
        np.testing.assert_allclose(s.alphas_cumprod, ac[s.timesteps], rtol=1e-12)


class SamplerTest(unittest.TestCase):
    def test_ddim_eta0_is_deterministic_and_guidance_one_is_conditional(self):
        m = small_model()
        x = torch.randn(2, 4, 8, 8)
        y = torch.tensor([1, 2])
        a = sample(m, x, y, 5, "ddim", guidance=1.0, generator=torch.Generator().manual_seed(1))
        b = sample(m, x, y, 5, "ddim", guidance=1.0, generator=torch.Generator().manual_seed(2))
        self.assertTrue(torch.equal(a, b))

    def test_first3_guidance_leaves_channel3_and_variance_conditional(self):
        from dit.diffusion import guided_model_output
        m = small_model()
        s = Schedule(10)
        x = torch.randn(2, 4, 8, 8)
        y = torch.tensor([1, 2])
        out = guided_model_output(m, x, 5, s, y, 7, 4.0, "first3", 4)
        t = torch.full((2,), s.timesteps[5], dtype=torch.long)
        cond, uncond = m(x, t, y), m(x, t, torch.full_like(y, 7))
        torch.testing.assert_close(out[:, 3:], cond[:, 3:])
        torch.testing.assert_close(out[:, :3], uncond[:, :3] + 4.0 * (cond[:, :3] - uncond[:, :3]))
        out_all = guided_model_output(m, x, 5, s, y, 7, 4.0, "all", 4)
        torch.testing.assert_close(out_all[:, :4], uncond[:, :4] + 4.0 * (cond[:, :4] - uncond[:, :4]))
        torch.testing.assert_close(out_all[:, 4:], cond[:, 4:])


class GaussianDataModel:
    """The exact ε of data N(0, s²) per value: ε(x, t) = σ·x / (α²s² + σ²). Its probability-flow ODE is solved in
    closed form: x_t / √(α_t²s² + σ_t²) stays constant."""
    S2 = 0.25
    cfg = dict(in_channels=1, learn_sigma=False, num_classes=1)

    def __init__(self):
        self.ac = torch.tensor(alphas_cumprod(linear_betas()), dtype=torch.float64)

    def __call__(self, x, t, y):
        a = self.ac[t].view(-1, 1, 1, 1).to(x.dtype)
        return (1 - a).sqrt() * x / (a * self.S2 + 1 - a)

    def exact(self, x_T):
        a = float(self.ac[-1])
        return x_T.double() * (self.S2 ** 0.5 / (a * self.S2 + 1 - a) ** 0.5)


def dpmpp_2m_float64(model, x_T, steps):
    """DPM-Solver++(2M) written independently, in float64, in diffusers' form (docs/SAMPLERS.md): with
    D1 = (D_i − D_{i−1}) / r, x ← (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D_i − ½·α_t(e^{−h} − 1)·D1; first order at the
    first step and the final step (to σ = 0, where x ← D)."""
    s = Schedule(steps)
    acs = list(s.alphas_cumprod[::-1]) + [1.0]
    lam = [0.5 * math.log(a / (1 - a)) if a < 1 else math.inf for a in acs]
    x, prev = x_T.double(), None
    for j in range(steps):
        i = steps - 1 - j
        t = torch.full((x.shape[0],), s.timesteps[i], dtype=torch.long)
        eps = model(x, t, None)
        d = (x - math.sqrt(1 - acs[j]) * eps) / math.sqrt(acs[j])
        if acs[j + 1] >= 1:
            return d
        h = lam[j + 1] - lam[j]
        coef = math.sqrt(acs[j + 1]) * math.expm1(-h)
        x_new = math.sqrt(1 - acs[j + 1]) / math.sqrt(1 - acs[j]) * x - coef * d
        if prev is not None:
            r = (lam[j] - lam[j - 1]) / h
            x_new = x_new - 0.5 * coef * (d - prev) / r
        x, prev = x_new, d
    return x


class DpmSolverTest(unittest.TestCase):
    def test_matches_an_independent_float64_implementation(self):
        m = GaussianDataModel()
        x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
        # (2 steps jump from t = 999 straight to D, where float32 cancellation in (x − σε)/α costs ~1e-3: left out)
        for steps in (1, 3, 8, 20):
            got = sample(m, x, torch.zeros(3, dtype=torch.long), steps, "dpmpp_2m", guidance=1.0).double()
            want = dpmpp_2m_float64(m, x, steps)
            self.assertLess(float((got - want).abs().max() / want.abs().max()), 1e-4, steps)

    def test_second_order_step_is_used_between_first_and_last(self):
        # with 3 steps only the middle step is second order: dropping it (DDIM-like first order everywhere) differs
        from dit.diffusion import dpmpp_2m_coefficients
        s = Schedule(3)
        self.assertEqual(dpmpp_2m_coefficients(s, 2)[2], 0.0)
        self.assertGreater(dpmpp_2m_coefficients(s, 1)[2], 0.0)
        self.assertEqual(dpmpp_2m_coefficients(s, 0), (0.0, 1.0, 0.0))

    def test_first_order_dpm_solver_is_ddim(self):
        # the first-order DPM-Solver++ update is DDIM (eta 0) exactly in exact arithmetic: one step from t = 999
        from dit.diffusion import ddim_step, dpmpp_2m_step
        m = small_model()
        s = Schedule(10)
        x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
        eps = m(x, torch.full((2,), s.timesteps[9], dtype=torch.long), torch.tensor([1, 2]))[:, :4]
        a, _ = dpmpp_2m_step(x, eps, s, 9, None)
        b, _ = ddim_step(x, eps, s, 9, 0.0, None)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


class ExportAndConverterTest(unittest.TestCase):
    def test_safetensors_round_trip(self):
        with tempfile.TemporaryDirectory() as d:
            t = {"a": torch.randn(3, 5), "b.c": torch.arange(7, dtype=torch.long)}
            safetensors_io.write(os.path.join(d, "f.safetensors"), t, {"k": "v"})
            back, meta = safetensors_io.read(os.path.join(d, "f.safetensors"))
            self.assertEqual(meta, {"k": "v"})
            for k in t:
                self.assertTrue(torch.equal(t[k], back[k]))
            with open(os.path.join(d, "f.safetensors"), "rb") as f:
                n = int.from_bytes(f.read(8), "little")
            self.assertEqual(n % 8, 0)

    def test_model_folder_round_trip_and_onnx_contract(self):
        import onnx
        m = small_model(3)
        with tempfile.TemporaryDirectory() as d:
            write_model_folder(m, d, make_config(m, "t", None))
            with open(os.path.join(d, "config.json")) as f:
                cfg = json.load(f)
            m2 = dit_from_config(cfg)
            sd, _ = safetensors_io.read(os.path.join(d, "weights.safetensors"))
            m2.load_state_dict(sd)
            x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([0, 7, 3])
            torch.testing.assert_close(m2.eval()(x, t, y), m(x, t, y), rtol=0, atol=0)
            g = onnx.load(os.path.join(d, "model.onnx")).graph
            self.assertEqual([i.name for i in g.input], ["x", "t", "y", "cache_residual", "cache_run"])
            self.assertEqual([o.name for o in g.output], ["out", "cache_residual_out"])
            elem = {i.name: i.type.tensor_type.elem_type for i in g.input}
            self.assertEqual(elem, {"x": onnx.TensorProto.FLOAT, "t": onnx.TensorProto.INT64,
                                    "y": onnx.TensorProto.INT64, "cache_residual": onnx.TensorProto.FLOAT,
                                    "cache_run": onnx.TensorProto.INT64})
            self.assertEqual(g.input[0].type.tensor_type.shape.dim[0].dim_param, "N")

    def test_converter_released_pt_round_trip(self):
        m = small_model(4)
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "released.pt")
            torch.save(m.state_dict(), src)
            m2, cfg = convert.convert(src, num_heads=3)
            self.assertEqual(cfg, m.config())
            for k, v in m.state_dict().items():
                self.assertTrue(torch.equal(v, m2.state_dict()[k]), k)

    def test_converter_diffusers_layout(self):
        m = small_model(5)
        sd = m.state_dict()
        depth, d = 2, 48
        diff = {"pos_embed.proj.weight": sd["x_embedder.proj.weight"], "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
                "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
                "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
                "proj_out_2.weight": sd["final_layer.linear.weight"], "proj_out_2.bias": sd["final_layer.linear.bias"]}
        for i in range(depth):
            b, o = f"transformer_blocks.{i}.", f"blocks.{i}."
            for kind in ("weight", "bias"):
                q, k, v = sd[o + f"attn.qkv.{kind}"].split(d, 0)
                diff.update({b + f"attn1.to_q.{kind}": q, b + f"attn1.to_k.{kind}": k, b + f"attn1.to_v.{kind}": v,
                             b + f"attn1.to_out.0.{kind}": sd[o + f"attn.proj.{kind}"],
                             b + f"ff.net.0.proj.{kind}": sd[o + f"mlp.fc1.{kind}"],
                             b + f"ff.net.2.{kind}": sd[o + f"mlp.fc2.{kind}"],
                             b + f"norm1.linear.{kind}": sd[o + f"adaLN_modulation.1.{kind}"],
                             b + f"norm1.emb.timestep_embedder.linear_1.{kind}": sd[f"t_embedder.mlp.0.{kind}"],
                             b + f"norm1.emb.timestep_embedder.linear_2.{kind}": sd[f"t_embedder.mlp.2.{kind}"]})
            diff[b + "norm1.emb.class_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"]
        with tempfile.TemporaryDirectory() as dd:
            src = os.path.join(dd, "diffusion_pytorch_model.safetensors")
            safetensors_io.write(src, {k: v.clone() for k, v in diff.items()})
            with open(os.path.join(dd, "config.json"), "w") as f:
                json.dump({"num_attention_heads": 3, "sample_size": 8}, f)
            m2, cfg = convert.convert(src)
            self.assertEqual(cfg["num_heads"], 3)
            x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 900]), torch.tensor([1, 7])
            torch.testing.assert_close(m2(x, t, y), m(x, t, y), rtol=1e-6, atol=1e-6)
            # per-block embedder copies that differ cannot be de-duplicated
            diff["transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight"] = torch.zeros(8, d)
            safetensors_io.write(src, {k: v.clone() for k, v in diff.items()})
            with self.assertRaisesRegex(ValueError, "differs from block 0"):
                convert.convert(src)


class FixtureTest(unittest.TestCase):
    """The committed fixtures still equal what the reference computes (catches a silent change of either)."""

    def test_fixture_forward_matches_reference(self):
        root = os.path.join(TOOLS, "fixtures")
        for name in ("pixel-tiny", "latent-tiny"):
            folder = os.path.join(root, name)
            with open(os.path.join(folder, "config.json")) as f:
                cfg = json.load(f)
            m = dit_from_config(cfg)
            m.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
            cases, _ = safetensors_io.read(os.path.join(folder, "cases.safetensors"))
            with torch.no_grad():
                out = m.eval()(cases["forward.x"], cases["forward.t"], cases["forward.y"])
            err = float((out - cases["forward.out"]).abs().max() / cases["forward.out"].abs().max())
            self.assertLess(err, 1e-5, name)

    def test_fixture_trajectories_match_reference(self):
        # every trajectory in the metadata, rerun by the reference from its x_T and noise. Not bit-exact across
        # machines (the model's float32 matmuls round differently on another CPU): within 1e-5 of each tensor's
        # largest magnitude
        root = os.path.join(TOOLS, "fixtures")
        for name in ("pixel-tiny", "latent-tiny"):
            folder = os.path.join(root, name)
            with open(os.path.join(folder, "config.json")) as f:
                cfg = json.load(f)
            m = dit_from_config(cfg)
            m.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
            m.eval()
            cases, meta = safetensors_io.read(os.path.join(folder, "cases.safetensors"))
            trajs = json.loads(meta["trajectories"])
            self.assertTrue({"dpmpp_2m", "dpmpp_2m_cfg_first3", "dpmpp_2m_cfg_all"} <= set(trajs), name)
            for traj, tm in trajs.items():
                p = f"traj.{traj}."
                steps = tm["steps"]
                noise = cases[p + "noise"]
                trace = []
                cache = StepCache(tm["cache_interval"], steps, cfg["depth"]) if "cache_interval" in tm else None
                final = sample(m, cases[p + "x"][0], cases[p + "y"], steps, sampler=tm["sampler"], eta=tm["eta"],
                               guidance=tm["guidance"], guidance_mode=tm["guidance_mode"],
                               noises=[noise[steps - 1 - i] for i in range(steps)], trace=trace, cache=cache)
                xs = torch.stack([tr[2] for tr in trace] + [final])
                x0s = torch.stack([tr[3] for tr in trace])
                for what, got in (("x", xs), ("x0", x0s)):
                    want = cases[p + what]
                    err = float((got - want).abs().max() / want.abs().max())
                    self.assertLess(err, 1e-5, f"{name} {traj} {what}")


class StepCacheTest(unittest.TestCase):
    """The reference of docs/STEP_CACHE.md: forward_cached and the interval schedule."""

    def setUp(self):
        folder = os.path.join(TOOLS, "fixtures", "latent-tiny")
        with open(os.path.join(folder, "config.json")) as f:
            self.cfg = json.load(f)
        self.m = dit_from_config(self.cfg)
        self.m.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
        self.m.eval()
        self.cases, _ = safetensors_io.read(os.path.join(folder, "cases.safetensors"))

    def test_running_every_sample_is_the_plain_forward_and_reusing_the_stored_residual_nearly_so(self):
        c = self.cases
        x, t, y = c["forward.x"], c["forward.t"], c["forward.y"]
        tokens = (self.cfg["input_size"] // self.cfg["patch_size"]) ** 2
        zeros = torch.zeros(4, tokens, self.cfg["hidden_size"])
        with torch.no_grad():
            plain = self.m(x, t, y)
            ran, stored = self.m.forward_cached(x, t, y, zeros, torch.arange(4))
            reused, untouched = self.m.forward_cached(x, t, y, stored, torch.zeros(0, dtype=torch.long))
        scale = float(plain.abs().max())
        self.assertLess(float((ran - plain).abs().max()) / scale, 1e-5)
        self.assertLess(float((reused - plain).abs().max()) / scale, 1e-5)
        self.assertTrue(torch.equal(untouched, stored))  # nothing ran: the residuals pass through

    def test_the_committed_cache_case_is_reproduced(self):
        c = self.cases
        with torch.no_grad():
            out, res = self.m.forward_cached(c["cache.x"], c["cache.t"], c["cache.y"], c["cache.residual"],
                                             c["cache.run"])
        self.assertLess(float((out - c["cache.out"]).abs().max() / c["cache.out"].abs().max()), 1e-5)
        self.assertLess(float((res - c["cache.residual_out"]).abs().max() / c["cache.residual_out"].abs().max()),
                        1e-5)

    def test_the_interval_schedule_counts_block_evaluations(self):
        cache = StepCache(3, 8, 6)
        self.assertEqual([cache.runs_span(k) for k in range(8)], [True, False, False, True, False, False, True, True])
        x = torch.zeros(2, 4, 16, 16)
        y = torch.tensor([1, 2])
        for k in range(8):
            cache(self.m, k, x, torch.full((2,), 500), y)
        self.assertEqual(cache.block_evals, 4 * 6 + 4 * 1)


if __name__ == "__main__":
    unittest.main()
