"""Gaussian noise schedules: how much noise the forward chain adds at each step.

A schedule is the list of variances β_t of the Gaussian noise added at step t of the
forward chain. Everything a learner looks at follows from it:

==========================  =============================  ==================================
symbol                      attribute                      meaning
==========================  =============================  ==================================
T                           ``num_train_timesteps``        length of the chain
β_t                         ``betas``                      noise variance added at step t
α_t = 1 − β_t               ``alphas``                     signal variance kept by one step
ᾱ_t = ∏_{s≤t} α_s           ``alphas_cumprod``             signal's share of the variance of x_t
√ᾱ_t                        ``sqrt_alphas_cumprod``        signal scale: weight of x_0 in x_t
√(1 − ᾱ_t)                  ``sqrt_one_minus_alphas_cumprod``  weight of ε in x_t
SNR_t = ᾱ_t / (1 − ᾱ_t)     ``snr``                        signal-to-noise ratio
log SNR_t                   ``log_snr``                    natural log of SNR_t
σ_t = √((1 − ᾱ_t) / ᾱ_t)    ``sigmas``                     k-diffusion's (Karras et al.) σ
==========================  =============================  ==================================

Timesteps are 0-based as in diffusers: ``t`` runs over ``0 … T−1`` and
``alphas_cumprod[t]`` is the signal left after ``t + 1`` steps of noise (Ho et al. count
the same steps ``1 … T``).

Sources: DDPM linear (Ho, Jain & Abbeel 2020, §4); Stable Diffusion's ``scaled_linear``
(CompVis ``ldm``, diffusers ``beta_schedule="scaled_linear"``); cosine (Nichol & Dhariwal
2021, eq. 17, β clipped at 0.999; diffusers ``squaredcos_cap_v2``); Laplace (Hang et
al. 2024, as diffusers ``laplace`` computes it, which is not the paper's curve: see
:func:`laplace_betas`); sigmoid (GeoDiff, Xu et al. 2022, as diffusers ``beta_schedule="sigmoid"``
implements it); Karras σ (Karras et al. 2022, eq. 5,
ρ = 7).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .errors import InputError
from .i18n import gettext as _

__all__ = [
    "SCHEDULE_NAMES",
    "NoiseSchedule",
    "cosine_betas",
    "from_diffusers",
    "get_schedule",
    "karras_schedule",
    "karras_sigmas",
    "laplace_betas",
    "linear_betas",
    "scaled_linear_betas",
    "schedules_frame",
    "sigmoid_betas",
]


def _check_T(num_train_timesteps: int) -> int:
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, (int, np.integer)):
        raise InputError(_("num_train_timesteps must be a whole number ≥ 2, got {T!r}").format(T=num_train_timesteps))
    if num_train_timesteps < 2:
        raise InputError(_("num_train_timesteps must be ≥ 2, got {T}").format(T=num_train_timesteps))
    return int(num_train_timesteps)


def _check_beta_range(beta_start: float, beta_end: float) -> None:
    for name, v in (("beta_start", beta_start), ("beta_end", beta_end)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 < v < 1.0):
            raise InputError(_("{name} must be a number in (0, 1), got {v!r}").format(name=name, v=v))
    if beta_start > beta_end:
        raise InputError(
            _("beta_start must not exceed beta_end, got {beta_start} > {beta_end}; swap them").format(
                beta_start=beta_start, beta_end=beta_end
            )
        )


def linear_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """DDPM's linear schedule: β rises linearly from 1e-4 to 0.02 (Ho et al. 2020, §4)."""
    T = _check_T(num_train_timesteps)
    _check_beta_range(beta_start, beta_end)
    return np.linspace(beta_start, beta_end, T, dtype=np.float64)


