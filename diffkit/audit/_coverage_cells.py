"""The coverage grid's cells: each kind of scenario simulated with the library's own interval
arithmetic, vectorised over the simulated audits (see :mod:`diffkit.audit.coverage`)."""

from __future__ import annotations

import numpy as np

from ._amplification import amplification_interval, reference_sign
from ._change_intervals import (
    independent_change_intervals,
    independent_overall,
    paired_change_intervals,
    paired_overall,
)
from ._coverage_scenarios import REFERENCE, SP, TEMPLATES, Scenario
from ._imbalance import imbalance_interval, mean_imbalance_interval
from ._intervals import clopper_pearson_interval, share_interval
from ._rogan_gladen import rogan_gladen_interval

__all__ = ["SIMULATE"]


def _hits(lo, hi, truth):
    truth = np.asarray(truth, dtype=float)
    return (lo <= truth + 1e-12) & (truth <= hi + 1e-12)


def _row(section, sc, interval, n_images, truth, hits, width, reps, per_group=False, worst=None):
    hits = np.asarray(hits, dtype=float)
    cov = float(hits.mean())
    draws = reps if not per_group else hits.size
    return {
        "section": section,
        "scenario": sc.name,
        "label": sc.label,
        "interval": interval,
        "n_images": n_images,
        "truth": truth,
        "coverage": cov,
        "mc_se": float(np.sqrt(max(cov * (1 - cov), 0.0025 * 0.9975) / draws)),
        "worst": float(worst) if worst is not None else cov,
        "mean_width": float(np.nanmean(width)),
        "min_width": float(np.nanmin(width)),
        "reps": reps,
    }


def _per_group(section, sc, interval, n_images, lo, hi, truth, reps):
    h = _hits(lo, hi, truth)
    return _row(
        section, sc, interval, n_images, "per occupation", h, hi - lo, reps, per_group=True, worst=h.mean(axis=0).min()
    )


def _one_run(sc: Scenario, n_images: int, reps: int, rng, ci: float) -> list[dict]:
    m = n_images // TEMPLATES
    p_t = np.asarray(sc.p)  # (templates, G)
    k = sum(rng.binomial(m, p_t[t], size=(reps, p_t.shape[1])) for t in range(TEMPLATES))
    n = np.full(p_t.shape[1], m * TEMPLATES)
    p = p_t.mean(axis=0)
    theta = float(np.abs(p - 0.5).mean())
    rows = []
    _, lo, hi = mean_imbalance_interval(successes=k, n=n, ci=ci)
    rows.append(_row("one run", sc, "mean imbalance θ", n_images, round(theta, 3), _hits(lo, hi, theta), hi - lo, reps))
    s = reference_sign(REFERENCE)
    amp = float(np.mean(s * (p - REFERENCE)))
    _, lo, hi = amplification_interval(successes=k, n=n, p_ref=REFERENCE, ci=ci)
    rows.append(_row("one run", sc, "amplification A", n_images, round(amp, 3), _hits(lo, hi, amp), hi - lo, reps))
    lo, hi = imbalance_interval(successes=k, n=n, ci=ci)
    rows.append(_per_group("one run", sc, "|p − ½| per occupation", n_images, lo, hi, np.abs(p - 0.5), reps))
    lo, hi = share_interval(successes=k, n=n, ci=ci)
    rows.append(_per_group("one run", sc, "share per occupation (Clopper–Pearson)", n_images, lo, hi, p, reps))
    lo, hi = clopper_pearson_interval(successes=k, n=n, ci=1 - (1 - ci) / len(p))
    joint = _hits(lo, hi, p).all(axis=1)
    rows.append(
        _row("one run", sc, "all shares at once (simultaneous)", n_images, "all 10", joint, (hi - lo).mean(1), reps)
    )
    lo, hi = share_interval(successes=k.sum(1), n=n.sum(), ci=ci)
    rows.append(
        _row(
            "one run",
            sc,
            "pooled share (Clopper–Pearson)",
            n_images,
            round(float(p.mean()), 3),
            _hits(lo, hi, p.mean()),
            hi - lo,
            reps,
        )
    )
    return rows


