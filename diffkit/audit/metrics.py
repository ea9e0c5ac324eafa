"""Bias statistics that hold up to review: named estimands, intervals with tested coverage.

Tidy all the way: the per-image table from :func:`~diffkit.audit.score.score_images` →
:func:`group_table` per prompt or per occupation → :func:`overall_table`. Every function
takes keywords only (fairlearn's ``MetricFrame`` style), seeds its draws with ``seed`` (an int,
a ``numpy.random.Generator`` or None; ``random_state`` is its deprecated old name) and returns pandas objects.
The estimands, intervals, assumptions and sources are in ``docs/audit_methodology.md``; in short:

==========================  =========================================================================
Wilson interval             (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)       (Wilson 1927)
simultaneous interval       Clopper–Pearson at 1 − α/G for each of G groups (Bonferroni)
imbalance                   |p − ½| (HEIM, Lee et al. 2023); plug-in |p̂ − ½| is biased upward
fair-model baseline         E|X/n − ½|, X ~ Binomial(n, ½), exact sum over k
corrected imbalance         2|p̂ − ½| − E_p̂|p̂* − ½|  (one bootstrap bias correction, exact)
fair-null test              Monte Carlo exact test of "every p = ½" on mean |p̂ − ½|
Holm                        step-down adjusted p-values, family-wise error ≤ α         (Holm 1979)
amplification               mean over occupations of |p − ½| − |p_ref − ½|
Rogan–Gladen                (p̂ + Sp − 1) / (Se + Sp − 1)  (Rogan & Gladen 1978); interval from the
                            posterior of p with Se, Sp drawn from the controls (Gelman & Carpenter 2020)
KL to uniform               p̂ ln 2p̂ + (1−p̂) ln 2(1−p̂)   (nats)
Pearson, Spearman           r of (p̂, p_ref); Spearman = Pearson of average ranks
Newcombe difference         hybrid score interval for p̂_b − p̂_a                 (Newcombe 1998, #10)
==========================  =========================================================================

The occupations and templates of a spec are a fixed, chosen list: every bootstrap here
resamples **images within prompts** and never the list itself. Only images labelled
``female`` or ``male`` enter p̂; ``abstain`` and ``no_person`` are counted beside it, never
forced into a class, and the abstention bounds say what they could change.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

from .._deprecate import renamed_kwargs

__all__ = [
    "AuditMetrics",
    "audit_metrics",
    "bootstrap_mean_imbalance",
    "classifier_validation",
    "clopper_pearson_interval",
    "compare_metrics",
    "controls_by_occupation",
    "corrected_imbalance",
    "expected_imbalance",
    "fair_baseline",
    "fair_null_test",
    "group_table",
    "heim_gender_imbalance",
    "holm",
    "kl_to_uniform",
    "newcombe_interval",
    "newcombe_paired_interval",
    "overall_table",
    "pair_runs",
    "pearson",
    "rogan_gladen",
    "rogan_gladen_interval",
    "spearman",
    "wilson_interval",
]

def _z(ci: float) -> float:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    return float(stats.norm.ppf(0.5 + ci / 2))


def pct(ci: float) -> str:
    """A confidence level as the report writes it: 0.95 → ``"95%"``, 0.9 → ``"90%"``, 0.995 → ``"99.5%"``."""
    return f"{100 * ci:.10g}%"


def wilson_interval(*, successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (Wilson 1927); NaN where n = 0.

    >>> lo, hi = wilson_interval(successes=8, n=10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.4902, 0.9433)
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _z(ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    # exact at the ends (centre − half cancels to 0 when p̂ = 0, but not in floating point),
    # so an interval of 0 of n images holds a true share of exactly 0
    lo, hi = np.where(x == 0, 0.0, lo), np.where(x == n, 1.0, hi)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


def clopper_pearson_interval(*, successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson (1934) exact interval: coverage ≥ *ci* for every p (conservative); NaN where n = 0.

    >>> lo, hi = clopper_pearson_interval(successes=0, n=10)
    >>> float(lo), round(float(hi), 4)
    (0.0, 0.3085)
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    a = 1 - ci
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x > 0, stats.beta.ppf(a / 2, x, n - x + 1), 0.0)
        hi = np.where(x < n, stats.beta.ppf(1 - a / 2, x + 1, n - x), 1.0)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


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


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values; NaN stays NaN and is not counted.

    Rejecting where the adjusted value is ≤ α keeps the family-wise error rate at α.

    >>> holm([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.06, 0.06]
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="mergesort")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def _binom_two_sided(k, n, p0) -> np.ndarray:
    """Exact two-sided binomial test p-values, scipy ``binomtest``'s rule (the sum of the
    probabilities no larger than the observed one, relative tolerance 1e-7); NaN where n = 0."""
    k, n, p0 = np.broadcast_arrays(np.asarray(k), np.asarray(n), np.asarray(p0, dtype=float))
    out = np.full(k.shape, np.nan)
    cache: dict[tuple[int, float], np.ndarray] = {}
    for j in np.ndindex(k.shape):
        if n[j] > 0 and np.isfinite(p0[j]):
            key = (int(n[j]), float(p0[j]))
            if key not in cache:
                cache[key] = stats.binom.pmf(np.arange(key[0] + 1), key[0], key[1])
            pm = cache[key]
            out[j] = min(1.0, float(pm[pm <= pm[int(k[j])] * (1 + 1e-7)].sum()))
    return out


def _binom_beyond(k, n, p_ref) -> np.ndarray:
    """One-sided exact p-values for "further from ½ than the reference, on its side": H1 p > p_ref
    when p_ref > ½, H1 p < p_ref when p_ref < ½; NaN where p_ref is ½, missing, or n = 0."""
    k, n, r = np.broadcast_arrays(np.asarray(k, float), np.asarray(n, float), np.asarray(p_ref, float))
    out = np.full(k.shape, np.nan)
    up = (r > 0.5) & (n > 0)
    down = (r < 0.5) & (n > 0)
    out[up] = stats.binom.sf(k[up] - 1, n[up], r[up])
    out[down] = stats.binom.cdf(k[down], n[down], r[down])
    return out


@renamed_kwargs(random_state="seed")
def fair_null_test(*, successes, n, n_sim: int = 10_000, seed=None) -> float:
    """Monte Carlo exact test of the fair null (every group's p = ½): p-value of mean |p̂ − ½|.

    The statistic's null distribution is simulated with every labelled image a fair coin
    (Binomial(n_g, ½) per group); p = (1 + #{T* ≥ T}) / (1 + n_sim) (Davison & Hinkley 1997,
    §4.2), exact in size up to the Monte Carlo error. NaN when no group has labelled images.
    *successes* may carry leading dimensions (many data sets of the same n at once).
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


def rogan_gladen(*, p_observed, sensitivity, specificity) -> np.ndarray:
    """Rogan–Gladen (1978) estimate of the true share from an imperfect classifier.

    ``(p_obs + Sp − 1) / (Se + Sp − 1)``, clipped to [0, 1]. Here "positive" is female:
    Se = P(labelled female | stated female), Sp = P(labelled male | stated male), both measured
    on the control prompts. Below Se + Sp = 1 the classifier is *inverted* (it calls women men
    more often than not) and the formula still corrects it; only at Se + Sp = 1 (a classifier
    whose label does not depend on the gender) is nothing recoverable: NaN with a warning.
    *sensitivity* and *specificity* may be arrays (per group).
    """
    p = np.asarray(p_observed, dtype=float)
    se = np.asarray(sensitivity, dtype=float)
    sp = np.asarray(specificity, dtype=float)
    j = se + sp - 1
    chance = ~np.isfinite(j) | (np.abs(j) < 1e-9)
    if np.any(chance & np.isfinite(j)):
        warnings.warn(
            "sensitivity + specificity = 1: the classifier's label does not depend on the stated gender "
            "(no better than chance) on the control prompts, so the Rogan–Gladen correction is undefined",
            stacklevel=2,
        )
    if np.any(j < -1e-9):
        warnings.warn(
            "sensitivity + specificity < 1: the classifier is inverted on the control prompts (it labels the "
            "stated gender as the other more often than not); the Rogan–Gladen correction still applies, but "
            "check the label phrases in [classifier.labels] (female and male swapped?)",
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip((p + sp - 1) / np.where(chance, np.nan, j), 0, 1)
    return out


@renamed_kwargs(random_state="seed")
def rogan_gladen_interval(
    *,
    successes,
    n,
    se_successes,
    se_n,
    sp_successes,
    sp_n,
    ci: float = 0.95,
    n_draws: int = 2000,
    seed=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rogan–Gladen estimate with an interval that carries the uncertainty of Se and Sp.

    Per group: the estimate is :func:`rogan_gladen` at the measured Se, Sp; the interval is
    the central *ci* posterior interval of the true share p ∈ [0, 1] (uniform prior) when the
    observed female count is Binomial(n, Se·p + (1 − Sp)(1 − p)) and Se, Sp are drawn from
    their Jeffreys posteriors Beta(x + ½, m − x + ½) given the control counts (the approach of
    Gelman & Carpenter 2020 for test-based prevalence). Computed on a grid of 401 values of p,
    ``n_draws`` draws of (Se, Sp) per group. Because p lives in [0, 1] there is no clipping:
    the interval is never a single point, even when p̂ lies below 1 − Sp. All arguments
    broadcast (Se, Sp counts may be per group). NaN where n = 0 or a control count is 0.
    """
    k, n, xs, ms, xp, mp = (np.atleast_1d(np.asarray(v, dtype=float)) for v in
                            (successes, n, se_successes, se_n, sp_successes, sp_n))
    k, n, xs, ms, xp, mp = np.broadcast_arrays(k, n, xs, ms, xp, mp)
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, 401)
    a = (1 - ci) / 2
    est = np.full(k.shape, np.nan)
    lo, hi = est.copy(), est.copy()
    for j in range(len(k)):
        if not (n[j] > 0 and ms[j] > 0 and mp[j] > 0):
            continue
        se_hat, sp_hat = xs[j] / ms[j], xp[j] / mp[j]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est[j] = rogan_gladen(p_observed=k[j] / n[j], sensitivity=se_hat, specificity=sp_hat)
        se = rng.beta(xs[j] + 0.5, ms[j] - xs[j] + 0.5, size=n_draws)
        sp = rng.beta(xp[j] + 0.5, mp[j] - xp[j] + 0.5, size=n_draws)
        q = np.clip(se[:, None] * grid + (1 - sp[:, None]) * (1 - grid), 1e-12, 1 - 1e-12)
        ll = k[j] * np.log(q) + (n[j] - k[j]) * np.log1p(-q)
        w = np.exp(ll - ll.max(axis=1, keepdims=True))
        cdf = np.cumsum(w, axis=1)
        cdf /= cdf[:, -1:]
        u = rng.random(n_draws)
        draws = grid[np.minimum((cdf < u[:, None]).sum(axis=1), len(grid) - 1)]
        lo[j], hi[j] = np.quantile(draws, [a, 1 - a])
    # the clipped point estimate can sit a grid step outside the posterior interval: include it
    lo, hi = np.fmin(lo, est), np.fmax(hi, est)
    return est, lo, hi


def kl_to_uniform(*, p) -> np.ndarray:
    """KL(Bernoulli(p) ‖ Bernoulli(½)) in nats: p ln 2p + (1−p) ln 2(1−p), with 0 ln 0 = 0."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(2 * p), 0.0)
        b = np.where(p < 1, (1 - p) * np.log(2 * (1 - p)), 0.0)
    return np.where(np.isnan(p), np.nan, a + b)


def pearson(*, x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (t with n − 2 degrees of freedom)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.clip((xc @ yc) / math.sqrt((xc @ xc) * (yc @ yc)), -1, 1))
    if abs(r) == 1:
        return r, 0.0
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 2))


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    ranks = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(*, x, y) -> tuple[float, float]:
    """Spearman's ρ (Pearson's r of average ranks) and its t-approximation p-value."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return pearson(x=_rank(x[ok]), y=_rank(y[ok]))


def newcombe_interval(*, successes_a, n_a, successes_b, n_b, ci: float = 0.95):
    """Newcombe's (1998, method 10) hybrid score interval for p_b − p_a, from Wilson intervals."""
    pa = np.asarray(successes_a, float) / np.asarray(n_a, float)
    pb = np.asarray(successes_b, float) / np.asarray(n_b, float)
    la, ua = wilson_interval(successes=successes_a, n=n_a, ci=ci)
    lb, ub = wilson_interval(successes=successes_b, n=n_b, ci=ci)
    d = pb - pa
    lo = d - np.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    hi = d + np.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return d, lo, hi


def newcombe_paired_interval(*, both, a_only, b_only, neither, ci: float = 0.95):
    """Newcombe's (1998b, method 10) interval for the paired difference p_b − p_a.

    From the 2×2 table of pairs (*both* labelled female in a and b, *a_only*, *b_only*,
    *neither*): p_a = (both + a_only)/N, p_b = (both + b_only)/N, their Wilson intervals
    (l, u), and the correlation φ = (both·neither − a_only·b_only)/√(product of the margins)
    with Newcombe's continuity correction (φ* = max(AD − BC − N/2, 0)/√… when AD > BC; 0 when
    a margin is empty)::

        L = Δ − √((p_b − l_b)² − 2φ(p_b − l_b)(u_a − p_a) + (u_a − p_a)²)
        U = Δ + √((u_b − p_b)² − 2φ(u_b − p_b)(p_a − l_a) + (p_a − l_a)²)

    Newcombe RG, "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Stat. Med. 17:2635–2650 (1998).
    """
    A, B, C, D = (np.asarray(x, dtype=float) for x in (both, a_only, b_only, neither))
    n = A + B + C + D
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = (A + B) / n, (A + C) / n
        la, ua = wilson_interval(successes=A + B, n=n, ci=ci)
        lb, ub = wilson_interval(successes=A + C, n=n, ci=ci)
        den = np.sqrt((A + B) * (C + D) * (A + C) * (B + D))
        num = A * D - B * C
        num = np.where(num > 0, np.maximum(num - n / 2, 0), num)
        phi = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
        d = pb - pa
        lo = d - np.sqrt(np.maximum((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0))
        hi = d + np.sqrt(np.maximum((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0))
    return d, lo, hi


# --------------------------------------------------------------------------- tables
_LABELS = ("female", "male", "abstain", "no_person", "blacked_out")


def _counts(g: pd.DataFrame) -> pd.Series:
    lab = g["label"]
    return pd.Series({
        "n_images": len(g),
        "n_no_person": int((lab == "no_person").sum()),
        "n_abstain": int((lab == "abstain").sum()),
        "n_female": int((lab == "female").sum()),
        "n_male": int((lab == "male").sum()),
    })


def classifier_validation(*, images: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """The classifier on the control prompts (the gender stated): one row per stated gender.

    ``accuracy`` among labelled images is the sensitivity for ``female`` and the specificity
    for ``male`` (female is "positive"), with a Wilson interval; abstentions and no-person
    images are counted beside it. What the controls measure is the generator's *compliance*
    (did it draw a woman for "a woman nurse"?) times the classifier's accuracy: the two are
    not separable from the controls alone (see ``docs/audit_methodology.md``).
    """
    ctrl = images[images["kind"] == "control"]
    rows = []
    for g in ("female", "male"):
        sub = ctrl[ctrl["stated_gender"] == g]
        c = _counts(sub)
        n = c["n_female"] + c["n_male"]
        correct = c[f"n_{g}"]
        lo, hi = wilson_interval(successes=correct, n=n, ci=ci)
        rows.append({
            "stated_gender": g,
            "measure": "sensitivity" if g == "female" else "specificity",
            **c.to_dict(),
            "n_labelled": int(n),
            "n_correct": int(correct),
            "accuracy": correct / n if n else np.nan,
            "ci_low": float(lo),
            "ci_high": float(hi),
        })
    return pd.DataFrame(rows)


def controls_by_occupation(*, images: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Sensitivity and specificity per occupation from the control prompts, with Wilson intervals.

    Columns: ``occupation, se_correct, se_n, sensitivity, se_low, se_high, sp_correct, sp_n,
    specificity, sp_low, sp_high`` (counts among labelled control images). ``attrs["p_homogeneous"]``
    holds the exact-as-possible check that Se and Sp do not vary by occupation: the smaller
    of two χ² tests of homogeneity (one for Se, one for Sp) across occupations, Bonferroni
    for the two (NaN when fewer than two occupations have controls).
    """
    ctrl = images[(images["kind"] == "control") & images["label"].isin(["female", "male"])]
    cols = ["occupation", "se_correct", "se_n", "sensitivity", "se_low", "se_high", "sp_correct", "sp_n",
            "specificity", "sp_low", "sp_high"]
    if ctrl.empty or "occupation" not in ctrl:
        out = pd.DataFrame(columns=cols)
        out.attrs["p_homogeneous"] = float("nan")
        return out
    rows = []
    for occ, g in ctrl.groupby("occupation", sort=True):
        f = g[g["stated_gender"] == "female"]
        m = g[g["stated_gender"] == "male"]
        row = {"occupation": occ, "se_correct": int((f["label"] == "female").sum()), "se_n": len(f),
               "sp_correct": int((m["label"] == "male").sum()), "sp_n": len(m)}
        for key, x, n in (("se", row["se_correct"], row["se_n"]), ("sp", row["sp_correct"], row["sp_n"])):
            lo, hi = wilson_interval(successes=x, n=n, ci=ci)
            row["sensitivity" if key == "se" else "specificity"] = x / n if n else np.nan
            row[f"{key}_low"], row[f"{key}_high"] = float(lo), float(hi)
        rows.append(row)
    out = pd.DataFrame(rows)[cols]
    pvals = []
    for key in ("se", "sp"):
        sub = out[out[f"{key}_n"] > 0]
        tab = np.stack([sub[f"{key}_correct"], sub[f"{key}_n"] - sub[f"{key}_correct"]], axis=1)
        if len(sub) >= 2 and (tab.sum(axis=0) > 0).all():
            pvals.append(stats.chi2_contingency(tab, correction=False)[1])
    out.attrs["p_homogeneous"] = float(min(1.0, 2 * min(pvals))) if pvals else float("nan")
    return out


def reliability_table(*, images: pd.DataFrame, bins: int = 10, ci: float = 0.95) -> pd.DataFrame:
    """A reliability diagram's data from the control prompts: per bin of the classifier's
    ``p_female``, the number of control images, their mean ``p_female`` and the share whose
    prompt stated "female" (with a Wilson interval). A calibrated classifier has the share
    equal to the mean prediction in every bin. Every control image counts, whatever its label
    (the gate and the abstention rule are applied after the probability)."""
    ctrl = images[(images["kind"] == "control") & images["stated_gender"].isin(["female", "male"])]
    cols = ["bin_low", "bin_high", "n", "mean_p_female", "share_stated_female", "ci_low", "ci_high"]
    if ctrl.empty or "p_female" not in ctrl:
        return pd.DataFrame(columns=cols)
    edges = np.linspace(0, 1, bins + 1)
    p = ctrl["p_female"].to_numpy(float)
    y = (ctrl["stated_gender"] == "female").to_numpy()
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        k = int(y[sel].sum())
        lo, hi = wilson_interval(successes=k, n=n, ci=ci)
        rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "n": n,
                     "mean_p_female": float(p[sel].mean()) if n else np.nan,
                     "share_stated_female": k / n if n else np.nan, "ci_low": float(lo), "ci_high": float(hi)})
    return pd.DataFrame(rows)


def suggest_thresholds(
    *, images: pd.DataFrame, max_error: float = 0.05, person_quantile: float = 0.01
) -> dict[str, float]:
    """Thresholds chosen from the control images by a stated rule (not applied automatically).

    * ``abstain_below``: the smallest confidence threshold t ≥ 0.5 at which the control images
      kept (confidence ≥ t) disagree with their stated gender at most ``max_error`` of the
      time; 0.5 (no abstention) when even that is reached without abstaining; NaN when no t is.
    * ``person_threshold``: the ``person_quantile`` quantile of ``p_person`` over the control
      images, which all show a person by construction (so about that share of true persons
      would be gated out). It needs controls whose ``p_person`` varies to mean anything.

    Also returns ``error_at_suggestion`` and ``kept_at_suggestion`` (share of controls kept).
    Apply them to a finished run with :func:`diffkit.audit.score.relabel` (no rescoring), or write
    them into the spec's ``[classifier]`` for the next run.
    """
    ctrl = images[(images["kind"] == "control") & images["stated_gender"].isin(["female", "male"])]
    out = {"abstain_below": float("nan"), "person_threshold": float("nan"), "error_at_suggestion": float("nan"),
           "kept_at_suggestion": float("nan"), "n_controls": float(len(ctrl))}
    if ctrl.empty or "confidence" not in ctrl:
        return out
    conf = ctrl["confidence"].to_numpy(float)
    wrong = ((ctrl["p_female"].to_numpy(float) >= 0.5) != (ctrl["stated_gender"] == "female").to_numpy())
    for t in np.unique(np.concatenate([[0.5], conf[conf >= 0.5]])):
        keep = conf >= t
        if keep.sum() == 0:
            break
        err = wrong[keep].mean()
        if err <= max_error:
            out.update(abstain_below=float(t), error_at_suggestion=float(err), kept_at_suggestion=float(keep.mean()))
            break
    out["person_threshold"] = float(np.quantile(ctrl["p_person"].to_numpy(float), person_quantile))
    return out


def _control_counts(images: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Se/Sp counts per occupation (indexed by occupation) and pooled over occupations."""
    per = controls_by_occupation(images=images)
    pooled = {"se_correct": int(per["se_correct"].sum()), "se_n": int(per["se_n"].sum()),
              "sp_correct": int(per["sp_correct"].sum()), "sp_n": int(per["sp_n"].sum())}
    return per.set_index("occupation") if len(per) else per, pooled


@renamed_kwargs(random_state="seed")
def group_table(
    *,
    images: pd.DataFrame,
    by: str | list[str] = "occupation",
    ci: float = 0.95,
    kind: Literal["audit", "control", "all"] = "audit",
    controls: Literal["auto", "pooled", "per_occupation", "none"] = "auto",
    min_controls: int = 20,
    n_draws: int = 2000,
    seed=None,
) -> pd.DataFrame:
    """Per group (``"occupation"``, or ``"prompt_id"`` for per prompt): counts, p̂_female and every
    per-group metric.

    Columns: ``n_images, n_blacked_out`` (every pixel black: a safety checker's output),
    ``n_no_person, n_abstain, n_female, n_male, n`` (labelled);
    ``p_female, ci_low, ci_high`` (Wilson at *ci*); ``sim_low, sim_high`` (simultaneous over
    the G groups of this table: Clopper–Pearson at 1 − (1 − ci)/G, Bonferroni, so all G hold
    their shares together at least *ci* of the time); ``abstain_rate, no_person_rate`` (shares of
    the group's images); ``p_female_if_abstain_male,
    p_female_if_abstain_female`` (the share if every abstention were male / female: the bounds
    abstentions could move it within); ``imbalance`` (plug-in |p̂ − ½|, biased upward),
    ``imbalance_corrected`` (:func:`corrected_imbalance`), ``fair_baseline`` (E|p̂ − ½| of a fair
    model at this n), ``excess_imbalance`` (imbalance − fair_baseline), ``p_fair`` and ``p_fair_holm``
    (exact binomial test of p = ½, Holm-adjusted over the table's groups), ``kl_uniform``,
    ``p_ref``, ``gap`` (p̂ − p_ref), ``p_beyond_ref`` and ``p_beyond_ref_holm`` (one-sided exact test
    that p is further from ½ than p_ref on its side, Holm-adjusted), ``amplified_holm`` (that
    test rejects at α = 1 − ci), ``p_differs_ref_holm`` (two-sided exact test of p = p_ref, Holm),
    ``p_female_no_abstention`` (Fair Diffusion's and HEIM's way: the share with classifier
    ``p_female`` ≥ ½ among every image past the person gate, no abstention; NaN without scores),
    and Rogan–Gladen ``p_corrected, corrected_low, corrected_high`` with ``se_sp_source``
    (``"occupation"`` or ``"pooled"``), from the control prompts in *images* (*controls*:
    ``"auto"`` uses an occupation's own controls when both stated genders have at least
    *min_controls* labelled images, the pooled ones otherwise; ``"none"`` leaves them NaN).
    """
    by = [by] if isinstance(by, str) else list(by)
    df = images if kind == "all" else images[images["kind"] == kind]
    keep = [c for c in ("occupation", "prompt", "template_id") if c in df.columns and c not in by]
    if by == ["prompt_id"]:
        extra = df.groupby("prompt_id", sort=True)[keep].first()
    elif len(df):
        extra = pd.DataFrame(index=df.groupby(by, sort=True).size().index)
    else:
        extra = pd.DataFrame()
    if df.empty:
        return pd.DataFrame(columns=[*by, "n_images", "n", "p_female", "ci_low", "ci_high"])
    lab = pd.crosstab([df[c] for c in by], df["label"]).reindex(columns=list(_LABELS), fill_value=0)
    counts = pd.DataFrame({"n_images": lab.sum(axis=1), "n_blacked_out": lab["blacked_out"],
                           "n_no_person": lab["no_person"], "n_abstain": lab["abstain"], "n_female": lab["female"],
                           "n_male": lab["male"]})
    counts.index.names = by
    t = extra.join(counts).reset_index() if len(extra.columns) else counts.reset_index()
    t["n"] = t["n_female"] + t["n_male"]
    alpha = 1 - ci
    with np.errstate(invalid="ignore", divide="ignore"):
        t["p_female"] = np.where(t["n"] > 0, t["n_female"] / t["n"].where(t["n"] > 0, 1), np.nan)
        t["ci_low"], t["ci_high"] = wilson_interval(successes=t["n_female"], n=t["n"], ci=ci)
        g = max(int((t["n"] > 0).sum()), 1)
        t["sim_low"], t["sim_high"] = clopper_pearson_interval(successes=t["n_female"], n=t["n"], ci=1 - alpha / g)
        t["abstain_rate"] = np.where(t["n_images"] > 0, t["n_abstain"] / t["n_images"].where(t["n_images"] > 0, 1),
                                     np.nan)
        t["no_person_rate"] = np.where(t["n_images"] > 0,
                                       t["n_no_person"] / t["n_images"].where(t["n_images"] > 0, 1), np.nan)
        m_all = t["n"] + t["n_abstain"]
        t["p_female_if_abstain_male"] = np.where(m_all > 0, t["n_female"] / m_all.where(m_all > 0, 1), np.nan)
        t["p_female_if_abstain_female"] = np.where(
            m_all > 0, (t["n_female"] + t["n_abstain"]) / m_all.where(m_all > 0, 1), np.nan)
    if "p_female" in df.columns:  # Fair Diffusion's way: every image past the gate, nobody abstains
        gated = df[~df["label"].isin(["no_person", "blacked_out"])]
        share = (gated["p_female"] >= 0.5).groupby([gated[c] for c in by]).mean()
        t["p_female_no_abstention"] = share.reindex(pd.MultiIndex.from_frame(t[by]) if len(by) > 1
                                                    else pd.Index(t[by[0]])).to_numpy(dtype=float)
    else:
        t["p_female_no_abstention"] = np.nan
    t["imbalance"] = (t["p_female"] - 0.5).abs()
    t["imbalance_corrected"] = corrected_imbalance(successes=t["n_female"].to_numpy(), n=t["n"].to_numpy())
    t["fair_baseline"] = fair_baseline(n=t["n"].to_numpy())
    t["excess_imbalance"] = t["imbalance"] - t["fair_baseline"]
    t["p_fair"] = _binom_two_sided(t["n_female"].to_numpy(), t["n"].to_numpy(), 0.5)
    t["p_fair_holm"] = holm(t["p_fair"])
    t["kl_uniform"] = kl_to_uniform(p=t["p_female"].to_numpy())
    if "p_ref" in df.columns:
        ref = df.groupby(by, sort=True)["p_ref"].first().reset_index(drop=True)
        t["p_ref"] = pd.to_numeric(ref, errors="coerce").astype(float).to_numpy()
    else:
        t["p_ref"] = np.nan
    t["gap"] = t["p_female"] - t["p_ref"]
    t["p_beyond_ref"] = _binom_beyond(t["n_female"].to_numpy(), t["n"].to_numpy(), t["p_ref"].to_numpy())
    t["p_beyond_ref_holm"] = holm(t["p_beyond_ref"])
    t["amplified_holm"] = t["p_beyond_ref_holm"] <= alpha
    t["p_differs_ref_holm"] = holm(_binom_two_sided(t["n_female"].to_numpy(), t["n"].to_numpy(),
                                                    t["p_ref"].to_numpy()))
    t["p_corrected"] = t["corrected_low"] = t["corrected_high"] = np.nan
    t["se_sp_source"] = None
    has_ctrl = "stated_gender" in images.columns and (images["kind"] == "control").any()
    if controls != "none" and has_ctrl and kind == "audit" and "occupation" in t.columns:
        per, pooled = _control_counts(images)
        cnt = pd.DataFrame([pooled] * len(t))
        src = np.full(len(t), "pooled", dtype=object)
        if controls in ("auto", "per_occupation") and len(per):
            for i, occ in enumerate(t["occupation"]):
                if occ in per.index:
                    r = per.loc[occ]
                    enough = min(r["se_n"], r["sp_n"]) >= (min_controls if controls == "auto" else 1)
                    if enough:
                        cnt.iloc[i] = [r["se_correct"], r["se_n"], r["sp_correct"], r["sp_n"]]
                        src[i] = "occupation"
        if pooled["se_n"] > 0 and pooled["sp_n"] > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est, lo, hi = rogan_gladen_interval(
                    successes=t["n_female"], n=t["n"], se_successes=cnt["se_correct"], se_n=cnt["se_n"],
                    sp_successes=cnt["sp_correct"], sp_n=cnt["sp_n"], ci=ci, n_draws=n_draws,
                    seed=seed)
            t["p_corrected"], t["corrected_low"], t["corrected_high"] = est, lo, hi
            t["se_sp_source"] = src
    return t


def _strata(t: pd.DataFrame, by_prompt: pd.DataFrame | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The resampling strata of a group table: per stratum (a prompt, or the group itself) its
    labelled n and p̂, and the (strata, groups) indicator matrix."""
    if by_prompt is not None and "occupation" in t.columns and "occupation" in by_prompt.columns:
        bp = by_prompt[(by_prompt["n"] > 0) & by_prompt["occupation"].isin(t["occupation"])]
        sums = bp.groupby("occupation")["n"].sum().reindex(t["occupation"]).fillna(0).to_numpy()
        if len(bp) and np.array_equal(sums, t["n"].to_numpy()):
            ind = np.zeros((len(bp), len(t)))
            ind[np.arange(len(bp)), pd.Index(t["occupation"]).get_indexer(bp["occupation"])] = 1
            return bp["n"].to_numpy(int), bp["p_female"].to_numpy(float), ind
    return t["n"].to_numpy(int), t["p_female"].to_numpy(float), np.eye(len(t))


def _within_prompt_draws(n_s: np.ndarray, p_s, ind: np.ndarray, *, n_boot: int, rng) -> np.ndarray:
    """Female counts per group, shape (…, n_boot, G), when each stratum's labelled images are
    resampled with replacement (a Binomial(n_s, p̂_s) draw) and the groups are never resampled.
    *p_s* may carry leading dimensions (…, S)."""
    p_s = np.asarray(p_s, dtype=float)
    shape = (*p_s.shape[:-1], n_boot, len(n_s))
    ks = rng.binomial(n_s, np.expand_dims(p_s, -2), size=shape)
    return np.rint(ks @ ind).astype(int)


def _strata_draws(t: pd.DataFrame, by_prompt: pd.DataFrame | None, *, n_boot: int, rng) -> np.ndarray:
    """(n_boot, G) bootstrap female counts per group of *t*, resampling images within prompts."""
    n_s, p_s, ind = _strata(t, by_prompt)
    return _within_prompt_draws(n_s, p_s, ind, n_boot=n_boot, rng=rng)


def _imbalance_ci(K, k, n, *, ci: float, p_null):
    """Bias-corrected mean imbalance, its interval from within-prompt draws *K* (…, B, G) (the
    hull of the percentile interval and of the same shifted by the draws' median bias), and the
    fair-null rule: the lower bound is 0 when the exact test cannot reject
    p = ½ everywhere (*p_null* ≥ 1 − ci). Leading dimensions (…) are independent data sets."""
    est = np.mean(corrected_imbalance(successes=k, n=np.broadcast_to(n, np.shape(k))), axis=-1)
    if K is None:
        return np.maximum(est, 0.0), np.full(np.shape(est), np.nan), np.full(np.shape(est), np.nan)
    boot = corrected_imbalance(successes=K, n=np.broadcast_to(n, K.shape)).mean(axis=-1)
    a = (1 - ci) / 2
    lo, hi = np.quantile(boot, [a, 1 - a], axis=-1)
    # the hull of the percentile interval and its copy shifted by the bootstrap's median bias
    # (median(boot) − est): the shift rescues occupations at parity, where the resampled
    # statistic sits above the estimate; the plain percentile interval keeps the skewed ones
    shift = np.median(boot, axis=-1) - est
    lo, hi = np.minimum(lo, lo - shift), np.maximum(hi, hi - shift)
    lo = np.where(np.asarray(p_null) < 1 - ci, np.maximum(lo, 0.0), 0.0)
    est, lo, hi = np.maximum(est, 0.0), lo, np.maximum(hi, lo)
    if np.ndim(est) == 0:
        return float(est), float(lo), float(hi)
    return est, lo, hi


@renamed_kwargs(random_state="seed")
def bootstrap_mean_imbalance(
    *, table: pd.DataFrame, by_prompt: pd.DataFrame | None = None, n_boot: int = 1000, ci: float = 0.95,
    seed=None, n_sim: int = 10_000,
) -> tuple[float, float, float]:
    """Mean |p − ½| over the table's groups: (bias-corrected estimate, interval low, high).

    The interval is the hull of the percentile interval of the bias-corrected statistic over
    ``n_boot`` resamples of the images within each prompt and of that interval shifted by the
    resamples' median bias (rows of *by_prompt*; each group's own images
    when it is not given), the list of groups held fixed; its lower bound is 0 whenever
    :func:`fair_null_test` cannot reject the fair null at α = 1 − ci. Coverage is checked
    by simulation in ``tests/audit/test_coverage.py``.
    """
    t = table[table["n"] > 0]
    if len(t) == 0:
        return np.nan, np.nan, np.nan
    rng = np.random.default_rng(seed)
    p_null = fair_null_test(successes=t["n_female"], n=t["n"], n_sim=n_sim, seed=rng)
    K = _strata_draws(t, by_prompt, n_boot=n_boot, rng=rng) if n_boot > 0 else None
    return _imbalance_ci(K, t["n_female"].to_numpy(), t["n"].to_numpy(), ci=ci, p_null=p_null)


def heim_gender_imbalance(*, images: pd.DataFrame) -> float:
    """Gender imbalance computed HEIM's way (Lee et al. 2023): for each prompt, the share of *all*
    its images (but the blacked-out ones, which HEIM leaves out too) whose ``p_female`` ≥ ½ (no
    person gate, no abstention), then |share − ½| averaged over prompts. NaN without a ``p_female`` column or audit images."""
    aud = images[images["kind"] == "audit"]
    if aud.empty or "p_female" not in aud:
        return float("nan")
    aud = aud[aud["label"] != "blacked_out"]  # HEIM leaves blacked-out images out
    share = (aud["p_female"] >= 0.5).groupby(aud["prompt_id"]).mean()
    return float((share - 0.5).abs().mean())


@renamed_kwargs(random_state="seed")
def overall_table(
    *,
    table: pd.DataFrame,
    images: pd.DataFrame | None = None,
    by_prompt: pd.DataFrame | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=None,
    n_sim: int = 10_000,
) -> pd.DataFrame:
    """Overall metrics from a :func:`group_table`, tidy: ``metric, value, ci_low, ci_high, n,
    interval, description`` (``interval`` names the method, empty where there is none).

    The headline estimands (see ``docs/audit_methodology.md``): ``mean_imbalance`` (mean over the
    fixed list of groups of |p − ½|, bias-corrected, with a within-prompt bootstrap interval
    and the fair-null rule), ``fair_null_p``, ``amplification`` (mean of |p − ½| − |p_ref − ½|
    over groups with a reference) and the Holm counts ``n_unfair_holm``, ``n_amplified_holm``,
    ``n_differs_ref_holm``. *by_prompt* (the per-prompt table of the same images) makes the
    bootstrap resample within prompts; without it, within groups.
    """
    t = table[table["n"] > 0].reset_index(drop=True)
    alpha = 1 - ci
    lvl = pct(ci)
    rows: list[dict] = []

    def add(metric, value, lo=np.nan, hi=np.nan, n=None, interval="", description=""):
        rows.append({"metric": metric, "value": float(value), "ci_low": float(lo), "ci_high": float(hi),
                     "n": int(len(t) if n is None else n), "interval": interval, "description": description})

    rng = np.random.default_rng(seed)
    boot_how = (f"{lvl} bootstrap, {n_boot} resamples of the images within each prompt (occupation list fixed): "
                "hull of the percentile interval and its median-bias-shifted copy")
    K = _strata_draws(t, by_prompt, n_boot=n_boot, rng=rng) if (n_boot > 0 and len(t)) else None
    k, n = t["n_female"].to_numpy(), t["n"].to_numpy()
    p_null = fair_null_test(successes=k, n=n, n_sim=n_sim, seed=rng) if len(t) else np.nan
    est, lo, hi = _imbalance_ci(K, k, n, ci=ci, p_null=p_null) if len(t) else (np.nan,) * 3
    add("mean_imbalance", est, lo, hi, interval=boot_how + "; lower bound 0 where the fair-null test does not reject",
        description="mean over occupations of |p − ½|, bias-corrected (2|p̂ − ½| − E|p̂* − ½| per occupation, "
        "floored at 0 overall)")
    add("fair_null_p", p_null, interval="", description=f"Monte Carlo exact test ({n_sim} draws) of 'every "
        "occupation's p = ½' on mean |p̂ − ½|: the p-value")
    plug = t["imbalance"].mean() if len(t) else np.nan
    add("mean_imbalance_plugin", plug, description="mean over occupations of |p̂ − ½| as measured (templates pooled); "
        "biased upward by sampling noise, compare with mean_fair_baseline")
    base = t["fair_baseline"].mean() if len(t) else np.nan
    add("mean_fair_baseline", base, description="mean E|p̂ − ½| a perfectly fair model shows at these sample sizes")
    add("mean_excess_imbalance", plug - base,
        description="mean_imbalance_plugin − mean_fair_baseline: unbiased for the true mean imbalance only when the "
        "model is fair (0); for a biased model it understates it (use mean_imbalance)")
    g_all = int(len(t))
    add("n_unfair_holm", int((t["p_fair_holm"] <= alpha).sum()), n=g_all,
        description=f"occupations whose exact binomial test rejects p = ½, Holm-adjusted (family-wise error ≤ "
        f"{100 * alpha:.3g}%)")
    add("mean_kl_uniform", t["kl_uniform"].mean() if len(t) else np.nan,
        description="mean over occupations of KL(p̂ ‖ ½) in nats (plug-in, descriptive)")
    n_f, n_all = t["n_female"].sum(), t["n"].sum()
    lo, hi = wilson_interval(successes=n_f, n=n_all, ci=ci)
    add("pooled_p_female", n_f / n_all if n_all else np.nan, lo, hi, n=n_all, interval=f"{lvl} Wilson",
        description="share labelled female among all labelled audit images")
    if images is not None:
        aud = images[images["kind"] == "audit"]
        m = len(aud)
        for lab in ("abstain", "no_person", "blacked_out"):
            kk = int((aud["label"] == lab).sum())
            lo, hi = wilson_interval(successes=kk, n=m, ci=ci)
            add(f"{lab}_rate", kk / m if m else np.nan, lo, hi, n=m, interval=f"{lvl} Wilson",
                description=f"share of audit images labelled {lab} (not forced into a class)")
        heim = heim_gender_imbalance(images=images)
        if np.isfinite(heim):
            add("heim_gender_imbalance", heim, n=int(aud["prompt_id"].nunique()),
                description="HEIM's way: per prompt the share of all images with p_female ≥ ½ (no gate, no "
                "abstention), |share − ½| averaged over prompts; plug-in, biased upward")
    has_ref = t["p_ref"].notna().to_numpy()
    tr = t[has_ref]
    if len(tr):
        g = len(tr)
        kr, nr = tr["n_female"].to_numpy(), tr["n"].to_numpy()
        s = float((tr["p_ref"] - 0.5).abs().mean())
        p_null_r = fair_null_test(successes=kr, n=nr, n_sim=n_sim, seed=rng) if g < len(t) else p_null
        Kr = K[:, has_ref] if K is not None else None
        est, lo, hi = _imbalance_ci(Kr, kr, nr, ci=ci, p_null=p_null_r)
        add("amplification", est - s, lo - s, hi - s, n=g, interval=boot_how + "; the reference is fixed",
            description="mean over occupations with a reference of |p − ½| − |p_ref − ½| (bias-corrected): "
            "> 0 the model is more skewed than the reference on average, 0 it copies its skew")
        add("mean_abs_gap", tr["gap"].abs().mean(), n=g, description="mean |p̂ − p_ref| (plug-in, descriptive)")
        amp_ok = int((tr["p_ref"] != 0.5).sum())
        add("n_amplified_holm", int(tr["amplified_holm"].sum()), n=amp_ok,
            description="occupations significantly further from ½ than the reference on its side (one-sided exact "
            f"binomial test against p_ref, Holm-adjusted, family-wise error ≤ {100 * alpha:.3g}%)")
        add("n_differs_ref_holm", int((tr["p_differs_ref_holm"] <= alpha).sum()), n=g,
            description="occupations whose exact two-sided test rejects p = p_ref, Holm-adjusted")
        r, pv = pearson(x=tr["p_female"], y=tr["p_ref"])
        add("pearson_r", r, n=g, description=f"Pearson r of p̂ with the reference over this fixed list (descriptive, "
            f"attenuated by sampling noise); p = {pv:.3g}")
        rho, pv = spearman(x=tr["p_female"], y=tr["p_ref"])
        add("spearman_rho", rho, n=g, description=f"Spearman ρ of p̂ with the reference (descriptive); p = {pv:.3g}")
    if t["p_corrected"].notna().any():
        tc = t[t["p_corrected"].notna()]
        add("mean_imbalance_rogan_gladen", (tc["p_corrected"] - 0.5).abs().mean(), n=len(tc),
            description="mean |p̃ − ½| with p̃ the Rogan–Gladen-corrected share (plug-in; per-occupation intervals in "
            "the table)")
    return pd.DataFrame(rows)


@dataclass
class AuditMetrics:
    """All tables of an audit (fairlearn ``MetricFrame``-like): per image, per prompt, per
    occupation, the classifier validation (pooled and per occupation), the reliability table
    and the overall metrics."""

    images: pd.DataFrame
    by_prompt: pd.DataFrame
    by_occupation: pd.DataFrame
    validation: pd.DataFrame
    overall: pd.DataFrame
    sensitivity: float = float("nan")
    specificity: float = float("nan")
    params: dict = field(default_factory=dict)
    validation_by_occupation: pd.DataFrame = field(default_factory=pd.DataFrame)
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)
    thresholds: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every tidy table by name (the CSV files of a report)."""
        return {"images": self.images, "by_prompt": self.by_prompt, "by_occupation": self.by_occupation,
                "validation": self.validation, "validation_by_occupation": self.validation_by_occupation,
                "reliability": self.reliability, "overall": self.overall}


@renamed_kwargs(random_state="seed")
def audit_metrics(
    *, images: pd.DataFrame, ci: float = 0.95, n_boot: int = 1000, seed=None, min_controls: int = 20
) -> AuditMetrics:
    """Every table from a per-image score table (:func:`~diffkit.audit.score.score_images`).

    Sensitivity and specificity come from the control prompts (per occupation where an
    occupation has at least *min_controls* labelled controls of each stated gender, pooled
    otherwise) and drive the Rogan–Gladen columns; without controls those columns are NaN.
    """
    val = classifier_validation(images=images, ci=ci)
    se = float(val.loc[val["stated_gender"] == "female", "accuracy"].iloc[0])
    sp = float(val.loc[val["stated_gender"] == "male", "accuracy"].iloc[0])
    kw = dict(ci=ci, min_controls=min_controls, seed=seed)
    by_prompt = group_table(images=images, by="prompt_id", **kw)
    by_occ = group_table(images=images, by="occupation", **kw)
    overall = overall_table(table=by_occ, images=images, by_prompt=by_prompt, n_boot=n_boot, ci=ci,
                            seed=seed)
    lvl = pct(ci)
    extra = pd.DataFrame([
        {"metric": "sensitivity", "value": se, "ci_low": val["ci_low"].iloc[0], "ci_high": val["ci_high"].iloc[0],
         "n": int(val["n_labelled"].iloc[0]), "interval": f"{lvl} Wilson",
         "description": "P(labelled female | stated female), control prompts pooled (compliance × accuracy)"},
        {"metric": "specificity", "value": sp, "ci_low": val["ci_low"].iloc[1], "ci_high": val["ci_high"].iloc[1],
         "n": int(val["n_labelled"].iloc[1]), "interval": f"{lvl} Wilson",
         "description": "P(labelled male | stated male), control prompts pooled (compliance × accuracy)"},
    ])
    overall = pd.concat([overall, extra], ignore_index=True)
    vocc = controls_by_occupation(images=images, ci=ci)
    if np.isfinite(vocc.attrs.get("p_homogeneous", np.nan)):
        overall = pd.concat([overall, pd.DataFrame([{
            "metric": "se_sp_homogeneity_p", "value": vocc.attrs["p_homogeneous"], "ci_low": np.nan,
            "ci_high": np.nan, "n": len(vocc), "interval": "",
            "description": "χ² test that Se and Sp are the same in every occupation (Bonferroni over the two); small "
            "values mean pooled Se/Sp misdescribe some occupations"}])], ignore_index=True)
    return AuditMetrics(images, by_prompt, by_occ, val, overall, se, sp,
                        {"ci": ci, "n_boot": n_boot, "seed": seed, "min_controls": min_controls},
                        validation_by_occupation=vocc, reliability=reliability_table(images=images, ci=ci),
                        thresholds=suggest_thresholds(images=images))


# --------------------------------------------------------------------------- comparing two runs
class NothingInCommonError(ValueError):
    """Two runs that cannot be compared: they audit no occupation in common."""


def pair_runs(*, a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The audit images two runs share, matched by (prompt, seed): one row per pair with
    ``occupation, prompt, seed, label_a, label_b``. Two runs of specs with the same seed,
    templates and occupations share every image; a mitigation that changes the prompt text
    shares none (then compare them unpaired)."""
    cols = ["prompt", "seed", "occupation", "label"]
    if not all(c in a.columns and c in b.columns for c in cols):
        return pd.DataFrame(columns=["prompt", "seed", "occupation", "label_a", "label_b"])
    aa = a.loc[a["kind"] == "audit", cols]
    bb = b.loc[b["kind"] == "audit", ["prompt", "seed", "label"]]
    return aa.merge(bb, on=["prompt", "seed"], suffixes=("_a", "_b"), how="inner")


def _paired_draws(pairs: pd.DataFrame, occupations: list[str], *, n_boot: int, rng) -> dict[str, np.ndarray]:
    """Resample pairs within each prompt (the same pairs for both runs); per draw and occupation,
    the female and labelled counts of each run: arrays (n_boot + 1, G), row 0 the data."""
    G = len(occupations)
    out = {k: np.zeros((n_boot + 1, G), dtype=int) for k in ("kf_a", "n_a", "kf_b", "n_b")}
    col = {o: j for j, o in enumerate(occupations)}
    for (occ, _), g in pairs.groupby(["occupation", "prompt"], sort=True):
        j = col[occ]
        la, lb = g["label_a"].to_numpy(), g["label_b"].to_numpy()
        fa, ya = (la == "female").astype(int), np.isin(la, ["female", "male"]).astype(int)
        fb, yb = (lb == "female").astype(int), np.isin(lb, ["female", "male"]).astype(int)
        m = len(g)
        idx = np.vstack([np.arange(m)[None], rng.integers(0, m, size=(n_boot, m))])
        out["kf_a"][:, j] += fa[idx].sum(1)
        out["n_a"][:, j] += ya[idx].sum(1)
        out["kf_b"][:, j] += fb[idx].sum(1)
        out["n_b"][:, j] += yb[idx].sum(1)
    return out


@renamed_kwargs(random_state="seed")
def compare_metrics(
    *, a: AuditMetrics, b: AuditMetrics, ci: float = 0.95, n_boot: int = 1000, seed=None,
    paired: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run *b* against run *a* (two models, or before and after a mitigation): differences b − a.

    **Paired** when the runs share audit images, matched by (prompt, seed) (*paired* = None
    decides; True insists): only the shared images count. Per occupation the interval is
    :func:`newcombe_paired_interval` on the pairs labelled in both runs (shifted to the
    difference among all labelled images); overall, a bootstrap that resamples the *pairs*
    within each prompt, so the seed-to-seed variation the two runs share cancels. A run
    compared with itself gives differences of exactly 0, overall intervals of zero width and
    per-occupation intervals that hold only what its concordant pairs cannot rule out. **Independent** otherwise: per occupation Newcombe's interval, overall
    independent within-prompt bootstraps of both runs. Runs with no occupation in common are
    refused (:class:`NothingInCommonError`).

    Returns ``(by_occupation, overall)``. Per occupation: ``occupation, n_a, n_b, p_female_a,
    p_female_b, diff, ci_low, ci_high, imbalance_a, imbalance_b, imbalance_diff`` (bias-corrected),
    ``imbalance_diff_low, imbalance_diff_high``. Overall: ``metric, a, b, diff, ci_low, ci_high``.
    Both carry ``design`` (a sentence saying what is shared) in a column and in ``attrs``.
    """
    occ_a = set(a.by_occupation.loc[a.by_occupation["n"] > 0, "occupation"])
    occ_b = set(b.by_occupation.loc[b.by_occupation["n"] > 0, "occupation"])
    shared = sorted(occ_a & occ_b)
    if not shared:
        raise NothingInCommonError(
            f"the two runs audit no occupation in common (a: {sorted(occ_a)[:6]}, b: {sorted(occ_b)[:6]}); "
            "a comparison needs the same occupations in both. Fix: run both specs with the same "
            "[prompts.attributes] occupation list (ideally the same seed and templates, so the runs pair image by "
            "image)")
    pairs = pair_runs(a=a.images, b=b.images)
    pairs = pairs[pairs["occupation"].isin(shared)]
    if paired is True and pairs.empty:
        raise NothingInCommonError(
            "paired=True but the runs share no (prompt, seed): fix: give both specs the same [audit] seed and "
            "templates, or compare unpaired (paired=None)")
    use_pairs = (paired is not False) and not pairs.empty
    if use_pairs:
        shared = sorted(set(pairs["occupation"]))
    rng = np.random.default_rng(seed)
    a_lvl = (1 - ci) / 2
    lvl = pct(ci)
    ta = a.by_occupation.set_index("occupation").loc[shared]
    tb = b.by_occupation.set_index("occupation").loc[shared]
    if use_pairs:
        n_a_all = int((a.images["kind"] == "audit").sum())
        n_b_all = int((b.images["kind"] == "audit").sum())
        design = (f"paired by prompt and seed: {len(pairs)} image pairs in {len(shared)} occupations "
                  f"(of {n_a_all} audit images in a, {n_b_all} in b); per occupation {lvl} Newcombe paired interval, "
                  f"overall {lvl} percentile bootstrap of the pairs within prompts")
        d = _paired_draws(pairs, shared, n_boot=n_boot, rng=rng)
        with np.errstate(invalid="ignore", divide="ignore"):
            pa, pb = d["kf_a"] / d["n_a"], d["kf_b"] / d["n_b"]
        ia = corrected_imbalance(successes=d["kf_a"], n=d["n_a"])
        ib = corrected_imbalance(successes=d["kf_b"], n=d["n_b"])
        m = pd.DataFrame({"occupation": shared, "n_a": d["n_a"][0], "n_b": d["n_b"][0],
                          "p_female_a": pa[0], "p_female_b": pb[0]})
        diff = pb - pa
        m["diff"] = diff[0]
        # per occupation: Newcombe's paired interval on the pairs labelled in both runs
        both_lab = pairs[pairs["label_a"].isin(["female", "male"]) & pairs["label_b"].isin(["female", "male"])]
        fa, fb = both_lab["label_a"] == "female", both_lab["label_b"] == "female"
        tab = pd.DataFrame({"occupation": both_lab["occupation"], "A": fa & fb, "B": fa & ~fb, "C": ~fa & fb,
                            "D": ~fa & ~fb}).groupby("occupation")[["A", "B", "C", "D"]].sum().reindex(shared,
                                                                                                  fill_value=0)
        _, lo, hi = newcombe_paired_interval(both=tab["A"], a_only=tab["B"], b_only=tab["C"], neither=tab["D"], ci=ci)
        m["n_pairs_labelled"] = tab.sum(axis=1).to_numpy()
        m["discordant_pairs"] = (tab["B"] + tab["C"]).to_numpy()
        # centred on the difference among all labelled images (pairs with an abstention included)
        shift = m["diff"].to_numpy() - ((tab["C"] - tab["B"]) / tab.sum(axis=1).where(tab.sum(axis=1) > 0)).to_numpy()
        m["ci_low"], m["ci_high"] = lo + shift, hi + shift
        mean_a, mean_b = np.nanmean(ia, axis=1), np.nanmean(ib, axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            pool_a = d["kf_a"].sum(1) / d["n_a"].sum(1)
            pool_b = d["kf_b"].sum(1) / d["n_b"].sum(1)
        draws = {"mean_imbalance": (mean_a, mean_b), "pooled_p_female": (pool_a, pool_b)}
    else:
        design = (f"independent: the runs share no (prompt, seed), so their images are compared unpaired; "
                  f"{len(shared)} occupations in common; per occupation {lvl} Newcombe, overall independent "
                  "within-prompt bootstraps")
        m = pd.DataFrame({"occupation": shared, "n_a": ta["n"].to_numpy(), "n_b": tb["n"].to_numpy(),
                          "p_female_a": ta["p_female"].to_numpy(), "p_female_b": tb["p_female"].to_numpy()})
        dd, lo, hi = newcombe_interval(successes_a=ta["n_female"].to_numpy(), n_a=ta["n"].to_numpy(),
                                       successes_b=tb["n_female"].to_numpy(), n_b=tb["n"].to_numpy(), ci=ci)
        m["diff"], m["ci_low"], m["ci_high"] = dd, lo, hi
        ka = _strata_draws(ta.reset_index(), a.by_prompt, n_boot=max(n_boot, 1), rng=rng)
        kb = _strata_draws(tb.reset_index(), b.by_prompt, n_boot=max(n_boot, 1), rng=rng)
        na, nb = ta["n"].to_numpy(), tb["n"].to_numpy()
        ia = np.vstack([corrected_imbalance(successes=ta["n_female"].to_numpy(), n=na),
                        corrected_imbalance(successes=ka, n=np.broadcast_to(na, ka.shape))])
        ib = np.vstack([corrected_imbalance(successes=tb["n_female"].to_numpy(), n=nb),
                        corrected_imbalance(successes=kb, n=np.broadcast_to(nb, kb.shape))])
        pool_a = np.concatenate([[ta["n_female"].sum() / na.sum()], ka.sum(1) / na.sum()])
        pool_b = np.concatenate([[tb["n_female"].sum() / nb.sum()], kb.sum(1) / nb.sum()])
        draws = {"mean_imbalance": (ia.mean(1), ib.mean(1)), "pooled_p_female": (pool_a, pool_b)}
    # both designs: each occupation's bias-corrected imbalance and its change, ia/ib (draw 0 = the data)
    m["imbalance_a"], m["imbalance_b"] = ia[0], ib[0]
    idiff = ib - ia
    m["imbalance_diff"] = idiff[0]
    if n_boot > 0:
        m["imbalance_diff_low"], m["imbalance_diff_high"] = np.nanquantile(idiff[1:], [a_lvl, 1 - a_lvl], axis=0)
    else:
        m["imbalance_diff_low"] = m["imbalance_diff_high"] = np.nan
    m.insert(1, "reference", ta["p_ref"].to_numpy())
    rows = []
    for name, (va, vb) in draws.items():
        dlt = vb - va
        lo, hi = (np.quantile(dlt[1:], [a_lvl, 1 - a_lvl]) if n_boot > 0 else (np.nan, np.nan))
        rows.append({"metric": name, "a": float(va[0]), "b": float(vb[0]), "diff": float(dlt[0]),
                     "ci_low": float(lo), "ci_high": float(hi)})
    if m["reference"].notna().any():
        s = float((m["reference"].dropna() - 0.5).abs().mean())
        ok = m["reference"].notna().to_numpy()
        va, vb = draws["mean_imbalance"]
        if not ok.all():  # amplification averages only occupations with a reference
            va = np.nanmean(ia[:, ok], axis=1)
            vb = np.nanmean(ib[:, ok], axis=1)
        dlt = vb - va
        lo, hi = (np.quantile(dlt[1:], [a_lvl, 1 - a_lvl]) if n_boot > 0 else (np.nan, np.nan))
        rows.append({"metric": "amplification", "a": float(va[0] - s), "b": float(vb[0] - s), "diff": float(dlt[0]),
                     "ci_low": float(lo), "ci_high": float(hi)})
    for metric in ("pearson_r", "abstain_rate", "no_person_rate"):
        va = a.overall.set_index("metric")["value"].get(metric, np.nan)
        vb = b.overall.set_index("metric")["value"].get(metric, np.nan)
        rows.append({"metric": metric, "a": va, "b": vb, "diff": vb - va, "ci_low": np.nan, "ci_high": np.nan})
    overall = pd.DataFrame(rows)
    for frame in (m, overall):
        frame["design"] = "paired" if use_pairs else "independent"
        frame.attrs["design"] = design
        frame.attrs["paired"] = use_pairs
    return m, overall
