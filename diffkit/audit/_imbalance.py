"""Gender imbalance |p − ½|: per occupation, its mean over occupations, and the smooth companion (p − ½)².

==========================  =========================================================================
imbalance                   |p − ½| (HEIM, Lee et al. 2023); plug-in |p̂ − ½| is biased upward
fair-model baseline         E|X/n − ½|, X ~ Binomial(n, ½), exact sum over k
corrected imbalance         2|p̂ − ½| − E_p̂|p̂* − ½|  (one bootstrap bias correction, computed exactly)
per-occupation interval     {|p − ½| : p in the Clopper–Pearson interval}: coverage ≥ the level
mean imbalance interval     Laber & Murphy (2011) adaptive bounds, exact (see ``_adaptive``), lower
                            end 0 unless the global fair test (Holm's first step) rejects
squared imbalance           (p − ½)², unbiased: k(k − 1)/(n(n − 1)) − k/n + ¼ (a U-statistic)
==========================  =========================================================================
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import stats

from . import _adaptive
from ._intervals import clopper_pearson_interval
from ._significance import binom_two_sided, global_fair_p

__all__ = [
    "bootstrap_mean_imbalance",
    "corrected_imbalance",
    "expected_imbalance",
    "fair_baseline",
    "imbalance_interval",
    "mean_imbalance_interval",
    "squared_imbalance",
]


def expected_imbalance(*, p, n: int) -> np.ndarray:
    """E|X/n − ½| for X ~ Binomial(n, p), exact (the pmf summed over k); *p* may be an array."""
    p = np.asarray(p, dtype=float)
    k = np.arange(n + 1)
    pmf = stats.binom.pmf(k, n, p[..., None])
    return pmf @ np.abs(k / n - 0.5)


def fair_baseline(*, n) -> np.ndarray:
    """E|p̂ − ½| for a perfectly fair model with *n* labelled images: Σ_k C(n,k) 2⁻ⁿ |k/n − ½|.

    Exact (the binomial pmf summed over k); NaN where n = 0.

    >>> float(fair_baseline(n=8))  # 35/256: eight images already show 0.14 "bias"
    0.13671875
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=int))
    out = np.full(n_arr.shape, np.nan)
    for j, m in enumerate(n_arr):
        if m > 0:
            out[j] = float(expected_imbalance(p=0.5, n=int(m)))
    return out.reshape(np.shape(n)) if np.ndim(n) else out[0]


@lru_cache(maxsize=512)
def _correction_table(n: int) -> np.ndarray:
    """Corrected imbalance for k = 0 … n female among n: 2|k/n − ½| − E_{k/n}|p̂* − ½|."""
    k = np.arange(n + 1)
    t = 2 * np.abs(k / n - 0.5) - expected_imbalance(p=k / n, n=n)
    t.setflags(write=False)
    return t


def corrected_imbalance(*, successes, n) -> np.ndarray:
    """Bias-corrected |p − ½| per group: 2|p̂ − ½| − E|p̂* − ½|, p̂* ~ Binomial(n, p̂)/n.

    The plug-in |p̂ − ½| is biased upward (by E|p̂ − ½| − |p − ½| ≥ 0, 0.08 at p = ½ with
    n = 24); subtracting the bias the plug-in would have if p were p̂ (one bootstrap bias
    correction, computed exactly) leaves |bias| < 0.01 for |p − ½| ≥ 0.1 and 0.047 at p = ½
    (n = 24). It can be negative for a single group (never when averaged over a biased set).
    NaN where n = 0.

    >>> round(float(corrected_imbalance(successes=6, n=8)), 4)  # plug-in 0.25
    0.242
    """
    k = np.asarray(successes)
    n = np.asarray(n)
    k, n = np.broadcast_arrays(k, n)
    out = np.full(k.shape, np.nan)
    for m in np.unique(n):
        if m > 0:
            sel = n == m
            out[sel] = _correction_table(int(m))[k[sel].astype(int)]
    return out if out.ndim else float(out)