def scaled_linear_betas(
    num_train_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> np.ndarray:
    """Stable Diffusion's schedule: √β rises linearly, from √0.00085 to √0.012."""
    T = _check_T(num_train_timesteps)
    _check_beta_range(beta_start, beta_end)
    return np.linspace(beta_start**0.5, beta_end**0.5, T, dtype=np.float64) ** 2


def cosine_betas(num_train_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """Cosine schedule (Nichol & Dhariwal 2021, eq. 17): ᾱ(t) = f(t)/f(0), f(t) = cos²((t/T + s)/(1 + s) · π/2).

    β_t = 1 − ᾱ(t+1)/ᾱ(t) (the /f(0) cancels in the ratio), clipped at *max_beta* to avoid a
    singularity at t = T.
    """
    T = _check_T(num_train_timesteps)
    if not (0.0 <= s < 1.0):
        raise InputError(_("s must be in [0, 1), got {s!r}").format(s=s))
    if not (0.0 < max_beta <= 1.0):
        raise InputError(_("max_beta must be in (0, 1], got {max_beta!r}").format(max_beta=max_beta))

    def alpha_bar(u: np.ndarray) -> np.ndarray:
        return np.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    i = np.arange(T, dtype=np.float64)
    betas = 1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T)
    return np.minimum(betas, max_beta)


def laplace_betas(num_train_timesteps: int = 1000, max_beta: float = 0.999) -> np.ndarray:
    """Laplace schedule (Hang et al. 2024, "Improved Noise Schedule for Diffusion Training").

    log-SNR follows a Laplace quantile, λ(u) = −½·sign(½ − u)·log(1 − 2|½ − u|), and, exactly
    as diffusers' ``beta_schedule="laplace"`` does, ᾱ(u) = √(SNR / (1 + SNR)). That square root
    makes it a different curve from the paper's, whose ᾱ = SNR/(1 + SNR) gives log-SNR 0 at u = ½:
    here log-SNR(½) = 0.88 and log-SNR runs from 3.8 to −3.4 (ᾱ_T ≈ 0.03, so the last step
    still holds some signal).
    """
    T = _check_T(num_train_timesteps)

    def alpha_bar(u: np.ndarray) -> np.ndarray:
        lmb = -0.5 * np.copysign(1.0, 0.5 - u) * np.log(1 - 2 * np.abs(0.5 - u) + 1e-6)
        snr = np.exp(lmb)
        return np.sqrt(snr / (1 + snr))

    i = np.arange(T, dtype=np.float64)
    return np.minimum(1.0 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta)


def sigmoid_betas(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> np.ndarray:
    """Sigmoid schedule (GeoDiff, Xu et al. 2022), as diffusers implements it: β = β_start + (β_end − β_start)·sigmoid(linspace(−6, 6, T))."""
    T = _check_T(num_train_timesteps)
    _check_beta_range(beta_start, beta_end)
    x = np.linspace(-6.0, 6.0, T, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-x)) * (beta_end - beta_start) + beta_start


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. 2022, eq. 5: *n* σ's from σ_max down to σ_min, spaced uniformly in σ^(1/ρ)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise InputError(_("n must be a whole number ≥ 2, got {n!r}").format(n=n))
    if not (0.0 < sigma_min < sigma_max):
        raise InputError(
            _("need 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}").format(
                sigma_min=sigma_min, sigma_max=sigma_max
            )
        )
    if rho <= 0:
        raise InputError(_("rho must be > 0, got {rho!r}").format(rho=rho))
    ramp = np.linspace(0.0, 1.0, int(n), dtype=np.float64)
    min_inv, max_inv = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    return (max_inv + ramp * (min_inv - max_inv)) ** rho


@dataclass(frozen=True)
class NoiseSchedule:
    """A noise schedule and every array derived from it (all ``float64``, read-only, length T).

    Build one with :func:`get_schedule`, :func:`from_diffusers` or :meth:`from_betas`.
    """

    name: str
    betas: np.ndarray
    alphas: np.ndarray = field(repr=False)
    alphas_cumprod: np.ndarray = field(repr=False)
    sqrt_alphas_cumprod: np.ndarray = field(repr=False)
    sqrt_one_minus_alphas_cumprod: np.ndarray = field(repr=False)
    snr: np.ndarray = field(repr=False)
    log_snr: np.ndarray = field(repr=False)
    sigmas: np.ndarray = field(repr=False)

    @classmethod
    def from_betas(cls, betas: Iterable[float], name: str = "custom") -> NoiseSchedule:
        """Derive α, ᾱ, SNR and σ from the per-step variances β_t."""
        b = np.array(betas, dtype=np.float64).reshape(-1)
        if b.size < 2:
            raise InputError(_("a schedule needs at least 2 betas, got {size}").format(size=b.size))
        if not np.all(np.isfinite(b)):
            raise InputError(_("betas must be finite; found NaN or inf"))
        if np.any(b <= 0) or np.any(b > 1):
            raise InputError(
                _("every beta must be in (0, 1], got min {lo:g} and max {hi:g}").format(lo=b.min(), hi=b.max())
            )
        return cls._from_alphas_cumprod(np.cumprod(1.0 - b), name=name, betas=b)

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: Iterable[float], name: str = "custom") -> NoiseSchedule:
        """Derive β_t back from ᾱ_t (β_t = 1 − ᾱ_t / ᾱ_{t−1}, with ᾱ_{−1} = 1)."""
        ab = np.array(alphas_cumprod, dtype=np.float64).reshape(-1)
        if ab.size < 2 or not np.all(np.isfinite(ab)):
            raise InputError(_("alphas_cumprod must hold at least 2 finite values"))
        if np.any(ab <= 0) or np.any(ab > 1) or np.any(np.diff(ab) > 0):
            raise InputError(_("alphas_cumprod must lie in (0, 1] and never increase"))
        prev = np.concatenate([[1.0], ab[:-1]])
        return cls._from_alphas_cumprod(ab, name=name, betas=1.0 - ab / prev)

    @classmethod
    def _from_alphas_cumprod(cls, ab: np.ndarray, *, name: str, betas: np.ndarray) -> NoiseSchedule:
        one_minus = 1.0 - ab
        with np.errstate(divide="ignore"):
            snr = ab / one_minus
            log_snr = np.log(ab) - np.log(one_minus)
        arrays = dict(
            betas=betas,
            alphas=1.0 - betas,
            alphas_cumprod=ab,
            sqrt_alphas_cumprod=np.sqrt(ab),
            sqrt_one_minus_alphas_cumprod=np.sqrt(one_minus),
            snr=snr,
            log_snr=log_snr,
            sigmas=np.sqrt(one_minus / ab),
        )
        for a in arrays.values():
            a.setflags(write=False)
        return cls(name=name, **arrays)

    @property
    def num_train_timesteps(self) -> int:
        """T, the length of the forward chain."""
        return int(self.betas.shape[0])

    def check_timestep(self, t: Any) -> np.ndarray:
        """Validate integer timestep(s) in ``[0, T)``; returns them as an int64 array."""
        T = self.num_train_timesteps
        arr = np.asarray(t.detach().cpu() if hasattr(t, "detach") else t)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise InputError(_("t must be whole numbers in [0, {T}), got {t!r}").format(T=T, t=t))
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise InputError(_("t must be whole numbers in [0, {T}), got {t!r}").format(T=T, t=t))
        if arr.size and (arr.min() < 0 or arr.max() >= T):
            raise InputError(
                _(
                    "t must be in [0, {T}) for this {T}-step schedule, got {t!r}; "
                    "use 0 for one step of noise and {last} for the last"
                ).format(T=T, t=t, last=T - 1)
            )
        return arr.astype(np.int64)

    def to_frame(self) -> pd.DataFrame:
        """One row per timestep: ``schedule, t, beta, alpha, alpha_bar, …, sigma``."""
        return pd.DataFrame(
            {
                "schedule": self.name,
                "t": np.arange(self.num_train_timesteps),
                "beta": self.betas,
                "alpha": self.alphas,
                "alpha_bar": self.alphas_cumprod,
                "sqrt_alpha_bar": self.sqrt_alphas_cumprod,
                "sqrt_one_minus_alpha_bar": self.sqrt_one_minus_alphas_cumprod,
                "snr": self.snr,
                "log_snr": self.log_snr,
                "sigma": self.sigmas,
            }
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoiseSchedule):
            return NotImplemented
        return self.name == other.name and np.array_equal(self.betas, other.betas)

    def __hash__(self) -> int:
        return hash((self.name, self.betas.tobytes()))


