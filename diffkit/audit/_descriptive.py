"""Descriptive figures shown without an interval: KL to uniform, correlations, HEIM's own metric.

Their sampling behaviour is not what a reader would assume (over a fixed list of 10 occupations,
attenuated by sampling noise), so the report prints them as description, never as inference.
Pearson's r and Spearman's ρ are scipy's (``scipy.stats.pearsonr``, ``scipy.stats.spearmanr``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["heim_gender_imbalance", "kl_to_uniform", "pearson", "spearman"]


def kl_to_uniform(*, p) -> np.ndarray:
    """KL(Bernoulli(p) ‖ Bernoulli(½)) in nats: p ln 2p + (1−p) ln 2(1−p), with 0 ln 0 = 0."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(2 * p), 0.0)
        b = np.where(p < 1, (1 - p) * np.log(2 * (1 - p)), 0.0)
    return np.where(np.isnan(p), np.nan, a + b)


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return x[ok], y[ok]


def pearson(*, x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (``scipy.stats.pearsonr``); NaN with fewer than three
    finite pairs or a constant variable."""
    x, y = _finite_pairs(x, y)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = stats.pearsonr(x, y)
    return float(res.statistic), float(res.pvalue)


def spearman(*, x, y) -> tuple[float, float]:
    """Spearman's ρ (Pearson's r of average ranks) and its p-value (``scipy.stats.spearmanr``)."""
    x, y = _finite_pairs(x, y)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


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
