"""Tests of the flow reference (tools/dit/flow.py) and its fixtures (issue 23): the committed sit-tiny and repa-tiny
cases are reproduced; the solvers' invariants (evaluation counts, the Euler–Maruyama last step, exactness on a
constant derivative, the grid and its shift, guidance and its interval, DPM-Solver++'s first-order rules and an
independent float64 version, convergence on Gaussian data); the committed ONNX graphs equal the PyTorch forward
on float times (run by a small numpy evaluator of the graph's operators: Debian's onnx 1.12 has no reference
evaluator and there is no Python ONNX Runtime).

  /usr/bin/python3 -m unittest discover -s tools/tests -p test_flow_reference.py -v
"""
import json
import math
import os
import sys
import unittest

import numpy as np
import torch

TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOOLS)
from dit import flow, safetensors_io  # noqa: E402
from dit.model import dit_from_config  # noqa: E402

FIXTURES = ("sit-tiny", "repa-tiny")
S2 = 0.25  # the Gaussian data's variance


def load_fixture(name):
    folder = os.path.join(TOOLS, "fixtures", name)
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    model = dit_from_config(cfg)
    model.load_state_dict(safetensors_io.read(os.path.join(folder, "weights.safetensors"))[0])
    cases, meta = safetensors_io.read(os.path.join(folder, "cases.safetensors"))
    return model.eval(), cfg, cases, meta, folder


def rel_err(got, want):
    return float((got.double() - want.double()).abs().max() / want.double().abs().max())


def spec(family, channels=1, mode="all", num_classes=3):
    return {"process": flow.PROCESSES[family], "in_channels": channels, "num_classes": num_classes,
            "guidance_mode": mode}


class GaussianFlow:
    """The exact velocity of data N(0, S2) per value in the family's convention: with x_s = (1 − s)·x0 + s·ε,
    dx/ds = E[ε − x0 | x_s] = (s − (1 − s)·S2) / ((1 − s)²·S2 + s²) · x. Its ODE keeps x_s / √((1 − s)²S2 + s²)
    constant: from x at s = 1 it ends at √S2·x. Computed in float64, returned as float32."""

    def __init__(self, family):
        self.process = flow.PROCESSES[family]
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], t.clone(), y.clone()))
        tau = t.double().view(-1, 1, 1, 1)
        s = 1 - tau if self.process["time_input"] == "1-s" else tau
        d = (s - (1 - s) * S2) / ((1 - s) ** 2 * S2 + s ** 2) * x.double()
        return (flow.velocity_sign(self.process) * d).float()


class ConstantFlow:
    """v = the given constant per channel (D = sign·v), whatever x, t, y; records the calls."""

    def __init__(self, v):
        self.v = v
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((x.shape[0], t.clone(), y.clone()))
        return self.v.expand(x.shape[0], -1, x.shape[2], x.shape[3]).clone()


