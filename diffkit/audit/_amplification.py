"""Bias amplification against a reference, with its direction: amplified, reversed, or neither.

Zhao et al. (2017, "Men also like shopping: reducing gender bias amplification using
corpus-level constraints", EMNLP, §2) call a model's output biased towards the gender g* that the
training data favour for an activity, and measure amplification as the mean, over activities, of
the model's share of g* minus the training data's. Here the reference r_g plays the training
data's role and s_g = sign(r_g − ½) names its majority gender (+1 women, −1 men):

    A = (1/G) Σ_g s_g (p_g − r_g)

> 0: on average the model leans further towards each occupation's reference majority than the
reference does; 0: it copies the reference; < 0: it leans less far, or **reverses** the skew (p_g
on the other side of ½). A is linear in the shares, so it has no kink: its interval is the exact
parametric one of ``_adaptive`` with every occupation's sign known. Occupations whose reference is
exactly ½ (no majority) or missing are left out, as Zhao et al. leave out balanced activities.

Per occupation, two one-sided exact binomial tests, each Holm-adjusted over the occupations
with a reference: **amplified** (p beyond r on its side: H₁ s(p − r) > 0) and **reversed** (p on
the other side of ½: H₁ s(p − ½) < 0). A reversal is never counted as amplification nor as
copying, however the shares' distances from ½ compare.
"""

from __future__ import annotations

import numpy as np

from . import _adaptive
from ._significance import binom_beyond, binom_reversed, holm

__all__ = ["amplification_interval", "direction_columns"]


def reference_sign(p_ref) -> np.ndarray:
    """s_g = +1 where the reference's majority is women (r > ½), −1 where men, 0 where none or missing."""
    r = np.asarray(p_ref, dtype=float)
    return np.where(np.isfinite(r), np.sign(r - 0.5), 0.0).astype(int)


def amplification_interval(*, successes, n, p_ref, ci: float = 0.95):
    """Directional amplification A = mean_g s_g(p_g − r_g) over the groups (last axis) with a
    reference other than ½: (estimate, interval low, high), NaN when there are none.

    The estimate is unbiased (linear in the shares); the interval is exact given each share's
    Binomial(n, (k + 1)/(n + 2)) sampling distribution (``_adaptive``). May carry leading dimensions.
    """
    k = np.asarray(successes)
    n = np.broadcast_to(np.asarray(n), k.shape)
    s = np.broadcast_to(reference_sign(p_ref), k.shape)
    r = np.broadcast_to(np.asarray(p_ref, dtype=float), k.shape)
    if k.ndim == 1:
        ok = (s != 0) & (n > 0)
        k, n, s, r = k[ok].astype(np.int64), n[ok].astype(np.int64), s[ok], r[ok]
        if len(k) == 0:
            return np.nan, np.nan, np.nan
    G = k.shape[-1]

    def bounds(kk, nn, ss, rr):
        est = np.mean(ss * (kk / nn - rr), axis=-1)
        lo, hi = _adaptive.bracket(est, _adaptive.run_terms(kk, nn, sign=ss), G, ci)
        return est, lo, hi

    est, lo, hi = _adaptive.chunked(bounds, k, n, s, r, rows=400) if k.ndim > 1 else bounds(k, n, s, r)
    lo, hi = np.minimum(lo, est), np.maximum(hi, est)
    if np.ndim(est) == 0:
        return float(est), float(lo), float(hi)
    return est, lo, hi


def direction_columns(*, successes, n, p_ref, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Per occupation: ``amplification`` = s(p̂ − r), ``direction`` (from the estimates:
    ``"amplified"``, ``"reversed"``, ``"less skewed"``, ``"copies"`` or ``""`` without a reference),
    ``p_beyond_ref``, ``p_beyond_ref_holm``, ``amplified_holm``, ``p_reversed``,
    ``p_reversed_holm``, ``reversed_holm`` (the Holm-adjusted tests reject at *alpha*)."""
    k = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    r = np.asarray(p_ref, dtype=float)
    s = reference_sign(r)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.where(n > 0, k / np.where(n > 0, n, 1), np.nan)
    amp = np.where(s != 0, s * (p - r), np.nan)
    side = np.sign(p - 0.5)
    direction = np.select(
        [(s == 0) | ~np.isfinite(p), side == -s, np.abs(p - 0.5) > np.abs(r - 0.5), np.isclose(p, r)],
        ["", "reversed", "amplified", "copies"],
        "less skewed",
    )
    beyond = binom_beyond(k, n, r)
    reversed_ = binom_reversed(k, n, r)
    beyond_holm, reversed_holm = holm(beyond), holm(reversed_)
    return {
        "amplification": amp,
        "direction": direction,
        "p_beyond_ref": beyond,
        "p_beyond_ref_holm": beyond_holm,
        "amplified_holm": beyond_holm <= alpha,
        "p_reversed": reversed_,
        "p_reversed_holm": reversed_holm,
        "reversed_holm": reversed_holm <= alpha,
    }