def karras_schedule(
    num_train_timesteps: int = 1000,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    rho: float = 7.0,
) -> NoiseSchedule:
    """A T-step schedule whose σ_t follow Karras et al. (2022, eq. 5), ρ = 7.

    σ_min and σ_max default to those of Stable Diffusion's ``scaled_linear`` schedule
    (≈0.0292 and ≈14.61), so the two can be compared on one plot. ᾱ_t = 1 / (1 + σ_t²).
    """
    T = _check_T(num_train_timesteps)
    if sigma_min is None or sigma_max is None:
        sd = NoiseSchedule.from_betas(scaled_linear_betas(T))
        sigma_min = float(sd.sigmas[0]) if sigma_min is None else sigma_min
        sigma_max = float(sd.sigmas[-1]) if sigma_max is None else sigma_max
    sigmas = karras_sigmas(T, sigma_min, sigma_max, rho)[::-1]  # ascending in t
    return NoiseSchedule.from_alphas_cumprod(1.0 / (1.0 + sigmas**2), name="karras")


_BETA_SCHEDULES = {
    "linear": linear_betas,
    "scaled_linear": scaled_linear_betas,
    "cosine": cosine_betas,
    "sigmoid": sigmoid_betas,
    "laplace": laplace_betas,
}
_ALIASES = {"squaredcos_cap_v2": "cosine", "ddpm": "linear", "stable_diffusion": "scaled_linear"}
SCHEDULE_NAMES: tuple[str, ...] = (*_BETA_SCHEDULES, "karras")
"""Names :func:`get_schedule` accepts (plus the diffusers alias ``squaredcos_cap_v2``)."""