class FixtureTest(unittest.TestCase):
    """The committed flow fixtures still equal what the reference computes (within 1e-5 of each tensor's largest
    magnitude: another CPU rounds the float32 matmuls differently), and say what the README says."""

    def test_configs(self):
        for name, family, qk, mode in (("sit-tiny", "sit", False, "first3"), ("repa-tiny", "repa", True, "all")):
            _, cfg, _, _, _ = load_fixture(name)
            self.assertEqual(cfg["format_version"], 2)
            self.assertEqual(cfg["family"], family)
            self.assertEqual(cfg["process"], flow.PROCESSES[family])
            self.assertEqual(cfg["qk_norm"], qk)
            self.assertEqual(cfg["guidance_mode"], mode)
            self.assertFalse(cfg["learn_sigma"])
            self.assertNotIn("schedule", cfg)

    def test_forward_and_cache_cases(self):
        for name in FIXTURES:
            model, cfg, c, _, _ = load_fixture(name)
            self.assertEqual(c["forward.t"].dtype, torch.float32)
            self.assertEqual(c["forward.t"].tolist(), [0.0, float(np.float32(0.137)), float(np.float32(1 / 3)), 1.0])
            self.assertEqual(c["forward.y"].tolist(), [0, 3, cfg["num_classes"], cfg["num_classes"] - 1])
            with torch.no_grad():
                out = model(c["forward.x"], c["forward.t"], c["forward.y"])
                cached, res = model.forward_cached(c["cache.x"], c["cache.t"], c["cache.y"], c["cache.residual"],
                                                   c["cache.run"])
            self.assertLess(rel_err(out, c["forward.out"]), 1e-5, name)
            self.assertLess(rel_err(cached, c["cache.out"]), 1e-5, name)
            self.assertLess(rel_err(res, c["cache.residual_out"]), 1e-5, name)

    def test_trajectories(self):
        want_names = ["euler", "euler_cfg", "heun_cfg", "heun_cfg_interval", "euler_maruyama_cfg_interval",
                      "dpmpp_2m_cfg", "heun_cfg_shift3"]
        for name in FIXTURES:
            model, cfg, c, meta, _ = load_fixture(name)
            trajs = json.loads(meta["trajectories"])
            self.assertEqual(list(trajs), want_names)
            for traj, m in trajs.items():
                p = f"traj.{traj}."
                n = m["steps"]
                self.assertEqual(m["mode"], cfg["guidance_mode"])
                self.assertEqual(list(c[p + "x"].shape), [n + 1, 2, 4, 16, 16])
                self.assertEqual(list(c[p + "x0"].shape), [n, 2, 4, 16, 16])
                self.assertEqual(list(c[p + "noise"].shape), [n, 2, 4, 16, 16])
                self.assertEqual(c[p + "y"].tolist(), [1, 5])
                self.assertEqual(c[p + "s"].dtype, torch.float64)
                self.assertEqual(c[p + "s"].tolist(), flow.grid(n, m["sampler"], m["shift"]))
                if m["sampler"] != "euler_maruyama":
                    self.assertEqual(float(c[p + "noise"].abs().max()), 0.0)
                trace, stats = [], {}
                final = flow.sample_flow(model, cfg, c[p + "x"][0], c[p + "y"], n, m["sampler"],
                                         guidance=m["guidance"], guidance_mode=m["mode"], interval=m["interval"],
                                         shift=m["shift"], noises=c[p + "noise"], trace=trace, stats=stats)
                xs = torch.stack([tr[1] for tr in trace] + [final])
                x0s = torch.stack([tr[2] for tr in trace])
                self.assertLess(rel_err(xs, c[p + "x"]), 1e-5, f"{name} {traj} x")
                self.assertLess(rel_err(x0s, c[p + "x0"]), 1e-5, f"{name} {traj} x0")
                self.assertEqual([int(tr[3]) for tr in trace], c[p + "guided"].tolist(), f"{name} {traj}")
                self.assertEqual((stats["evaluations"], stats["forward_rows"]), (m["evaluations"], m["forward_rows"]))
            # the interval trajectories have guided and unguided steps
            for traj in ("heun_cfg_interval", "euler_maruyama_cfg_interval"):
                self.assertEqual(set(c[f"traj.{traj}.guided"].tolist()), {0, 1}, f"{name} {traj}")


