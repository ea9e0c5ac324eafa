"""The two-pixel toy (the seed article's picture), and a drop of paint spreading in water.

An image of two pixels is a point in the plane. The forward chain (:mod:`diffkit.forward`)
moves it step by step to N(0, I); for a few two-pixel "training images" the exact optimal
denoiser E[x_0 | x_t] is known in closed form, and running the reverse chain with it brings the
points back onto the data: what a U-Net is trained to approximate
(:mod:`diffkit.toy_training` trains a small one). A two-pixel image's values are 0–255; the
model's units are [−1, 1] (:func:`pixels_to_model`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .checks import check_seed
from .errors import InputError
from .forward import markov_trajectory
from .i18n import gettext as _
from .schedules import NoiseSchedule, get_schedule

__all__ = [
    "TWO_PIXEL_IMAGE",
    "TwoPixelChains",
    "landing_share",
    "optimal_denoiser",
    "paint_drop",
    "pixels_to_model",
    "step_density",
    "two_pixel_chains",
    "two_pixel_reverse",
]

TWO_PIXEL_IMAGE: tuple[int, int] = (170, 150)
"""The seed article's image: two grey pixels with values 170 and 150 (0–255)."""


def pixels_to_model(pixels: Any) -> torch.Tensor:
    """Two-pixel images ``(..., 2)`` in 0–255 as float64 model values in [−1, 1] (the toy's units)."""
    p = torch.as_tensor(np.asarray(pixels, dtype=np.float64))
    if p.shape[-1:] != (2,):
        raise InputError(
            _("a two-pixel image has 2 values, got shape {shape}; fix: pass e.g. (170, 150)").format(
                shape=tuple(p.shape)
            )
        )
    if not torch.isfinite(p).all() or p.min() < 0 or p.max() > 255:
        raise InputError(_("pixel values must lie in [0, 255], got {pixels!r}").format(pixels=pixels))
    return p / 127.5 - 1.0


@dataclass(frozen=True)
class TwoPixelChains:
    """Many forward chains of a two-pixel image, in model units ``[-1, 1]``.

    ``points`` has shape ``(T + 1, n_chains, 2)``; row 0 is the clean image x_0 and row
    ``k + 1`` the state after timestep k (0-based, like every diffusers timestep).
    """

    start: tuple[float, float]
    schedule: NoiseSchedule
    points: np.ndarray

    def at(self, t: int) -> np.ndarray:
        """States after timestep *t* (0-based), shape ``(n_chains, 2)``."""
        return self.points[int(self.schedule.check_timestep(t)) + 1]

    @staticmethod
    def to_pixels(x: np.ndarray) -> np.ndarray:
        """Model units back to 0–255 pixel units (not clipped: noise can leave the range)."""
        return (np.asarray(x) + 1.0) * 127.5


def two_pixel_chains(
    pixels: Sequence[float] = TWO_PIXEL_IMAGE,
    schedule: NoiseSchedule | str = "linear",
    *,
    n_chains: int = 200,
    seed: int = 0,
) -> TwoPixelChains:
    """Run *n_chains* forward chains from the two-pixel image *pixels* (0–255 values).

    The points wander off the image and all end near N(0, I), whatever they started from.
    """
    if isinstance(n_chains, bool) or not isinstance(n_chains, (int, np.integer)) or n_chains < 1:
        raise InputError(_("n_chains must be ≥ 1, got {n_chains!r}").format(n_chains=n_chains))
    s = get_schedule(schedule)
    x0 = pixels_to_model(pixels).reshape(1, 2).expand(n_chains, 2).contiguous()
    traj = markov_trajectory(x0, s, seed=seed)
    pts = torch.cat([x0[None], traj]).numpy()
    return TwoPixelChains(start=tuple(float(p) for p in np.asarray(pixels, float)), schedule=s, points=pts)


def optimal_denoiser(
    x_t: torch.Tensor, t: int, data: torch.Tensor, schedule: NoiseSchedule | str = "linear"
) -> torch.Tensor:
    """E[x_0 | x_t] when the data are exactly the points *data* ``(N, D)`` (the ideal U-Net).

    For an empirical data distribution the posterior over which point was noised is a
    softmax of Gaussian log-likelihoods: w_i ∝ exp(−‖x_t − √ᾱ_t y_i‖² / (2(1 − ᾱ_t))),
    and the optimal x̂_0 = Σ w_i y_i (Karras et al. 2022, App. B.3; Kadkhodaie et al. 2024).
    *x_t* is ``(M, D)``; returns ``(M, D)``.
    """
    s = get_schedule(schedule)
    tt = int(s.check_timestep(t))
    ab = float(s.alphas_cumprod[tt])
    d2 = torch.cdist(x_t.double(), data.double() * ab**0.5) ** 2  # (M, N)
    w = torch.softmax(-d2 / (2 * (1 - ab)), dim=1)
    return (w @ data.double()).to(x_t.dtype)


