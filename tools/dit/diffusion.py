"""Diffusion maths of DiT, written from docs/DIT_MODEL.md: linear schedule, respacing, DDPM (learned range and
fixed variance), DDIM with eta, DPM-Solver++(2M) (docs/SAMPLERS.md), classifier-free guidance in both modes.

Coefficients are computed in float64 and cast to float32 before they touch a tensor, as the released code does; the
Java samplers follow the same rule so that trajectories agree step by step.
"""
import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(n=NUM_TRAIN_TIMESTEPS, start=1e-4, end=0.02):
    return np.linspace(start, end, n, dtype=np.float64)


def alphas_cumprod(betas):
    return np.cumprod(1.0 - betas)


def respace(num_steps, num_train=NUM_TRAIN_TIMESTEPS):
    """Kept timesteps (ascending) for sampling with num_steps steps: a float accumulator stepped by
    (num_train − 1)/(num_steps − 1), rounded half to even (Python's round)."""
    if num_steps < 1 or num_steps > num_train:
        raise ValueError(f"steps must be in 1..{num_train}, got {num_steps}")
    if num_steps == 1:
        return [0]
    stride = (num_train - 1) / (num_steps - 1)
    cur, kept = 0.0, []
    for _ in range(num_steps):
        kept.append(round(cur))
        cur += stride
    return kept