def get_schedule(name: str | NoiseSchedule, num_train_timesteps: int = 1000, **kwargs: Any) -> NoiseSchedule:
    """A named schedule: one of :data:`SCHEDULE_NAMES` (a :class:`NoiseSchedule` is returned as it is).

    Keyword arguments go to the schedule's function (``beta_start``/``beta_end``, ``s``,
    ``sigma_min``/``sigma_max``/``rho``).

    >>> get_schedule("linear").alphas_cumprod[-1] < 1e-4
    True
    """
    if isinstance(name, NoiseSchedule):
        return name
    if not isinstance(name, str):
        raise InputError(
            _("schedule name must be a string, one of {names}; got {name!r}").format(
                names=list(SCHEDULE_NAMES), name=name
            )
        )
    key = _ALIASES.get(name, name)
    if key == "karras":
        return karras_schedule(num_train_timesteps, **kwargs)
    if key not in _BETA_SCHEDULES:
        raise InputError(
            _(
                "unknown schedule {name!r}; choose one of {names} "
                "(or build one with from_diffusers(scheduler) or NoiseSchedule.from_betas(betas))"
            ).format(name=name, names=list(SCHEDULE_NAMES))
        )
    try:
        betas = _BETA_SCHEDULES[key](num_train_timesteps, **kwargs)
    except TypeError as e:
        raise InputError(_("bad argument for schedule {name!r}: {error}").format(name=name, error=e)) from None
    return NoiseSchedule.from_betas(betas, name=key)


def from_diffusers(scheduler_or_config: Any, name: str | None = None) -> NoiseSchedule:
    """The schedule of any diffusers scheduler, or of its config (a dict or ``FrozenDict``).

    Uses the scheduler's own ``alphas_cumprod`` (so ``trained_betas``,
    ``rescale_betas_zero_snr`` and every ``beta_schedule`` diffusers knows are honoured).
    A config is instantiated with its ``_class_name`` (``DDPMScheduler`` when absent).
    """
    import diffusers

    sched = scheduler_or_config
    if isinstance(sched, Mapping):
        cls_name = sched.get("_class_name", "DDPMScheduler")
        cls = getattr(diffusers, cls_name, None)
        if cls is None:
            raise InputError(_("unknown diffusers scheduler class {cls_name!r} in config").format(cls_name=cls_name))
        sched = cls.from_config(dict(sched))
    ab = getattr(sched, "alphas_cumprod", None)
    if ab is None:
        raise InputError(
            _(
                "{kind} has no alphas_cumprod (flow-matching schedulers have no "
                "Gaussian β schedule); pass a DDPM-family scheduler such as DDIMScheduler"
            ).format(kind=type(sched).__name__)
        )
    ab = np.asarray(ab.double().cpu() if hasattr(ab, "double") else ab, dtype=np.float64)
    label = name or f"{type(sched).__name__}({sched.config.get('beta_schedule', 'custom')})"
    # zero-terminal-SNR schedules end at ᾱ = 0 exactly (diffusers sets it to 2**-24)
    ab = np.clip(ab, np.finfo(np.float64).tiny, 1.0)
    return NoiseSchedule.from_alphas_cumprod(ab, name=label)


def schedules_frame(schedules: Iterable[NoiseSchedule | str], **kwargs: Any) -> pd.DataFrame:
    """A tidy frame of several schedules: one row per (schedule, t). Strings are looked up."""
    frames = [(get_schedule(s, **kwargs) if isinstance(s, str) else s).to_frame() for s in schedules]
    if not frames:
        raise InputError(_("give at least one schedule, e.g. ['linear', 'cosine']"))
    return pd.concat(frames, ignore_index=True)