class GridTest(unittest.TestCase):
    def test_shift_one_is_the_identity_grid(self):
        for n in (1, 2, 7, 8, 50, 250):
            for sampler in ("euler", "heun", "dpmpp_2m"):
                self.assertEqual(flow.grid(n, sampler, 1.0), [1.0 - i / n for i in range(n + 1)])
            em = [1.0 - 0.96 * i / (n - 1) for i in range(n - 1)] + [0.04, 0.0] if n > 1 else [1.0, 0.0]
            self.assertEqual(flow.grid(n, "euler_maruyama", 1.0), em)

    def test_shift_moves_every_point_and_keeps_the_ends(self):
        for shift in (0.3, 3.0, 1 / 0.3):
            g = flow.grid(8, "euler", shift)
            self.assertEqual((g[0], g[-1]), (1.0, 0.0))
            for i, s in enumerate(g[1:-1], 1):
                base = 1.0 - i / 8
                self.assertEqual(s, shift * base / (1.0 + (shift - 1.0) * base))
            em = flow.grid(8, "euler_maruyama", shift)
            self.assertAlmostEqual(em[-2], shift * 0.04 / (1 + (shift - 1) * 0.04), places=15)
        self.assertGreater(flow.grid(8, "euler", 3.0)[4], 0.5)  # shift > 1 spends more steps at high noise

    def test_euler_maruyama_grid_ends(self):
        g = flow.grid(250, "euler_maruyama")
        self.assertEqual(len(g), 251)
        self.assertEqual((g[0], g[-2], g[-1]), (1.0, 0.04, 0.0))


