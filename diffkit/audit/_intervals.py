"""Confidence intervals for one share, for the difference of two shares, and how p-values print.

==========================  =========================================================================
Wilson                      (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)             (Wilson 1927)
Clopper–Pearson             Beta quantiles: coverage ≥ the level for every p     (Clopper & Pearson 1934)
                            :func:`share_interval`, the interval of every share the audit reports
Newcombe, independent       hybrid score interval for p_b − p_a from two Wilson intervals
                            (Newcombe 1998a, Stat. Med. 17:873–890, method 10)
Newcombe, paired            the same with the correlation φ of the 2×2 table of pairs
                            (Newcombe 1998b, Stat. Med. 17:2635–2650, method 10)
==========================  =========================================================================

**One rule for shares**: every share the audit reports (an occupation's p̂, the pooled share,
the abstention and no-person rates, sensitivity and specificity, the calibration bins, the
published overlay) gets :func:`share_interval`, Clopper–Pearson at the report's level. Its
coverage is at least the level for every true p, the ends included; Wilson's oscillates with p
and dips far below it near 0 and 1 (Brown, Cai & DasGupta 2001, Stat. Sci. 16:101–133), where
audits of skewed occupations sit. Wilson stays here for the score limits Newcombe's
differences are built from.

All functions take keywords only, broadcast over arrays and return NaN where there is nothing to
estimate (n = 0). Checked against statsmodels in ``tests/audit/test_metrics.py``.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from ..errors import InputError

__all__ = [
    "clopper_pearson_interval",
    "format_p_value",
    "newcombe_interval",
    "newcombe_paired_interval",
    "pct",
    "share_interval",
    "wilson_interval",
    "z_quantile",
]


def z_quantile(ci: float) -> float:
    """The two-sided normal quantile of level *ci*; refuses a level outside (0, 1)."""
    if not 0 < ci < 1:
        raise InputError(f"ci must be in (0, 1), got {ci}; fix: give a confidence level such as 0.95")
    return float(stats.norm.ppf(0.5 + ci / 2))


def pct(ci: float) -> str:
    """A confidence level as the report writes it: 0.95 → ``"95%"``, 0.9 → ``"90%"``, 0.995 → ``"99.5%"``."""
    return f"{100 * ci:.10g}%"


def format_p_value(p: float, *, n_sim: int | None = None) -> str:
    """A p-value as the report prints it.

    Exact p-values: three significant digits, or scientific notation below 10⁻⁴ (never a
    rounded "0.0001" for a p-value of 10⁻⁹). A Monte Carlo p-value (1 + #{T* ≥ T}) / (1 + *n_sim*)
    cannot go below 1/(1 + *n_sim*): at that floor it prints as ``"≤ 1/10,001"`` (no simulated
    statistic was as extreme), not as a number that looks measured.

    >>> format_p_value(0.0123), format_p_value(3.2e-9), format_p_value(1 / 10_001, n_sim=10_000)
    ('0.0123', '3.2e-09', '≤ 1/10,001')
    """
    if p is None or not np.isfinite(p):
        return "–"
    if n_sim is not None and p <= (1 + 1e-9) / (n_sim + 1):
        return f"≤ 1/{n_sim + 1:,}"
    if p < 1e-4:
        return f"{p:.1e}"
    return f"{p:.3g}"


def wilson_interval(*, successes, n, ci: float = 0.95, correction: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (Wilson 1927); NaN where n = 0.

    Its coverage oscillates around the nominal level with p (Brown, Cai & DasGupta 2001, Stat.
    Sci. 16:101–133): about the level on average, with dips below it for some p near 0 or 1.
    *correction* gives the continuity-corrected score interval, the inversion of the score test
    |x − np| − ½ ≤ z√(np(1 − p)) (Newcombe 1998a, method 4), whose coverage stays above the level.

    >>> lo, hi = wilson_interval(successes=8, n=10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.4902, 0.9433)
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = z_quantile(ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        if correction:
            d = 2 * (n + z**2)
            lo = (2 * n * p + z**2 - 1 - z * np.sqrt(np.maximum(z**2 - 2 - 1 / n + 4 * p * (n * (1 - p) + 1), 0))) / d
            hi = (2 * n * p + z**2 + 1 + z * np.sqrt(np.maximum(z**2 + 2 - 1 / n + 4 * p * (n * (1 - p) - 1), 0))) / d
            lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        else:
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
    z_quantile(ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(x > 0, stats.beta.ppf(a / 2, x, n - x + 1), 0.0)
        hi = np.where(x < n, stats.beta.ppf(1 - a / 2, x + 1, n - x), 1.0)
    return np.where(n > 0, lo, np.nan), np.where(n > 0, hi, np.nan)


def share_interval(*, successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The interval of every share the audit reports: :func:`clopper_pearson_interval` at *ci*.

    One rule, in one place, so that the per-occupation table, the pooled share and rates, the
    classifier's Se, Sp and calibration bins, the published overlay, the coverage grid and the
    sample-size planner all use, and simulate, the same interval.

    >>> lo, hi = share_interval(successes=0, n=24)
    >>> float(lo), round(float(hi), 4)
    (0.0, 0.1425)
    """
    return clopper_pearson_interval(successes=successes, n=n, ci=ci)


def newcombe_interval(*, successes_a, n_a, successes_b, n_b, ci: float = 0.95, correction: bool = False):
    """Newcombe's (1998a, method 10) hybrid score interval for p_b − p_a, from Wilson intervals.

    Returns ``(difference, low, high)``; tested against statsmodels'
    ``confint_proportions_2indep(method="newcomb")``. With *correction*, from continuity-corrected
    score limits (his method 11).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        pa = np.asarray(successes_a, float) / np.asarray(n_a, float)
        pb = np.asarray(successes_b, float) / np.asarray(n_b, float)
    la, ua = wilson_interval(successes=successes_a, n=n_a, ci=ci, correction=correction)
    lb, ub = wilson_interval(successes=successes_b, n=n_b, ci=ci, correction=correction)
    d = pb - pa
    lo = d - np.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    hi = d + np.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return d, lo, hi


def newcombe_paired_interval(*, both, a_only, b_only, neither, ci: float = 0.95, correction: bool = False):
    """Newcombe's (1998b, method 10) interval for the paired difference p_b − p_a.

    From the 2×2 table of pairs (*both* labelled female in a and b, *a_only*, *b_only*,
    *neither*): p_a = (both + a_only)/N, p_b = (both + b_only)/N, their Wilson intervals
    (l, u), and the correlation φ = (both·neither − a_only·b_only)/√(product of the margins)
    with Newcombe's continuity correction (φ* = max(AD − BC − N/2, 0)/√… when AD > BC; 0 when
    a margin is empty)::

        L = Δ − √((p_b − l_b)² − 2φ(p_b − l_b)(u_a − p_a) + (u_a − p_a)²)
        U = Δ + √((u_b − p_b)² − 2φ(u_b − p_b)(p_a − l_a) + (p_a − l_a)²)

    With *correction*, l and u are continuity-corrected score limits (his method 11), which holds
    its level where method 10 dips (a reversal, with pairs that can differ in one direction only).

    Newcombe RG, "Improved confidence intervals for the difference between binomial
    proportions based on paired data", Stat. Med. 17:2635–2650 (1998).
    """
    A, B, C, D = (np.asarray(x, dtype=float) for x in (both, a_only, b_only, neither))
    n = A + B + C + D
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = (A + B) / n, (A + C) / n
        la, ua = wilson_interval(successes=A + B, n=n, ci=ci, correction=correction)
        lb, ub = wilson_interval(successes=A + C, n=n, ci=ci, correction=correction)
        den = np.sqrt((A + B) * (C + D) * (A + C) * (B + D))
        num = A * D - B * C
        num = np.where(num > 0, np.maximum(num - n / 2, 0), num)
        phi = np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)
        d = pb - pa
        lo = d - np.sqrt(np.maximum((pb - lb) ** 2 - 2 * phi * (pb - lb) * (ua - pa) + (ua - pa) ** 2, 0))
        hi = d + np.sqrt(np.maximum((ub - pb) ** 2 - 2 * phi * (ub - pb) * (pa - la) + (pa - la) ** 2, 0))
    return d, lo, hi
