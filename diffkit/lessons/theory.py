"""The theory bridge (notebook 03), on the two-pixel toy, all in float64: the chain's moments against the
closed form, the DDPM posterior, and the noised data's density and score."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..schedules import NoiseSchedule, get_schedule

__all__ = ["chain_moments", "posterior_coefficients", "toy_log_density", "toy_posterior", "toy_score"]


def chain_moments(schedule: NoiseSchedule | str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """(mean scale, variance) of x_t given x_0 for every t, by iterating the Markov chain's moments.

    One step x_t = √α_t·x_{t−1} + √β_t·ε_t maps a Gaussian with mean m·x_0 and variance v to
    one with mean √α_t·m·x_0 and variance α_t·v + β_t. Starting from m = 1, v = 0 (x_0 itself),
    this loop never uses the closed form; the closed form says m_t = √ᾱ_t and v_t = 1 − ᾱ_t.
    """
    s = get_schedule(schedule)
    scale = np.empty(s.num_train_timesteps)
    var = np.empty(s.num_train_timesteps)
    m, v = 1.0, 0.0
    for t, (a, b) in enumerate(zip(s.alphas, s.betas)):
        m, v = math.sqrt(a) * m, a * v + b
        scale[t], var[t] = m, v
    return scale, var


def posterior_coefficients(t: int, schedule: NoiseSchedule | str = "linear") -> tuple[float, float, float]:
    """(coefficient of x_0, coefficient of x_t, variance β̃_t) of q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eq. 7).

    μ̃_t = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x_0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t and β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t,
    with ᾱ_{t−1} = 1 at t = 0 (the step before the first is the clean image: μ̃ = x_0, β̃ = 0).
    """
    s = get_schedule(schedule)
    tt = s.check_timestep(t)
    if tt.ndim != 0:
        raise InputError(f"posterior_coefficients takes one timestep, got {t!r}")
    tt = int(tt)
    if tt == 0:  # x_{−1} is x_0 itself: exactly, not by rounding β_0/(1 − ᾱ_0) to 1
        return 1.0, 0.0, 0.0
    ab_t = float(s.alphas_cumprod[tt])
    ab_prev = float(s.alphas_cumprod[tt - 1]) if tt > 0 else 1.0
    beta, alpha = float(s.betas[tt]), float(s.alphas[tt])
    c0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
    ct = math.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)
    return c0, ct, (1 - ab_prev) / (1 - ab_t) * beta


def toy_posterior(x_t: Any, x0: Any, t: int, schedule: NoiseSchedule | str = "linear") -> tuple[torch.Tensor, float]:
    """q(x_{t−1} | x_t, x_0) = N(μ̃, β̃·I): (μ̃ as float64, β̃) for points *x_t* and clean points *x0* (model units)."""
    c0, ct, var = posterior_coefficients(t, schedule)
    x_t = torch.as_tensor(x_t, dtype=torch.float64)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    return c0 * x0 + ct * x_t, var


def _sq_dist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """‖x_m − c_n‖² ``(M, N)``, computed directly (torch.cdist's matrix-product shortcut loses digits)."""
    return (x[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def _mixture(x: Any, t: int, data: Any, schedule: NoiseSchedule | str) -> tuple[torch.Tensor, torch.Tensor, float]:
    s = get_schedule(schedule)
    tt = int(s.check_timestep(t))
    ab = float(s.alphas_cumprod[tt])
    x = torch.as_tensor(x, dtype=torch.float64)
    data = torch.as_tensor(data, dtype=torch.float64).reshape(-1, x.shape[-1])
    return x, data, ab


def toy_log_density(x: Any, t: int, data: Any, schedule: NoiseSchedule | str = "linear") -> torch.Tensor:
    """log p_t(x) when the data are exactly the points *data* ``(N, D)``: a Gaussian mixture.

    q(x_t | x_0 = y_i) = N(√ᾱ_t·y_i, (1 − ᾱ_t)·I), so p_t = (1/N)·Σ_i N(x; √ᾱ_t·y_i, (1 − ᾱ_t)·I).
    *x* is ``(M, D)``; returns ``(M,)`` in float64 (differentiable in *x*).
    """
    x, data, ab = _mixture(x, t, data, schedule)
    var = 1.0 - ab
    d2 = _sq_dist(x, ab**0.5 * data)
    D = x.shape[-1]
    return torch.logsumexp(-d2 / (2 * var), dim=1) - math.log(len(data)) - 0.5 * D * math.log(2 * math.pi * var)


def toy_score(x: Any, t: int, data: Any, schedule: NoiseSchedule | str = "linear") -> torch.Tensor:
    """∇_x log p_t(x) of the mixture of :func:`toy_log_density`, in closed form, float64 ``(M, D)``.

    ∇ log p_t(x) = Σ_i w_i·(√ᾱ_t·y_i − x)/(1 − ᾱ_t), w = softmax_i(−‖x − √ᾱ_t·y_i‖² / (2(1 − ᾱ_t))):
    each component pulls x towards its centre, weighted by how likely it made x. Since
    Σ w_i·y_i = E[x_0 | x_t] (:func:`diffkit.toy.optimal_denoiser`), −√(1 − ᾱ_t)·∇ log p_t is the
    ideal ε̂.
    """
    x, data, ab = _mixture(x, t, data, schedule)
    var = 1.0 - ab
    w = torch.softmax(-_sq_dist(x, ab**0.5 * data) / (2 * var), dim=1)
    return (ab**0.5 * (w @ data) - x) / var