class SolverTest(unittest.TestCase):
    def setUp(self):
        torch.set_num_threads(1)

    def test_heun_evaluations_and_rows(self):
        for n in (1, 2, 8):
            m = ConstantFlow(torch.zeros(1, 4, 1, 1))
            st = {}
            flow.sample_flow(m, spec("repa", 4), torch.zeros(2, 4, 2, 2), torch.tensor([0, 1]), n, "heun",
                             guidance=3.0, stats=st)
            self.assertEqual(st["evaluations"], 2 * n - 1)
            self.assertEqual(st["forward_rows"], 2 * 2 * (2 * n - 1))
            self.assertEqual(len(m.calls), 2 * n - 1)
        for sampler in ("euler", "euler_maruyama", "dpmpp_2m"):
            st = {}
            flow.sample_flow(ConstantFlow(torch.zeros(1, 1, 1, 1)), spec("sit"), torch.zeros(1, 1, 2, 2),
                             torch.tensor([0]), 8, sampler, stats=st)
            self.assertEqual(st["evaluations"], 8)
            self.assertEqual(flow.evaluation_counts(sampler, 8), 8)
        self.assertEqual(flow.evaluation_counts("heun", 8), 15)

    def test_euler_on_a_constant_derivative_is_exact(self):
        # dyadic values: every float32 operation is exact, so x_N = x_0 + Σ dt·D = x_0 − D to the bit
        x0 = torch.arange(-8, 8, dtype=torch.float32).reshape(1, 1, 4, 4) / 64
        for family, sign in (("sit", -1.0), ("repa", 1.0)):
            v = torch.tensor([0.75]).reshape(1, 1, 1, 1)
            for n in (1, 2, 4, 8, 16):
                out = flow.sample_flow(ConstantFlow(v), spec(family), x0, torch.tensor([0]), n, "euler")
                self.assertTrue(torch.equal(out, x0 - sign * 0.75), (family, n))
            out = flow.sample_flow(ConstantFlow(v), spec(family), x0, torch.tensor([0]), 8, "heun")
            self.assertTrue(torch.equal(out, x0 - sign * 0.75), family)

    def test_euler_maruyama_last_step_has_no_noise(self):
        model = GaussianFlow("repa")
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        z = torch.randn(6, 2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
        trace = []
        a = flow.sample_flow(model, spec("repa"), x, torch.tensor([0, 0]), 6, "euler_maruyama", noises=z,
                             trace=trace)
        z2 = z.clone()
        z2[5] += 100.0
        b = flow.sample_flow(model, spec("repa"), x, torch.tensor([0, 0]), 6, "euler_maruyama", noises=z2)
        self.assertTrue(torch.equal(a, b))
        # the last step is the mean: x_N = x + ((2 − s)·D + x)·(0 − s) at s = 0.04
        x5, s5 = trace[5][1], trace[5][0]
        d = flow.Derivative(model, spec("repa"), None, None)(x5, s5, torch.tensor([0, 0]), False)
        self.assertTrue(torch.equal(a, x5 + (flow._f(2.0 - s5) * d + x5) * flow._f(-s5)))
        z3 = z.clone()
        z3[4] += 1.0
        c = flow.sample_flow(model, spec("repa"), x, torch.tensor([0, 0]), 6, "euler_maruyama", noises=z3)
        self.assertFalse(torch.equal(a, c))  # z_{N−2} is used

    def test_network_time_per_family(self):
        for family, expect in (("sit", lambda s: 1.0 - s), ("repa", lambda s: s)):
            m = ConstantFlow(torch.zeros(1, 1, 1, 1))
            flow.sample_flow(m, spec(family), torch.zeros(1, 1, 2, 2), torch.tensor([0]), 4, "heun", shift=3.0)
            g = flow.grid(4, "heun", 3.0)
            want = [g[0], g[1], g[1], g[2], g[2], g[3], g[3]]  # Heun: s_i, then s_{i+1}; the last step once
            got = [float(c[1][0]) for c in m.calls]
            self.assertEqual(got, [float(np.float32(expect(s))) for s in want])
            self.assertEqual({c[1].dtype for c in m.calls}, {torch.float32})

    def test_guidance_channels_and_batch_order(self):
        class Labelled:
            """v = label + 10·channel: the conditional rows differ from the null ones."""

            def __init__(self):
                self.labels = []

            def __call__(self, x, t, y):
                self.labels.append(y.tolist())
                ch = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
                return (y.float().view(-1, 1, 1, 1) + 10 * ch).expand(x.shape).clone()

        x = torch.zeros(2, 4, 1, 1)
        y = torch.tensor([1, 2])
        for mode, guided_channels in (("first3", 3), ("all", 4)):
            m = Labelled()
            d = flow.Derivative(m, spec("repa", 4, mode, num_classes=7), 4.0, None)(x, 0.5, y, True)
            self.assertEqual(m.labels, [[1, 2, 7, 7]])  # [conditional ; unconditional], null = num_classes
            for b, label in enumerate([1, 2]):
                for ch in range(4):
                    want = 7 + 10 * ch + 4.0 * (label - 7) if ch < guided_channels else label + 10 * ch
                    self.assertEqual(float(d[b, ch, 0, 0]), want, (mode, b, ch))
            m = Labelled()
            d = flow.Derivative(m, spec("sit", 4, mode, num_classes=7), 4.0, None)(x, 0.5, y, False)
            self.assertEqual(m.labels, [[1, 2]])  # unguided: the conditional half only
            self.assertEqual(float(d[1, 3, 0, 0]), -(2 + 30))  # SiT: D = −v

    def test_interval_decisions(self):
        def decisions(family, sampler, interval, guidance=4.0, n=8):
            m = ConstantFlow(torch.zeros(1, 1, 1, 1))
            trace = []
            flow.sample_flow(m, spec(family), torch.zeros(1, 1, 1, 1), torch.tensor([0]), n, sampler,
                             guidance=guidance, interval=interval, trace=trace, noises=torch.zeros(n, 1, 1, 1, 1))
            return [int(tr[3]) for tr in trace], [c[0] for c in m.calls]

        self.assertEqual(decisions("sit", "euler", [0.3, 0.8])[0], [0, 0, 0, 1, 1, 1, 1, 0])  # τ = 1 − s
        self.assertEqual(decisions("repa", "euler", [0.3, 0.8])[0], [0, 0, 1, 1, 1, 1, 0, 0])  # τ = s
        self.assertEqual(decisions("repa", "euler_maruyama", [0.0, 0.7])[0], [0, 0, 0, 1, 1, 1, 1, 1])
        self.assertEqual(decisions("sit", "euler_maruyama", [0.0, 0.7])[0], [1, 1, 1, 1, 1, 1, 0, 0])
        # the bounds are inclusive (τ = 0.25 and 0.5 are exact grid points)
        self.assertEqual(decisions("repa", "euler", [0.25, 0.5])[0], [0, 0, 0, 0, 1, 1, 1, 0])
        self.assertEqual(decisions("repa", "euler", None)[0], [1] * 8)
        self.assertEqual(decisions("repa", "euler", None, guidance=1.0)[0], [0] * 8)
        # Heun: the step's decision holds for its second evaluation too (τ(s_{i+1}) outside the interval)
        guided, rows = decisions("repa", "heun", [0.8, 1.0], n=4)  # s = 1, 0.75, 0.5, 0.25
        self.assertEqual(guided, [1, 0, 0, 0])
        self.assertEqual(rows, [2, 2, 1, 1, 1, 1, 1])

    def test_data_estimate_is_from_the_first_evaluation(self):
        model = GaussianFlow("sit")
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
        trace = []
        flow.sample_flow(model, spec("sit"), x, torch.tensor([0, 0]), 5, "heun", trace=trace)
        for s, xb, x0, _ in trace:
            d = flow.Derivative(model, spec("sit"), None, None)(xb, s, torch.tensor([0, 0]), False)
            self.assertTrue(torch.equal(x0, xb - flow._f(s) * d))

    def test_dpmpp_2m_rules(self):
        g = flow.grid(8, "dpmpp_2m")
        self.assertEqual(flow.dpmpp_2m_coefficients(g, 0), (0.875, 0.125, 0.0))  # from s = 1: σ·x + α·x̂
        self.assertEqual(flow.dpmpp_2m_coefficients(g, 1)[2], 0.0)  # the previous step had h = ∞
        self.assertGreater(flow.dpmpp_2m_coefficients(g, 2)[2], 0.0)
        self.assertEqual(flow.dpmpp_2m_coefficients(g, 7), (0.0, 1.0, 0.0))
        trace = []
        model = GaussianFlow("repa")
        x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
        out = flow.sample_flow(model, spec("repa"), x, torch.tensor([0, 0]), 8, "dpmpp_2m", trace=trace)
        self.assertTrue(torch.equal(out, trace[-1][2]))  # the last step returns x̂

    def test_dpmpp_2m_matches_an_independent_float64_version(self):
        # diffusers' form in float64: x ← (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D − ½·α_t(e^{−h} − 1)·(D − D_prev)/r,
        # λ = log(α/σ), α = 1 − s, σ = s; first order at the first two steps (h = ∞ before), x ← D at the last
        def reference(x, n):
            model = GaussianFlow("repa")
            s = [1.0 - i / n for i in range(n + 1)]
            lam = [math.log((1 - v) / v) if 0 < v < 1 else (-math.inf if v >= 1 else math.inf) for v in s]
            x, prev = x.double(), None
            for i in range(n):
                d = model(x.float(), torch.full((x.shape[0],), s[i]), torch.zeros(x.shape[0])).double()
                x0 = x - s[i] * d
                if s[i + 1] == 0:
                    return x0
                if s[i] == 1:
                    x_new = s[i + 1] * x + (1 - s[i + 1]) * x0
                else:
                    h = lam[i + 1] - lam[i]
                    coef = (1 - s[i + 1]) * math.expm1(-h)
                    x_new = s[i + 1] / s[i] * x - coef * x0
                    if prev is not None and s[i - 1] < 1:
                        r = (lam[i] - lam[i - 1]) / h
                        x_new = x_new - 0.5 * coef * (x0 - prev) / r
                x, prev = x_new, x0
            return x

        x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(3))
        for n in (2, 3, 8, 20):  # (n = 1: x̂ at s = 1 is E[data] = 0 for this model)
            got = flow.sample_flow(GaussianFlow("repa"), spec("repa"), x, torch.zeros(3, dtype=torch.long), n,
                                   "dpmpp_2m")
            self.assertLess(rel_err(got, reference(x, n)), 1e-5, n)

    def test_ode_solvers_converge_on_gaussian_data(self):
        x = torch.randn(512, 1, 1, 1, generator=torch.Generator().manual_seed(0))
        exact = math.sqrt(S2) * x.double()
        for family in ("sit", "repa"):
            err = {}
            for sampler in ("euler", "heun", "dpmpp_2m"):
                for n in (16, 64):
                    out = flow.sample_flow(GaussianFlow(family), spec(family), x, torch.zeros(512, dtype=torch.long),
                                           n, sampler)
                    err[sampler, n] = float((out.double() - exact).abs().max())
            self.assertLess(err["heun", 64], 2e-3)
            self.assertGreater(err["heun", 16] / err["heun", 64], 10)  # second order
            self.assertGreater(err["euler", 16] / err["euler", 64], 3)  # first order
            self.assertLess(err["dpmpp_2m", 64], err["euler", 64])

    def test_euler_maruyama_reaches_the_data_distribution(self):
        x = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(0))
        out = flow.sample_flow(GaussianFlow("sit"), spec("sit"), x, torch.zeros(20000, dtype=torch.long), 100,
                               "euler_maruyama", generator=torch.Generator().manual_seed(1))
        self.assertLess(abs(float(out.var()) / S2 - 1), 0.05)
        self.assertLess(abs(float(out.mean())), 0.02)