def two_pixel_reverse(
    data_pixels: Sequence[Sequence[float]],
    schedule: NoiseSchedule | str = "linear",
    *,
    n_chains: int = 200,
    seed: int = 0,
    eta: float = 1.0,
    denoiser: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> np.ndarray:
    """Run the reverse chain with the exact optimal denoiser for the two-pixel images *data_pixels*.

    *denoiser*, when given, replaces the exact one: a function ``(x_t, t) → x̂_0`` on ``(M, 2)``
    points (a trained network, see :meth:`diffkit.toy_training.ToyDenoiser.sample`).

    Starts from N(0, I) and applies DDPM ancestral steps (eta = 1, Ho et al. 2020, eq. 6–7) or
    deterministic DDIM steps (eta = 0, Song et al. 2021, eq. 12) over all T timesteps. Returns
    ``(T + 1, n_chains, 2)`` in model units, from pure noise (row 0) to the end (row T); the
    points flow back onto the data.
    """
    s = get_schedule(schedule)
    data = pixels_to_model(data_pixels).reshape(-1, 2)
    if not 0.0 <= eta <= 1.0:
        raise InputError(_("eta must be in [0, 1] (1 = DDPM, 0 = DDIM), got {eta}").format(eta=eta))
    gen = torch.Generator().manual_seed(check_seed(seed))
    x = torch.randn((n_chains, 2), generator=gen, dtype=torch.float64)
    out = [x.clone()]
    ab = s.alphas_cumprod
    for t in range(s.num_train_timesteps - 1, -1, -1):
        x0_hat = optimal_denoiser(x, t, data, s) if denoiser is None else denoiser(x, t).to(x.dtype)
        ab_t = ab[t]
        ab_prev = ab[t - 1] if t > 0 else 1.0
        eps_hat = (x - ab_t**0.5 * x0_hat) / (1 - ab_t) ** 0.5
        # DDIM (eq. 12) with σ_t = η √((1−ᾱ_{t−1})/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_{t−1}); η = 1 is DDPM
        sigma = eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) ** 0.5
        x = ab_prev**0.5 * x0_hat + max(1 - ab_prev - sigma**2, 0.0) ** 0.5 * eps_hat
        if sigma > 0:
            x = x + sigma * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        out.append(x.clone())
    return torch.stack(out).numpy()


def landing_share(points: np.ndarray, data_pixels: Sequence[Sequence[float]], *, radius_px: float = 5.0) -> float:
    """Share of two-pixel points (model units, ``(N, 2)``) within *radius_px* pixels of a data point."""
    d = pixels_to_model(data_pixels).reshape(-1, 2).numpy()
    dist = np.min(np.linalg.norm(np.asarray(points)[:, None] - d[None], axis=2), axis=1) * 127.5
    return float(np.mean(dist <= radius_px))


def paint_drop(n_particles: int = 2000, steps: int = 400, *, step_size: float = 1.0, seed: int = 0) -> np.ndarray:
    """A drop of paint spreading in water: *n_particles* pigment particles doing a random walk.

    Each step moves every particle by an independent Gaussian kick of standard deviation
    *step_size* per axis (Brownian motion, the physics behind diffusion). After k steps the cloud
    is Gaussian with standard deviation ``step_size · √k``. Returns positions ``(steps + 1, n, 2)``
    starting at the origin.
    """
    if n_particles < 1 or steps < 1:
        raise InputError(
            _("n_particles and steps must be ≥ 1, got {n_particles} and {steps}").format(
                n_particles=n_particles, steps=steps
            )
        )
    rng = np.random.default_rng(check_seed(seed))
    kicks = rng.normal(0.0, step_size, size=(steps, n_particles, 2))
    return np.concatenate([np.zeros((1, n_particles, 2)), np.cumsum(kicks, axis=0)])


def step_density(
    x_prev: np.ndarray | Sequence[float], t: int, schedule: NoiseSchedule | str = "linear"
) -> tuple[np.ndarray, float]:
    """The bell of one Markov step: mean √α_t · x_{t−1} and standard deviation √β_t."""
    s = get_schedule(schedule)
    tt = int(s.check_timestep(t))
    return np.sqrt(s.alphas[tt]) * np.asarray(x_prev, dtype=np.float64), float(np.sqrt(s.betas[tt]))
