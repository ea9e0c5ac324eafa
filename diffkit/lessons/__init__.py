"""Helpers for two lessons: writing the sampler yourself (notebook 02) and the theory bridge (notebook 03).

**Write the sampler yourself.** :func:`check_sampler` takes what a student's hand-written DDIM
loop returned (the image, or the final latents) and says whether it equals
``pipe(prompt, ...)`` with diffusers' ``DDIMScheduler`` and the same seed, bit for bit; if not,
how far it is and the most likely cause. The causes are found by running the usual mistakes
(:data:`SAMPLER_MISTAKES`) and seeing which one the student's result matches.

**The theory bridge**, on the two-pixel toy (:mod:`diffkit.toy`), all in float64:

- :func:`chain_moments`: the mean scale and variance of x_t given x_0 obtained by iterating the
  Markov chain's moments one step at a time, to set against the closed form q(x_t | x_0);
- :func:`posterior_coefficients`, :func:`toy_posterior`: the DDPM posterior
  q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020, eq. 6–7);
- :func:`toy_log_density`, :func:`toy_score`: the noised data density p_t (a Gaussian mixture:
  the data are a finite set of points) and its score ∇ log p_t, whose scaled negative
  −√(1 − ᾱ_t) ∇ log p_t is the ideal ε̂ (Song et al. 2021, "score-based"; Vincent 2011).

Timesteps are 0-based as in diffusers: ``alphas_cumprod[t]`` is ᾱ after t + 1 noising steps, and
the step before t = 0 is the clean image itself (ᾱ = 1).
"""

from __future__ import annotations

from .check import SamplerCheck, check_sampler
from .ddim import ddim_by_hand
from .mistakes import SAMPLER_MISTAKES
from .theory import chain_moments, posterior_coefficients, toy_log_density, toy_posterior, toy_score

__all__ = [
    "SAMPLER_MISTAKES",
    "SamplerCheck",
    "chain_moments",
    "check_sampler",
    "ddim_by_hand",
    "posterior_coefficients",
    "toy_log_density",
    "toy_posterior",
    "toy_score",
]