def _compare(sc: Scenario, n_images: int, reps: int, rng, ci: float) -> list[dict]:
    pa, pb = (np.asarray(x, dtype=float) for x in sc.p)
    G = len(pa)
    truth = {
        "mean_imbalance": np.abs(pb - 0.5).mean() - np.abs(pa - 0.5).mean(),
        "amplification": np.mean(reference_sign(REFERENCE) * (pb - pa)),
        "pooled_p_female": pb.mean() - pa.mean(),
    }
    names = {
        "mean_imbalance": "Δ mean imbalance",
        "amplification": "Δ amplification",
        "pooled_p_female": "Δ pooled share",
    }
    if sc.paired:
        u = rng.random((reps, G, n_images))
        v = np.where(rng.random((reps, G, n_images)) < sc.shared, u, rng.random((reps, G, n_images)))
        fa, fb = u < pa[None, :, None], v < pb[None, :, None]
        tables = np.stack([(fa & fb).sum(-1), (fa & ~fb).sum(-1), (~fa & fb).sum(-1), (~fa & ~fb).sum(-1)], axis=-1)
        out = paired_overall(tables, REFERENCE, ci=ci)
        _, lo, hi, il, ih = paired_change_intervals(tables, ci=ci)
    else:
        k_a = rng.binomial(n_images, pa, size=(reps, G))
        k_b = rng.binomial(n_images, pb, size=(reps, G))
        out = independent_overall(k_a, n_images, k_b, n_images, REFERENCE, ci=ci)
        _, lo, hi, il, ih = independent_change_intervals(k_a, n_images, k_b, n_images, ci=ci)
    rows = [
        _row(
            "two runs",
            sc,
            names[key],
            n_images,
            round(float(truth[key]), 3),
            _hits(o[3], o[4], truth[key]),
            o[4] - o[3],
            reps,
        )
        for key, o in out.items()
    ]
    rows.append(_per_group("two runs", sc, "Δ share per occupation (Newcombe)", n_images, lo, hi, pb - pa, reps))
    rows.append(
        _per_group(
            "two runs", sc, "Δ|p − ½| per occupation", n_images, il, ih, np.abs(pb - 0.5) - np.abs(pa - 0.5), reps
        )
    )
    return rows


def _rogan_gladen(sc: Scenario, n_images: int, reps: int, rng, ci: float) -> list[dict]:
    p = sc.p[0]
    se = np.asarray(sc.se)
    G = len(se)
    q = se * p + (1 - SP) * (1 - p)
    k = rng.binomial(n_images, q, size=(reps, G))
    xs = rng.binomial(sc.controls, se, size=(reps, G))
    xp = rng.binomial(sc.controls, SP, size=(reps, G))
    ms = np.full((reps, G), sc.controls)
    if sc.pooled:  # the auto rule: below min_controls every occupation uses the pooled counts
        xs, xp = np.repeat(xs.sum(1, keepdims=True), G, 1), np.repeat(xp.sum(1, keepdims=True), G, 1)
        ms = ms.sum(1, keepdims=True).repeat(G, 1)
    _, lo, hi = rogan_gladen_interval(
        successes=k, n=n_images, se_successes=xs, se_n=ms, sp_successes=xp, sp_n=ms, ci=ci
    )
    if sc.extra.get("report") == "first":  # the occupation whose Se differs
        lo, hi = lo[:, :1], hi[:, :1]
    return [
        _per_group("Rogan–Gladen", sc, "true share (Rogan–Gladen)", n_images, lo, hi, np.full(lo.shape[1], p), reps)
    ]


#: The simulation of each kind of scenario: (scenario, n_images, reps, rng, ci) → rows of the grid.
SIMULATE = {"run": _one_run, "compare": _compare, "rogan_gladen": _rogan_gladen}