class Schedule:
    """A respaced schedule: timesteps[i] is the original t of sampling index i (ascending)."""

    def __init__(self, num_steps, betas=None):
        base = linear_betas() if betas is None else betas
        ac = alphas_cumprod(base)
        self.timesteps = respace(num_steps, len(base))
        new_betas, last = [], 1.0
        for t in self.timesteps:
            new_betas.append(1.0 - ac[t] / last)
            last = ac[t]
        self.betas = np.array(new_betas, dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        a, ap, b = self.alphas_cumprod, self.alphas_cumprod_prev, self.betas
        self.sqrt_recip_ac = np.sqrt(1.0 / a)
        self.sqrt_recipm1_ac = np.sqrt(1.0 / a - 1.0)
        self.post_var = b * (1.0 - ap) / (1.0 - a)
        post_var_clipped = np.append(self.post_var[1], self.post_var[1:]) if len(b) > 1 else self.post_var
        self.post_log_var_clipped = np.log(post_var_clipped) if len(b) > 1 else np.array([np.log(b[0])])
        self.post_coef1 = b * np.sqrt(ap) / (1.0 - a)
        self.post_coef2 = (1.0 - ap) * np.sqrt(1.0 - b) / (1.0 - a)
        self.log_betas = np.log(b)

    def __len__(self):
        return len(self.timesteps)


def _f(v):
    return torch.tensor(float(np.float32(v)), dtype=torch.float32)


class StepCache:
    """Step caching with a fixed interval (docs/STEP_CACHE.md): the sampling step with step number k (0 for the
    first step taken) runs the cached span (blocks 1..depth−1) and stores its residual when k % interval == 0 or it
    is the last step; every other step reuses the stored residual. One residual per row of the forward batch (the
    twin rows of guidance have their own). Counts block evaluations per row in `block_evals`."""

    def __init__(self, interval, steps, depth):
        if interval < 1:
            raise ValueError("interval must be ≥ 1")
        self.interval, self.steps, self.depth = interval, steps, depth
        self.residual = None
        self.block_evals = 0

    def runs_span(self, k):
        return k % self.interval == 0 or k == self.steps - 1

    def __call__(self, model, k, x, t, y):
        if self.residual is None:
            d = model.hidden_size if hasattr(model, "hidden_size") else model.cfg["hidden_size"]
            tokens = (x.shape[-1] // model.patch_size) ** 2
            self.residual = torch.zeros((x.shape[0], tokens, d), device=x.device)
        n = x.shape[0]
        run = torch.arange(n, device=x.device) if self.runs_span(k) else torch.zeros(0, dtype=torch.long,
                                                                                     device=x.device)
        out, self.residual = model.forward_cached(x, t, y, self.residual, run)
        self.block_evals += self.depth if self.runs_span(k) else 1
        return out


def guided_model_output(model, x, i, sched, y, null_class, guidance, guidance_mode, in_channels, forward=None):
    """One model evaluation at sampling index i for a batch x [B, C, H, W] with labels y [B].
    guidance <= 1 or None → plain conditional evaluation. Otherwise the batch is doubled [y ; null] in one forward
    pass and eps is guided: mode 'first3' guides the first three channels (released behaviour, channels ≥ 3 come
    from the conditional half), mode 'all' guides all in_channels eps channels. forward(x, t, y): the model call
    (default: model itself; the sampler passes a StepCache-bound one)."""
    forward = forward or model
    t = torch.full((x.shape[0],), sched.timesteps[i], dtype=torch.long, device=x.device)
    if guidance is None or guidance == 1.0:
        return forward(x, t, y)
    xx = torch.cat([x, x], 0)
    tt = torch.cat([t, t], 0)
    yy = torch.cat([y, torch.full_like(y, null_class)], 0)
    out = forward(xx, tt, yy)
    cond, uncond = out[: x.shape[0]], out[x.shape[0]:]
    g = min(3, in_channels) if guidance_mode == "first3" else in_channels
    guided_eps = uncond[:, :g] + guidance * (cond[:, :g] - uncond[:, :g])
    return torch.cat([guided_eps, cond[:, g:]], dim=1)


def split_output(out, in_channels, learn_sigma):
    eps = out[:, :in_channels]
    v = out[:, in_channels:] if learn_sigma else None
    return eps, v


def predict_x0(x, eps, sched, i):
    return _f(sched.sqrt_recip_ac[i]) * x - _f(sched.sqrt_recipm1_ac[i]) * eps


def ddpm_step(x, eps, v, sched, i, noise):
    """One DDPM step from index i to i-1. v is the learned-range output in [−1, 1] (None → fixed small variance)."""
    x0 = predict_x0(x, eps, sched, i)
    mean = _f(sched.post_coef1[i]) * x0 + _f(sched.post_coef2[i]) * x
    if v is not None:
        min_log = _f(sched.post_log_var_clipped[i])
        max_log = _f(sched.log_betas[i])
        frac = (v + 1) / 2
        log_var = frac * max_log + (1 - frac) * min_log
    else:
        log_var = _f(sched.post_log_var_clipped[i]) * torch.ones_like(x)
    if i > 0:
        x_prev = mean + torch.exp(0.5 * log_var) * noise
    else:
        x_prev = mean
    return x_prev, x0


def ddim_step(x, eps, sched, i, eta, noise):
    x0 = predict_x0(x, eps, sched, i)
    eps2 = (_f(sched.sqrt_recip_ac[i]) * x - x0) / _f(sched.sqrt_recipm1_ac[i])
    a, ap = sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]
    sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
    x_prev = x0 * _f(np.sqrt(ap)) + _f(np.sqrt(1 - ap - sigma ** 2)) * eps2
    if i > 0 and eta > 0:
        x_prev = x_prev + _f(sigma) * noise
    return x_prev, x0


def _log_snr_half(ac):
    """λ = log(α/σ) = ½·log(ᾱ/(1 − ᾱ)); +inf at ᾱ = 1 (σ = 0)."""
    return np.inf if ac >= 1.0 else 0.5 * (np.log(ac) - np.log1p(-ac))


def dpmpp_2m_coefficients(sched, i):
    """Coefficients of the DPM-Solver++(2M) step from sampling index i (ᾱ_s = ᾱ[i]) to i − 1 (ᾱ_t = ᾱ_prev[i],
    1 at i = 0): (c_x, c_d, k) with x_next = c_x·x + c_d·(D_i + k·(D_i − D_prev)). k = 0 means first order
    (the first step, i = N − 1, and the final step to σ = 0, i = 0, where c_x = 0 and c_d = 1)."""
    a_s, a_t = sched.alphas_cumprod[i], sched.alphas_cumprod_prev[i]
    if i == 0:
        return 0.0, 1.0, 0.0
    sig_s, sig_t, al_t = np.sqrt(1.0 - a_s), np.sqrt(1.0 - a_t), np.sqrt(a_t)
    h = _log_snr_half(a_t) - _log_snr_half(a_s)
    c_x = sig_t / sig_s
    c_d = -al_t * np.expm1(-h)
    k = 0.0
    if i < len(sched) - 1:
        h0 = _log_snr_half(a_s) - _log_snr_half(sched.alphas_cumprod[i + 1])
        k = h / (2.0 * h0)  # 1 / (2r), r = h0 / h
    return c_x, c_d, k


def dpmpp_2m_step(x, eps, sched, i, prev_x0):
    """One DPM-Solver++(2M) step from sampling index i to i − 1. prev_x0 is the data prediction of the previous
    step (index i + 1), None at the first step. Returns (x_next, x0) with x0 = D_i, the data prediction."""
    x0 = predict_x0(x, eps, sched, i)
    c_x, c_d, k = dpmpp_2m_coefficients(sched, i)
    if i == 0:
        return x0.clone(), x0
    d = x0
    if k != 0.0:
        if prev_x0 is None:
            raise ValueError("DPM-Solver++(2M) second-order step without the previous data prediction")
        d = x0 + _f(k) * (x0 - prev_x0)
    return _f(c_x) * x + _f(c_d) * d, x0


@torch.no_grad()
def sample(model, x_T, y, steps, sampler="ddim", eta=0.0, guidance=None, guidance_mode="all", noises=None,
           generator=None, trace=None, cache=None):
    """Runs the sampler from x_T. noises: optional list of per-step noise tensors indexed by sampling index i
    (used when i > 0). trace: optional list that receives (i, t, x_before, x0_estimate) per step. cache: a
    StepCache for this run (None: every step runs every block)."""
    cfg = model.config() if hasattr(model, "config") else model.cfg
    in_ch, learn_sigma, null_class = cfg["in_channels"], cfg["learn_sigma"], cfg["num_classes"]
    sched = Schedule(steps)
    x = x_T.clone()
    prev_x0 = None
    for i in reversed(range(len(sched))):
        k = len(sched) - 1 - i
        forward = None if cache is None else (lambda xx, tt, yy, k=k: cache(model, k, xx, tt, yy))
        out = guided_model_output(model, x, i, sched, y, null_class, guidance, guidance_mode, in_ch, forward)
        eps, v = split_output(out, in_ch, learn_sigma)
        if noises is not None:
            z = noises[i]
        else:
            z = torch.randn(x.shape, generator=generator, device=x.device)
        if sampler == "ddpm":
            x_next, x0 = ddpm_step(x, eps, v, sched, i, z)
        elif sampler == "ddim":
            x_next, x0 = ddim_step(x, eps, sched, i, eta, z)
        elif sampler == "dpmpp_2m":
            x_next, x0 = dpmpp_2m_step(x, eps, sched, i, prev_x0)
            prev_x0 = x0
        else:
            raise ValueError(f"unknown sampler {sampler}")
        if trace is not None:
            trace.append((i, sched.timesteps[i], x.clone(), x0.clone()))
        x = x_next
    return x


_AC_CACHE = {}


def _training_ac(device):
    if device not in _AC_CACHE:
        _AC_CACHE[device] = torch.tensor(alphas_cumprod(linear_betas()), dtype=torch.float32, device=device)
    return _AC_CACHE[device]


def training_loss(model, x0, y, generator=None):
    """Simple eps-MSE loss at a uniformly drawn timestep (the variance channels, if any, are not trained here:
    models trained by this project use fixed variance)."""
    n = x0.shape[0]
    ac = _training_ac(x0.device)
    t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (n,), device=x0.device)
    noise = torch.randn_like(x0)
    a = ac[t].view(n, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    out = model(xt, t, y, train=True)
    eps = out[:, : x0.shape[1]]
    return ((eps - noise) ** 2).mean()
