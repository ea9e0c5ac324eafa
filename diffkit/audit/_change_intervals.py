"""The intervals of a change between two runs (see :mod:`diffkit.audit._compare` for the table of
methods): per occupation (the share, |p − ½|) and overall (mean imbalance, amplification, pooled
share), paired on image pairs or independent. All exact; nothing is resampled."""

from __future__ import annotations

import numpy as np

from . import _adaptive
from ._amplification import reference_sign
from ._imbalance import corrected_imbalance
from ._intervals import newcombe_interval, newcombe_paired_interval

__all__ = [
    "imbalance_change_interval",
    "independent_change_intervals",
    "independent_overall",
    "paired_change_intervals",
    "paired_overall",
]


def _phi(d, m):
    """|p_b − ½| − |p_a − ½| written with d = p_b − p_a and m = p_a + p_b − 1."""
    return np.sign(d) * np.clip(m, -np.abs(d), np.abs(d))


def imbalance_change_interval(*, d_low, d_high, m_low, m_high) -> tuple[np.ndarray, np.ndarray]:
    """The range of |p_b − ½| − |p_a − ½| over d ∈ [d_low, d_high], m ∈ [m_low, m_high].

    The function is piecewise linear with breaks on d = 0, m = 0 and m = ±d, so its extremes over
    the rectangle lie on points whose d and m are each an edge of the rectangle or a break value:
    every such point is evaluated. With each interval at 1 − α/2, the range holds the change with
    probability ≥ 1 − α (Bonferroni); it is never a single point where the intervals are not.
    """
    dl, dh, ml, mh = (np.asarray(x, dtype=float)[..., None] for x in (d_low, d_high, m_low, m_high))
    ds = np.clip(np.concatenate([dl, dh, 0 * dl, ml, mh, -ml, -mh], axis=-1), dl, dh)
    ms = np.clip(np.concatenate([ml, mh, 0 * ml, dl, dh, -dl, -dh], axis=-1), ml, mh)
    vals = _phi(ds[..., :, None], ms[..., None, :])
    return vals.min(axis=(-2, -1)), vals.max(axis=(-2, -1))


def paired_change_intervals(tables, ci: float = 0.95):
    """Per occupation from (…, 4) tables of pairs (both female, a only, b only, neither): the
    Newcombe paired interval of p_b − p_a at *ci* and the interval of the imbalance change."""
    t = np.asarray(tables, dtype=float)
    A, B, C, D = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    diff, lo, hi = newcombe_paired_interval(both=A, a_only=B, b_only=C, neither=D, ci=ci, correction=True)
    half = 1 - (1 - ci) / 2
    _, dl, dh = newcombe_paired_interval(both=A, a_only=B, b_only=C, neither=D, ci=half)
    # m = p_a − (1 − p_b): a paired difference with b's labels swapped (its negative, as b′ − a)
    _, nl, nh = newcombe_paired_interval(both=B, a_only=A, b_only=D, neither=C, ci=half)
    il, ih = imbalance_change_interval(d_low=dl, d_high=dh, m_low=-nh, m_high=-nl)
    return diff, lo, hi, il, ih


def independent_change_intervals(k_a, n_a, k_b, n_b, ci: float = 0.95):
    """As :func:`paired_change_intervals` for independent runs (Newcombe's independent interval)."""
    diff, lo, hi = newcombe_interval(successes_a=k_a, n_a=n_a, successes_b=k_b, n_b=n_b, ci=ci, correction=True)
    half = 1 - (1 - ci) / 2
    _, dl, dh = newcombe_interval(successes_a=k_a, n_a=n_a, successes_b=k_b, n_b=n_b, ci=half)
    _, ml, mh = newcombe_interval(
        successes_a=np.asarray(n_a) - np.asarray(k_a), n_a=n_a, successes_b=k_b, n_b=n_b, ci=half
    )  # p_b − (1 − p_a) = m
    il, ih = imbalance_change_interval(d_low=dl, d_high=dh, m_low=ml, m_high=mh)
    return diff, lo, hi, il, ih


