"""Flow-matching DiTs (SiT, REPA): the families' conventions and the samplers, written from docs/MODEL_FAMILIES.md.

One convention inside the server, the noise level s ∈ [0, 1]: x_s = (1 − s)·x_data + s·ε (s = 1 pure noise, s = 0
data), dx/ds = ε − x_data, and the data estimate x̂ = x_s − s·(dx/ds). A family says how its network sees time
(`process.time_input`: τ = s or τ = 1 − s, fed unscaled to DiT's timestep embedder) and what its output v means
(`process.velocity`: "noise_minus_data" → dx/ds = v; "data_minus_noise" → dx/ds = −v).

Arithmetic (the Java samplers port this and must agree within 1e-4 per step): grids, network times, step sizes and
every solver coefficient are computed in float64 (Python floats) and cast to float32 once, where they first multiply
a tensor (`_f`); tensors are float32 and each torch operation rounds once (no fused multiply-add). The exact order of
the float32 operations is written at each step function below; "c32" means float32(c) of a float64 c.
"""
import math

import numpy as np
import torch

FLOW_SAMPLERS = ("euler", "heun", "euler_maruyama", "dpmpp_2m")
VP_SAMPLERS = ("ddpm", "ddim", "dpmpp_2m")
EM_LAST_S = 0.04  # Euler–Maruyama stops its noisy steps here and takes one mean-only step to s = 0

# process of each family (config.json "process"); DiT's is the VP one (tools/dit/diffusion.py)
PROCESSES = {
    "dit": {"prediction": "epsilon", "path": "vp_linear", "time_input": "index"},
    "sit": {"prediction": "velocity", "path": "linear", "time_input": "1-s", "velocity": "data_minus_noise"},
    "repa": {"prediction": "velocity", "path": "linear", "time_input": "s", "velocity": "noise_minus_data"},
}


def _f(v):
    """A float64 coefficient as a float32 scalar tensor (cast once)."""
    return torch.tensor(float(np.float32(v)), dtype=torch.float32)


def is_flow(process):
    return process.get("prediction") == "velocity" and process.get("path") == "linear"


def check_process(process):
    if not is_flow(process):
        raise ValueError(f"not a flow process: {process}")
    if process.get("time_input") not in ("s", "1-s"):
        raise ValueError(f"process.time_input must be 's' or '1-s', got {process.get('time_input')!r}")
    if process.get("velocity") not in ("noise_minus_data", "data_minus_noise"):
        raise ValueError(f"process.velocity must be 'noise_minus_data' or 'data_minus_noise', "
                         f"got {process.get('velocity')!r}")


def network_time(s, process):
    """τ(s) in float64: the value the network's timestep embedder receives (as float32(τ))."""
    return 1.0 - s if process["time_input"] == "1-s" else s


def velocity_sign(process):
    """dx/ds = sign·v."""
    return 1.0 if process["velocity"] == "noise_minus_data" else -1.0


def shift_s(s, shift):
    """Timestep shift of one grid point, float64: shift·s / (1 + (shift − 1)·s) (the product shift·s, the
    denominator 1 + (shift − 1)·s, the division); the ends are kept exactly: s = 1 → 1 and s = 0 → 0 (the formula
    gives 0.9999999999999998 at s = 1 for shift 1/0.3). shift 1 returns every s exactly."""
    if s >= 1.0 or s <= 0.0:
        return s
    return shift * s / (1.0 + (shift - 1.0) * s)


