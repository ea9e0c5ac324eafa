"""Hypothesis tests per occupation, Holm's adjustment, and the global fair test they imply.

==========================  =========================================================================
parity                      exact two-sided binomial test of p = ½ (scipy ``binomtest``'s rule)
amplified                   one-sided exact test: further from ½ than the reference, on its side
reversed                    one-sided exact test: on the other side of ½ from the reference
Holm                        step-down adjusted p-values, family-wise error ≤ α           (Holm 1979)
global fair test            H₀ every p_g = ½: min over occupations of the Holm-adjusted p-value,
                            G · min_g p_g (Bonferroni's min-p test, Holm's first step)
==========================  =========================================================================

The global test *is* Holm's first step, so "the fair null is rejected" and "at least one
occupation differs from parity (Holm)" are one statement: a report cannot say one without the
other. ``fair_null_test`` (a Monte Carlo test on mean |p̂ − ½|) stays available; the report does
not use it, because it can disagree with the Holm decisions.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

__all__ = ["binom_beyond", "binom_reversed", "binom_two_sided", "fair_null_test", "global_fair_p", "holm"]


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values along the last axis; NaN stays NaN and is not counted.

    Rejecting where the adjusted value is ≤ α keeps the family-wise error rate at α.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim > 1:
        return np.stack([holm(row) for row in p.reshape(-1, p.shape[-1])]).reshape(p.shape)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def global_fair_p(p_fair) -> np.ndarray:
    """The global test of "every occupation is at parity" from the per-occupation p-values:
    min(1, G · min_g p_g) over the G finite ones (last axis), which is the smallest Holm-adjusted
    p-value. It rejects at α exactly when Holm calls at least one occupation unfair."""
    p = np.asarray(p_fair, dtype=float)
    g = np.isfinite(p).sum(axis=-1)
    with np.errstate(invalid="ignore"):
        m = np.nanmin(np.where(np.isfinite(p), p, np.inf), axis=-1)
    return np.where(g > 0, np.minimum(1.0, g * m), np.nan)


def _per_n_p0(k, n, p0, table) -> np.ndarray:
    """Apply ``table(n, p0) → array over k = 0 … n`` elementwise, building each table once."""
    k, n, p0 = np.broadcast_arrays(np.asarray(k), np.asarray(n), np.asarray(p0, dtype=float))
    out = np.full(k.shape, np.nan)
    ok = (n > 0) & np.isfinite(p0)
    if not ok.any():
        return out
    keys = np.stack([n[ok].astype(float), p0[ok]], axis=-1)
    uniq, inv = np.unique(keys, axis=0, return_inverse=True)
    vals = np.empty(inv.shape)
    kk = k[ok].astype(int)
    for j, (m, q) in enumerate(uniq):
        sel = inv.ravel() == j
        vals[sel] = table(int(m), float(q))[kk[sel]]
    out[ok] = vals
    return out


def _two_sided_table(m: int, q: float) -> np.ndarray:
    pm = stats.binom.pmf(np.arange(m + 1), m, q)
    order = np.sort(pm)
    csum = np.cumsum(order)
    # for each k, the sum of the probabilities no larger than pm[k] (relative tolerance 1e-7)
    idx = np.searchsorted(order, pm * (1 + 1e-7), side="right") - 1
    return np.minimum(1.0, csum[idx])


def binom_two_sided(k, n, p0) -> np.ndarray:
    """Exact two-sided binomial test p-values, scipy ``binomtest``'s rule (the sum of the
    probabilities no larger than the observed one, relative tolerance 1e-7); NaN where n = 0."""
    return _per_n_p0(k, n, p0, _two_sided_table)


def binom_beyond(k, n, p_ref) -> np.ndarray:
    """One-sided exact p-values for "further from ½ than the reference, on its side": H1 p > p_ref
    when p_ref > ½, H1 p < p_ref when p_ref < ½; NaN where p_ref is ½, missing, or n = 0."""
    k, n, r = np.broadcast_arrays(np.asarray(k, float), np.asarray(n, float), np.asarray(p_ref, float))
    out = np.full(k.shape, np.nan)
    up = (r > 0.5) & (n > 0)
    down = (r < 0.5) & (n > 0)
    out[up] = stats.binom.sf(k[up] - 1, n[up], r[up])
    out[down] = stats.binom.cdf(k[down], n[down], r[down])
    return out


def binom_reversed(k, n, p_ref) -> np.ndarray:
    """One-sided exact p-values for "on the other side of ½ from the reference": H1 p < ½ when
    p_ref > ½, H1 p > ½ when p_ref < ½; NaN where p_ref is ½, missing, or n = 0."""
    k, n, r = np.broadcast_arrays(np.asarray(k, float), np.asarray(n, float), np.asarray(p_ref, float))
    out = np.full(k.shape, np.nan)
    up = (r > 0.5) & (n > 0)
    down = (r < 0.5) & (n > 0)
    out[up] = stats.binom.cdf(k[up], n[up], 0.5)
    out[down] = stats.binom.sf(k[down] - 1, n[down], 0.5)
    return out


def fair_null_test(*, successes, n, n_sim: int = 10_000, seed=None) -> float:
    """Monte Carlo exact test of the fair null (every group's p = ½): p-value of mean |p̂ − ½|.

    The statistic's null distribution is simulated with every labelled image a fair coin
    (Binomial(n_g, ½) per group); p = (1 + #{T* ≥ T}) / (1 + n_sim) (Davison & Hinkley 1997,
    §4.2), exact in size up to the Monte Carlo error; print it with
    :func:`~diffkit.audit.metrics.format_p_value` (``n_sim=``). NaN when no group has labelled
    images. *successes* may carry leading dimensions (many data sets of the same n at once).
    More powerful than :func:`global_fair_p` against many small departures, but it can disagree
    with the per-occupation Holm decisions, so the report uses the latter.
    """
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    ok = n > 0
    if not ok.any():
        return float("nan")
    null = _fair_null_draws(n[ok].astype(int), n_sim, np.random.default_rng(seed))
    p = _fair_null_p(k[..., ok], n[ok], null)
    return float(p) if np.ndim(p) == 0 else p


def _fair_null_draws(n: np.ndarray, n_sim: int, rng) -> np.ndarray:
    """Sorted mean |p̂ − ½| of *n_sim* fair models with these labelled counts."""
    return np.sort(np.abs(rng.binomial(n, 0.5, size=(n_sim, len(n))) / n - 0.5).mean(axis=1))


def _fair_null_p(k: np.ndarray, n: np.ndarray, null_sorted: np.ndarray):
    t = np.abs(k / n - 0.5).mean(axis=-1)
    n_ge = len(null_sorted) - np.searchsorted(null_sorted, t - 1e-12, side="left")
    return (1 + n_ge) / (1 + len(null_sorted))