# ---------------------------------------------------------------------------------------------------------------
# The committed ONNX graphs, run by a numpy evaluator of the operators torch's export writes for this model

def _onnx_run(path, feeds):
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(path).graph
    env = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    env.update(feeds)
    np_type = {1: np.float32, 6: np.int32, 7: np.int64, 9: np.bool_, 11: np.float64}

    def attrs(node):
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    for node in graph.node:
        a = attrs(node)
        i = [env[n] if n else None for n in node.input]
        op = node.op_type
        if op == "Constant":
            r = numpy_helper.to_array(a["value"])
        elif op in ("Add", "Sub", "Mul", "Div"):
            x, y = i
            if op == "Div" and np.issubdtype(x.dtype, np.integer):
                r = x // y
            else:
                r = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}[op](x, y)
            r = np.asarray(r, dtype=np.result_type(x, y))
        elif op in ("Sqrt", "Tanh", "Cos", "Sin"):
            r = {"Sqrt": np.sqrt, "Tanh": np.tanh, "Cos": np.cos, "Sin": np.sin}[op](i[0])
        elif op == "Sigmoid":
            r = (1 / (1 + np.exp(-i[0]))).astype(i[0].dtype)
        elif op == "Shape":
            r = np.array(i[0].shape, dtype=np.int64)
        elif op == "Gather":
            r = np.take(i[0], i[1], axis=a.get("axis", 0))
        elif op == "Unsqueeze":
            r = i[0]
            rank = r.ndim + len(i[1])
            for ax in sorted(int(v) % rank for v in i[1]):
                r = np.expand_dims(r, ax)
        elif op == "Concat":
            r = np.concatenate(i, axis=a["axis"])
        elif op == "Reshape":
            shape = [int(d) if d != 0 else i[0].shape[k] for k, d in enumerate(i[1])]
            r = i[0].reshape(shape)
        elif op == "Slice":
            x = i[0]
            axes = i[3] if len(i) > 3 and i[3] is not None else range(len(i[1]))
            steps = i[4] if len(i) > 4 and i[4] is not None else [1] * len(i[1])
            sl = [slice(None)] * x.ndim
            for st, en, ax, sp in zip(i[1], i[2], axes, steps):
                sl[int(ax)] = slice(int(st), int(en), int(sp))
            r = x[tuple(sl)]
        elif op == "Transpose":
            r = np.transpose(i[0], a["perm"])
        elif op == "MatMul":
            r = np.matmul(i[0], i[1])
        elif op == "Gemm":
            x = i[0].T if a.get("transA", 0) else i[0]
            w = i[1].T if a.get("transB", 0) else i[1]
            r = a.get("alpha", 1.0) * (x @ w)
            if len(i) > 2:
                r = r + a.get("beta", 1.0) * i[2]
            r = r.astype(np.float32)
        elif op == "Conv":  # patch embedding: stride = kernel, no padding, one group
            x, w = i[0], i[1]
            p = w.shape[2]
            assert list(a["strides"]) == [p, p] and not any(a.get("pads", [0])) and a.get("group", 1) == 1
            n, c, hh, ww = x.shape
            patches = x.reshape(n, c, hh // p, p, ww // p, p)
            r = np.einsum("nchawb,dcab->ndhw", patches, w).astype(np.float32)
            if len(i) > 2:
                r = r + i[2].reshape(1, -1, 1, 1)
        elif op == "ReduceMean":
            r = np.mean(i[0], axis=tuple(a["axes"]), keepdims=bool(a.get("keepdims", 1))).astype(i[0].dtype)
        elif op == "Softmax":
            x = i[0] - i[0].max(axis=a.get("axis", -1), keepdims=True)
            e = np.exp(x)
            r = e / e.sum(axis=a.get("axis", -1), keepdims=True)
        elif op == "Cast":
            r = i[0].astype(np_type[a["to"]])
        elif op == "ConstantOfShape":
            value = numpy_helper.to_array(a["value"]) if "value" in a else np.zeros(1, np.float32)
            r = np.full([int(d) for d in i[0]], value.reshape(-1)[0], dtype=value.dtype)
        elif op == "Equal":
            r = np.equal(i[0], i[1])
        elif op == "Where":
            r = np.where(i[0], i[1], i[2])
        elif op == "Expand":
            r = np.broadcast_to(i[0], np.broadcast_shapes(i[0].shape, tuple(int(d) for d in i[1]))).copy()
        elif op == "ScatterElements":
            r = i[0].copy()
            np.put_along_axis(r, i[1], i[2], axis=a.get("axis", 0))
        else:
            raise NotImplementedError(f"ONNX operator {op} is not in this test's evaluator")
        env[node.output[0]] = np.asarray(r)
    return [env[o.name] for o in graph.output]


class OnnxGraphTest(unittest.TestCase):
    def test_graph_equals_the_pytorch_forward_on_float_times(self):
        import onnx
        for name in FIXTURES:
            model, cfg, c, _, folder = load_fixture(name)
            path = os.path.join(folder, "model.onnx")
            g = onnx.load(path, load_external_data=False).graph
            self.assertEqual({i.name: i.type.tensor_type.elem_type for i in g.input}["t"], onnx.TensorProto.FLOAT)
            tokens = (cfg["input_size"] // cfg["patch_size"]) ** 2
            # the forward case (every sample runs every block) and float times off the fixture's: 0.9, 0.0123…
            t_other = torch.tensor([0.9, 0.0123456, 0.5, 0.75], dtype=torch.float32)
            for t in (c["forward.t"], t_other):
                feeds = {"x": c["forward.x"].numpy(), "t": t.numpy(), "y": c["forward.y"].numpy(),
                         "cache_residual": np.zeros((4, tokens, cfg["hidden_size"]), np.float32),
                         "cache_run": np.arange(4, dtype=np.int64)}
                out, _ = _onnx_run(path, feeds)
                with torch.no_grad():
                    want = model(c["forward.x"], t, c["forward.y"])
                self.assertLess(rel_err(torch.from_numpy(out), want), 1e-4, name)
            # the cache case: samples 1 and 3 reuse the stored residual
            feeds = {"x": c["cache.x"].numpy(), "t": c["cache.t"].numpy(), "y": c["cache.y"].numpy(),
                     "cache_residual": c["cache.residual"].numpy(), "cache_run": c["cache.run"].numpy()}
            out, res = _onnx_run(path, feeds)
            self.assertLess(rel_err(torch.from_numpy(out), c["cache.out"]), 1e-4, name)
            self.assertLess(rel_err(torch.from_numpy(res), c["cache.residual_out"]), 1e-4, name)


if __name__ == "__main__":
    unittest.main()