def grid(steps, sampler, shift=1.0):
    """The N + 1 grid points s_0 = 1 > s_1 > … > s_N = 0 (float64), after the shift.
    euler, heun, dpmpp_2m: s_i = 1.0 − i / N (float64 division, then the subtraction).
    euler_maruyama: s_i = 1.0 − 0.96·i / (N − 1) for i = 0..N − 2 (the product 0.96·i first, then the division),
    s_{N−1} = 0.04 exactly, s_N = 0 (N = 1: [1, 0]).
    Then every point is replaced by shift_s(s, shift) (1 and 0 stay exactly 1 and 0)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if shift <= 0 or not math.isfinite(shift):
        raise ValueError(f"timestep_shift must be a positive number, got {shift}")
    if sampler == "euler_maruyama":
        base = [1.0 - 0.96 * i / (steps - 1) for i in range(steps - 1)] + [EM_LAST_S] if steps > 1 else [1.0]
        base.append(0.0)
    elif sampler in ("euler", "heun", "dpmpp_2m"):
        base = [1.0 - i / steps for i in range(steps + 1)]
    else:
        raise ValueError(f"unknown flow sampler {sampler!r}; flow models take {', '.join(FLOW_SAMPLERS)}")
    return [shift_s(s, shift) for s in base]


def step_is_guided(s_i, process, guidance, interval):
    """Decided once per step, at its first grid point s_i, for every evaluation of the step: guidance is on
    (not None and ≠ 1) and, with an interval [lo, hi] (in the network's time τ), lo ≤ τ(s_i) ≤ hi, compared in
    float64."""
    if guidance is None or guidance == 1.0:
        return False
    if interval is None:
        return True
    lo, hi = interval
    tau = network_time(s_i, process)
    return lo <= tau <= hi


def evaluation_counts(sampler, steps):
    """Derivative evaluations of one generation (each is one forward pass; a guided one has twice the rows)."""
    return 2 * steps - 1 if sampler == "heun" else steps


class Derivative:
    """D(x, s) = dx/ds from one forward pass, guided or not. Counts evaluations and forward rows.

    Unguided: out = model(x, t, y) with t = float32(τ(s)) for every row; v = out[:, :C]; D = sign·v.
    Guided: one forward of the doubled batch [x ; x], t for all 2B rows, labels [y ; null] (null = num_classes);
    v_c = out[:B, :C], v_u = out[B:, :C]; on the guided channels (the first min(3, C) for mode "first3", all C
    for "all"): v = v_u + g32·(v_c − v_u) (subtraction, product, sum: three roundings); the other channels are v_c;
    then D = sign·v (a negation, exact)."""

    def __init__(self, model, cfg, guidance, guidance_mode):
        self.model, self.process = model, cfg["process"]
        self.channels, self.null_class = cfg["in_channels"], cfg["num_classes"]
        self.guidance = guidance
        self.mode = guidance_mode or cfg.get("guidance_mode", "all")
        if self.mode not in ("first3", "all"):
            raise ValueError(f"guidance_mode must be 'first3' or 'all', got {self.mode!r}")
        self.sign = velocity_sign(self.process)
        self.evaluations = 0
        self.forward_rows = 0

    def __call__(self, x, s, y, guided):
        b = x.shape[0]
        t = torch.full((b,), float(np.float32(network_time(s, self.process))), dtype=torch.float32)
        self.evaluations += 1
        if not guided:
            self.forward_rows += b
            v = self.model(x, t, y)[:, :self.channels]
        else:
            self.forward_rows += 2 * b
            out = self.model(torch.cat([x, x], 0), torch.cat([t, t], 0),
                             torch.cat([y, torch.full_like(y, self.null_class)], 0))[:, :self.channels]
            vc, vu = out[:b], out[b:]
            g = min(3, self.channels) if self.mode == "first3" else self.channels
            guided_v = vu[:, :g] + _f(self.guidance) * (vc[:, :g] - vu[:, :g])
            v = torch.cat([guided_v, vc[:, g:]], dim=1)
        return v if self.sign > 0 else -v


def data_estimate(x, s_i, d):
    """x̂ = x − s32·D (product, then difference)."""
    return x - _f(s_i) * d


def euler_step(x, d, s_i, s_next):
    """x_next = x + dt32·D with dt = s_next − s_i (float64)."""
    return x + _f(s_next - s_i) * d


def heun_correct(x, d1, d2, s_i, s_next):
    """x_next = x + dt32·((D1 + D2)·0.5): the sum, the halving (exact), the product, the sum."""
    return x + _f(s_next - s_i) * ((d1 + d2) * _f(0.5))


def em_step(x, d, s_i, s_next, z):
    """Euler–Maruyama with w(s) = 2s, score = −(x + (1 − s)·D)/s, drift F = D − ½·w·score = (2 − s)·D + x:
    F = c32·D + x with c = 2 − s_i;  then  x_next = (x + F·dt32) + n32·z  with dt = s_next − s_i and
    n = √(2·s_i)·√|dt| (float64). z None (the last step, to s = 0): x_next = x + F·dt32, the mean only."""
    f = _f(2.0 - s_i) * d + x
    mean = x + f * _f(s_next - s_i)
    if z is None:
        return mean
    return mean + _f(math.sqrt(2.0 * s_i) * math.sqrt(abs(s_next - s_i))) * z


def _log_snr(s):
    """λ = log(α/σ) with α = 1 − s, σ = s, as log(1 − s) − log(s); −inf at s = 1, +inf at s = 0."""
    if s >= 1.0:
        return -math.inf
    if s <= 0.0:
        return math.inf
    return math.log(1.0 - s) - math.log(s)


def dpmpp_2m_coefficients(s_grid, i):
    """(c_x, c_d, k) of DPM-Solver++(2M) from s_i to s_{i+1}, α = 1 − s, σ = s:
    x_next = c_x·x + c_d·(x̂_i + k·(x̂_i − x̂_{i−1})), h = λ_{i+1} − λ_i, c_x = σ_{i+1}/σ_i, c_d = −α_{i+1}·expm1(−h),
    k = h / (2·h_prev) with h_prev = λ_i − λ_{i−1}. Rules:
      * last step (s_{i+1} = 0, σ = 0): x_next = x̂_i: (0, 1, 0);
      * a step from s_i = 1 (α = 0, h = ∞): c_x = σ_{i+1}, c_d = α_{i+1} (x = σ·x + α·x̂), first order;
      * first order (k = 0) also at i = 0 and whenever the previous step had h = ∞ (it started at s = 1)."""
    s, s_next = s_grid[i], s_grid[i + 1]
    if s_next <= 0.0:
        return 0.0, 1.0, 0.0
    if s >= 1.0:
        return s_next, 1.0 - s_next, 0.0
    h = _log_snr(s_next) - _log_snr(s)
    c_x = s_next / s
    c_d = -(1.0 - s_next) * math.expm1(-h)
    k = 0.0
    if i > 0 and s_grid[i - 1] < 1.0:
        k = h / (2.0 * (_log_snr(s) - _log_snr(s_grid[i - 1])))
    return c_x, c_d, k


def dpmpp_2m_step(x, x0, prev_x0, s_grid, i):
    """x_next from the data estimate x0 = x̂_i: with (c_x, c_d, k) of dpmpp_2m_coefficients,
    k = 0: x_next = c_x32·x + c_d32·x̂ (two products, one sum); the last step returns x̂ itself;
    k ≠ 0: D̃ = x̂ + k32·(x̂ − x̂_prev) (difference, product, sum), x_next = c_x32·x + c_d32·D̃."""
    c_x, c_d, k = dpmpp_2m_coefficients(s_grid, i)
    if s_grid[i + 1] <= 0.0:
        return x0.clone()
    d = x0
    if k != 0.0:
        d = x0 + _f(k) * (x0 - prev_x0)
    return _f(c_x) * x + _f(c_d) * d


@torch.no_grad()
def sample_flow(model, cfg, x_init, y, steps, sampler="euler", guidance=None, guidance_mode=None, interval=None,
                shift=1.0, noises=None, generator=None, trace=None, stats=None):
    """Samples from x_init (the noise at s = 1) to s = 0 and returns the final x.

    model(x, t, y): the network (t float32 [B], the family's τ); cfg: the model's config.json dict (process,
    in_channels, num_classes, guidance_mode). guidance: scale g (None or 1: unguided); guidance_mode overrides the
    config's. interval: [lo, hi] in τ (None: every step, when guided). shift: timestep shift. noises: the
    Euler–Maruyama noise, [N, B, C, H, W] (noises[i] used at step i for i = 0..N − 2; noises[N − 1] unused);
    None draws it from generator at each step in sampling order. trace: a list that receives per step i
    (s_i, x before the step, x̂ from the step's first evaluation, guided). stats: a dict that receives
    evaluations and forward_rows.

    Per step i (s_i → s_{i+1}, guided decided by step_is_guided at s_i):
      euler:  D = D(x, s_i); x ← euler_step                                       1 evaluation
      heun:   D1 = D(x, s_i); x̃ = euler_step; i < N − 1: D2 = D(x̃, s_{i+1}), x ← heun_correct; else x ← x̃
                                                                                  2 (1 at the last step)
      euler_maruyama: D = D(x, s_i); x ← em_step with z_i (i < N − 1) or the mean (i = N − 1)   1
      dpmpp_2m: D = D(x, s_i); x̂ = data_estimate; x ← dpmpp_2m_step(x, x̂, x̂_{i−1})            1
    """
    process = cfg["process"]
    check_process(process)
    if sampler not in FLOW_SAMPLERS:
        raise ValueError(f"unknown flow sampler {sampler!r}; flow models take {', '.join(FLOW_SAMPLERS)}")
    s = grid(steps, sampler, shift)
    deriv = Derivative(model, cfg, guidance, guidance_mode)
    x = x_init.clone()
    prev_x0 = None
    for i in range(steps):
        guided = step_is_guided(s[i], process, guidance, interval)
        d = deriv(x, s[i], y, guided)
        x0 = data_estimate(x, s[i], d)
        if sampler == "euler":
            x_next = euler_step(x, d, s[i], s[i + 1])
        elif sampler == "heun":
            x_next = euler_step(x, d, s[i], s[i + 1])
            if i < steps - 1:
                d2 = deriv(x_next, s[i + 1], y, guided)
                x_next = heun_correct(x, d, d2, s[i], s[i + 1])
        elif sampler == "euler_maruyama":
            z = None
            if i < steps - 1:
                z = noises[i] if noises is not None else torch.randn(x.shape, generator=generator)
            x_next = em_step(x, d, s[i], s[i + 1], z)
        else:
            x_next = dpmpp_2m_step(x, x0, prev_x0, s, i)
            prev_x0 = x0
        if trace is not None:
            trace.append((s[i], x.clone(), x0.clone(), guided))
        x = x_next
    if stats is not None:
        stats["evaluations"] = deriv.evaluations
        stats["forward_rows"] = deriv.forward_rows
    return x
