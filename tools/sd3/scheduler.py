"""Reference FlowMatchEulerDiscreteScheduler (diffusers) sigmas and Euler step, from docs/TEXT_MODELS.md.

scheduler_config.json keys read: num_train_timesteps (1000), shift (3.0 for SD3), use_dynamic_shifting (must be
false: dynamic shifting needs the image size's mu, which SD3's pipeline does not pass), and, when present,
base_shift/max_shift/… (ignored). Arithmetic in float64 and rounded to float32 at the end, as diffusers builds
numpy float32 arrays (its linspace is float64 numpy, then cast; see sigmas()).
"""
import json

import numpy as np
import torch

CLASS_NAME = "FlowMatchEulerDiscreteScheduler"
DIFFUSERS_VERSION = "0.31.0"


def default_config(shift=3.0, num_train_timesteps=1000):
    return {"_class_name": CLASS_NAME, "_diffusers_version": DIFFUSERS_VERSION,
            "num_train_timesteps": num_train_timesteps, "shift": float(shift)}


def read_config(path):
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    if cfg.get("_class_name", CLASS_NAME) != CLASS_NAME:
        raise ValueError(f"{path}: scheduler class {cfg.get('_class_name')!r}, expected {CLASS_NAME}")
    if cfg.get("use_dynamic_shifting"):
        raise ValueError(f"{path}: use_dynamic_shifting is not supported (SD3's pipeline passes no mu)")
    return cfg


def shift_sigma(sigma, shift):
    """σ' = s·σ / (1 + (s − 1)·σ)."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sigmas(num_steps, shift=3.0, num_train_timesteps=1000):
    """The N + 1 sigmas of set_timesteps(N): training sigmas linspace(1, T, T) reversed / T, shifted → σ_max = 1,
    σ_min = shift(1/T); then linspace(σ_max·T, σ_min·T, N)/T shifted AGAIN, and a final 0 appended. The shifts use
    float32 as diffusers' tensors do (its training sigmas are a float32 torch tensor; the linspace is numpy float64
    cast to float32 before the second shift). Returns a float32 numpy array."""
    T = num_train_timesteps
    train = np.linspace(1, T, T, dtype=np.float32)[::-1].copy() / np.float32(T)
    train = torch.from_numpy(train)
    train = shift * train / (1 + (shift - 1) * train)
    sigma_max, sigma_min = float(train[0]), float(train[-1])
    ts = np.linspace(sigma_max * T, sigma_min * T, num_steps)      # float64, as numpy gives
    s = torch.from_numpy((ts / T).astype(np.float32))
    s = shift * s / (1 + (shift - 1) * s)
    return np.concatenate([s.numpy().astype(np.float32), np.zeros(1, np.float32)])


def timesteps(num_steps, shift=3.0, num_train_timesteps=1000):
    """σ·T for the N steps (what the transformer's timestep input receives)."""
    s = sigmas(num_steps, shift, num_train_timesteps)[:-1]
    return (s * np.float32(num_train_timesteps)).astype(np.float32)


def euler_step(sample, model_output, sigma, sigma_next):
    """x ← x + (σ_next − σ)·v in fp32, cast back to the sample's dtype."""
    out = sample.float() + (float(sigma_next) - float(sigma)) * model_output.float()
    return out.to(sample.dtype)