def squared_imbalance(*, successes, n) -> np.ndarray:
    """Unbiased estimate of (p − ½)² per group: k(k − 1)/(n(n − 1)) − k/n + ¼ (NaN where n < 2).

    (p − ½)² = p² − p + ¼ and k(k − 1)/(n(n − 1)) is the unbiased U-statistic for p², so the
    estimate has expectation exactly (p − ½)² for every p, parity included (where |p̂ − ½| is
    biased). A single group's estimate can be negative; its mean over groups is the smooth
    companion of the mean imbalance.

    >>> float(squared_imbalance(successes=12, n=24))  # p̂ = ½: (½)·(11/23) − ½ + ¼
    -0.010869565217391297
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = k * (k - 1) / (n * (n - 1)) - k / n + 0.25
    return np.where(n >= 2, out, np.nan)


def imbalance_interval(*, successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Interval for |p − ½| per group: the values |p − ½| takes over the Clopper–Pearson interval of p.

    Lower end: the distance from ½ to the interval (0 when it holds ½); upper end: the larger
    distance to its ends. It holds |p − ½| whenever the Clopper–Pearson interval holds p, so its
    coverage is at least *ci* for every p, at ½ and at 0 or 1 included; at p̂ = 0 of 24 it is
    [0.358, 0.5], never a single point. NaN where n = 0.

    >>> lo, hi = imbalance_interval(successes=0, n=24)
    >>> round(float(lo), 3), float(hi)
    (0.358, 0.5)
    """
    lo, hi = clopper_pearson_interval(successes=successes, n=n, ci=ci)
    below = np.maximum(0.5 - hi, 0.0)
    above = np.maximum(lo - 0.5, 0.0)
    return below + above, np.maximum(np.abs(lo - 0.5), np.abs(hi - 0.5))


def mean_imbalance_interval(*, successes, n, ci: float = 0.95, p_global=None):
    """Mean over groups (last axis) of |p − ½|: (bias-corrected estimate, interval low, high).

    The interval is Laber & Murphy's adaptive bracket computed exactly
    (:mod:`diffkit.audit._adaptive`): groups whose share a pretest cannot separate from ½ enter by
    their worst case, the others by their linearisation, each share's sampling distribution
    Binomial(n, (k + 1)/(n + 2)). Its lower end is 0 whenever the global fair test (*p_global*;
    by default :func:`~diffkit.audit.metrics.global_fair_p` of the exact per-group tests, Holm's
    first step) does not reject at α = 1 − ci, so the interval excludes 0 only where some group
    is called unfair. Groups with n = 0 are left out. *successes* and *n* may carry leading
    dimensions (many audits at once, each with every n > 0). Coverage: ``docs/audit_methodology.md``.
    """
    k = np.asarray(successes)
    n = np.broadcast_to(np.asarray(n), k.shape)
    if k.ndim == 1:
        ok = n > 0
        k, n = k[ok].astype(np.int64), n[ok].astype(np.int64)
        if len(k) == 0:
            return np.nan, np.nan, np.nan
    G = k.shape[-1]
    est = np.maximum(np.mean(corrected_imbalance(successes=k, n=n), axis=-1), 0.0)
    if p_global is None:
        p_global = global_fair_p(binom_two_sided(k, n, 0.5))

    def bounds(kk, nn):
        return _adaptive.bracket(np.mean(np.abs(kk / nn - 0.5), axis=-1), _adaptive.run_terms(kk, nn), G, ci)

    lo, hi = _adaptive.chunked(bounds, k, n, rows=400) if k.ndim > 1 else bounds(k, n)
    lo, hi = np.clip(lo, 0.0, 0.5), np.clip(hi, 0.0, 0.5)
    lo = np.where(np.asarray(p_global) > 1 - ci, 0.0, lo)
    lo, hi = np.minimum(lo, est), np.maximum(hi, est)
    if np.ndim(est) == 0:
        return float(est), float(lo), float(hi)
    return est, lo, hi


def bootstrap_mean_imbalance(
    *,
    table: pd.DataFrame,
    by_prompt: pd.DataFrame | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=None,
    n_sim: int = 10_000,
) -> tuple[float, float, float]:
    """Mean |p − ½| over the table's groups: (bias-corrected estimate, interval low, high).

    Since diffkit 0.3 the interval is :func:`mean_imbalance_interval`'s, computed exactly, so
    *by_prompt*, *n_boot*, *seed* and *n_sim* no longer change it (they are accepted so that
    existing calls keep working; the same table always gives the same interval).
    """
    t = table[table["n"] > 0]
    if len(t) == 0:
        return np.nan, np.nan, np.nan
    return mean_imbalance_interval(successes=t["n_female"].to_numpy(), n=t["n"].to_numpy(), ci=ci)