def paired_overall(tables, p_ref, ci: float = 0.95) -> dict[str, tuple]:
    """Δ mean imbalance, Δ amplification and Δ pooled share from (…, G, 4) tables of pairs
    labelled in both runs: {metric: (a, b, diff, low, high)}, each entry (…)-shaped."""
    t = np.asarray(tables, dtype=np.int64)
    N = t.sum(-1)
    k_a, k_b = t[..., 0] + t[..., 1], t[..., 0] + t[..., 2]
    G = t.shape[-2]
    out = {}
    ia = np.mean(corrected_imbalance(successes=k_a, n=N), axis=-1)
    ib = np.mean(corrected_imbalance(successes=k_b, n=N), axis=-1)

    def theta_bounds(tt):
        nn = tt.sum(-1)
        ka, kb = tt[..., 0] + tt[..., 1], tt[..., 0] + tt[..., 2]
        plug = np.mean(np.abs(kb / nn - 0.5) - np.abs(ka / nn - 0.5), axis=-1)
        return _adaptive.bracket(plug, _adaptive.paired_terms(tt), G, ci)

    lo, hi = _adaptive.chunked(theta_bounds, t, rows=40) if t.ndim > 2 else theta_bounds(t)
    est = ib - ia
    out["mean_imbalance"] = (ia, ib, est, np.minimum(lo, est), np.maximum(hi, est))
    r = np.asarray(p_ref, dtype=float)  # (G,): the same reference for every leading index
    ok = reference_sign(r) != 0
    if ok.any():
        tt = t[..., ok, :]
        ss = np.broadcast_to(reference_sign(r)[ok], tt.shape[:-1])
        Ga = int(ok.sum())

        def amp_bounds(tt, ss):
            nn = tt.sum(-1)
            ka, kb = tt[..., 0] + tt[..., 1], tt[..., 0] + tt[..., 2]
            e = np.mean(ss * (kb - ka) / nn, axis=-1)
            lo, hi = _adaptive.bracket(e, _adaptive.paired_terms(tt, sign=ss), Ga, ci)
            return e, lo, hi

        e, lo, hi = _adaptive.chunked(amp_bounds, tt, ss, rows=40) if t.ndim > 2 else amp_bounds(tt, ss)
        nn = tt.sum(-1)
        va = np.mean(ss * ((tt[..., 0] + tt[..., 1]) / nn - r[ok]), axis=-1)
        out["amplification"] = (va, va + e, e, np.minimum(lo, e), np.maximum(hi, e))
    pooled = t.sum(-2)
    d, lo, hi = newcombe_paired_interval(
        both=pooled[..., 0], a_only=pooled[..., 1], b_only=pooled[..., 2], neither=pooled[..., 3], ci=ci
    )
    n_all = pooled.sum(-1)
    out["pooled_p_female"] = (
        (pooled[..., 0] + pooled[..., 1]) / n_all,
        (pooled[..., 0] + pooled[..., 2]) / n_all,
        d,
        lo,
        hi,
    )
    return out


def independent_overall(k_a, n_a, k_b, n_b, p_ref, ci: float = 0.95) -> dict[str, tuple]:
    """As :func:`paired_overall` for independent runs, from each run's per-occupation counts (…, G)."""
    k_a, n_a, k_b, n_b = (np.asarray(x, dtype=np.int64) for x in (k_a, n_a, k_b, n_b))
    n_a, n_b = np.broadcast_to(n_a, k_a.shape), np.broadcast_to(n_b, k_b.shape)
    G = k_a.shape[-1]
    out = {}
    ia = np.mean(corrected_imbalance(successes=k_a, n=n_a), axis=-1)
    ib = np.mean(corrected_imbalance(successes=k_b, n=n_b), axis=-1)

    def theta_bounds(ka, na, kb, nb):
        plug = np.mean(np.abs(kb / nb - 0.5), axis=-1) - np.mean(np.abs(ka / na - 0.5), axis=-1)
        return _adaptive.bracket(plug, _adaptive.independent_terms(ka, na, kb, nb), G, ci)

    args = (k_a, n_a, k_b, n_b)
    lo, hi = _adaptive.chunked(theta_bounds, *args, rows=400) if k_a.ndim > 1 else theta_bounds(*args)
    est = ib - ia
    out["mean_imbalance"] = (ia, ib, est, np.minimum(lo, est), np.maximum(hi, est))
    r = np.asarray(p_ref, dtype=float)  # (G,)
    ok = reference_sign(r) != 0
    if ok.any():
        ss = np.broadcast_to(reference_sign(r)[ok], k_a[..., ok].shape)
        Ga = int(ok.sum())

        def amp_bounds(ka, na, kb, nb, ss):
            e = np.mean(ss * (kb / nb - ka / na), axis=-1)
            lo, hi = _adaptive.bracket(e, _adaptive.independent_terms(ka, na, kb, nb, sign=ss), Ga, ci)
            return e, lo, hi

        args = (k_a[..., ok], n_a[..., ok], k_b[..., ok], n_b[..., ok], ss)
        e, lo, hi = _adaptive.chunked(amp_bounds, *args, rows=400) if k_a.ndim > 1 else amp_bounds(*args)
        va = np.mean(ss * (k_a[..., ok] / n_a[..., ok] - r[ok]), axis=-1)
        out["amplification"] = (va, va + e, e, np.minimum(lo, e), np.maximum(hi, e))
    d, lo, hi = newcombe_interval(
        successes_a=k_a.sum(-1), n_a=n_a.sum(-1), successes_b=k_b.sum(-1), n_b=n_b.sum(-1), ci=ci
    )
    out["pooled_p_female"] = (k_a.sum(-1) / n_a.sum(-1), k_b.sum(-1) / n_b.sum(-1), d, lo, hi)
    return out
