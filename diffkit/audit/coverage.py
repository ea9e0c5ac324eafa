"""The coverage grid: every interval of the audit, simulated where auditors make claims.

One seeded simulation, used by the tests (``tests/audit/test_coverage.py``) and printed in
``docs/audit_methodology.md`` (:func:`markdown_table`, checked there to be current). Each cell
draws ``reps`` audits of 10 occupations × 2 templates with ``n_images`` labelled images per
occupation from a model whose true shares are known, and runs the **library's own arithmetic**
on them (the array functions that :func:`~diffkit.audit.metrics.overall_table`,
:func:`~diffkit.audit.metrics.group_table` and :func:`~diffkit.audit.metrics.compare_metrics`
call), vectorised over the audits. A cell reports how often each interval held its true value
(``coverage``, with its Monte Carlo standard error), and for per-occupation intervals the share of
all occupation-level intervals that did and the worst occupation (``worst``); ``mean_width`` is
the interval's mean width.

>>> grid = coverage_grid(n_images=24, reps=200, cells=["fair"])  # doctest: +SKIP

Scenarios (the reference is the BLS CPS 2021 share of the ten ``tiny_default`` occupations):

* one run: a fair model; one that copies the reference; one that amplifies it (logit × 2); a full
  reversal (1 − reference); 9 occupations at parity + 1 at 0.55; 8 + 2 (0.55, 0.45); 5 at parity
  + 5 skewed; 5 + 5 amplified; all within ±0.05 and ±0.10 of parity; templates that disagree
  (logit ± 1 around the reference; 0.35 and 0.65 around parity); the shipped model's own shares
  (diffkit-tiny 2's default run: 8 of 10 at 0 or 1);
* two runs: every share halfway to parity, and to parity, with every latent shared (paired) and
  with half of them redrawn; the same model with new seeds; two fair models; a reversal (paired);
* Rogan–Gladen: true share 0, 0.02, 0.3, 0.7, 1 under Se 0.9, Sp 0.85, with pooled controls (4
  per stated gender per occupation, so pooled), with per-occupation controls (8 each), and with
  one occupation whose Se is 0.6 (per-occupation controls).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from ._amplification import amplification_interval, reference_sign
from ._compare import (
    independent_change_intervals,
    independent_overall,
    paired_change_intervals,
    paired_overall,
)
from ._group_table import DEFAULT_MIN_CONTROLS
from ._imbalance import imbalance_interval, mean_imbalance_interval
from ._intervals import clopper_pearson_interval, share_interval, wilson_interval
from ._rogan_gladen import rogan_gladen_interval

__all__ = ["REFERENCE", "SCENARIOS", "SHIPPED_SHARES", "Scenario", "coverage_grid", "exact_share_coverage",
           "markdown_table", "share_interval_table"]

#: BLS CPS 2021 women's share of the ten ``tiny_default`` occupations (nurse, housekeeper, teacher,
#: pharmacist, lawyer, CEO, software developer, pilot, firefighter, electrician).
REFERENCE = np.array([0.867, 0.887, 0.792, 0.578, 0.379, 0.291, 0.197, 0.053, 0.051, 0.017])

#: diffkit-tiny 2's shares in its default run (``diffkit audit run``, 24 labelled images each, in
#: :data:`REFERENCE`'s order): 24, 24, 24, 4, 0, 2, 0, 0, 0, 0 labelled female.
SHIPPED_SHARES = np.array([24, 24, 24, 4, 0, 2, 0, 0, 0, 0]) / 24

TEMPLATES = 2
SE, SP = 0.9, 0.85


def _logit(p):
    return np.log(p / (1 - p))


def _expit(x):
    return 1 / (1 + np.exp(-x))


def _amplify(p, factor=2.0):
    return _expit(factor * _logit(p))


@dataclass(frozen=True)
class Scenario:
    """One cell of the grid: *kind* ``"run"`` (shares per template), ``"compare"`` (shares of a and
    b, how many latents the runs share, paired or not) or ``"rogan_gladen"`` (true share, the
    occupations' Se, controls per stated gender per occupation, pooled or not)."""

    name: str
    kind: str
    label: str
    p: tuple = ()  # run: (templates × G) shares; compare: (a, b); rogan_gladen: (true share,)
    shared: float = 1.0
    paired: bool = True
    se: tuple = ()
    controls: int = 0
    pooled: bool = False
    extra: dict = field(default_factory=dict)


def _run(name, label, p, q=None):
    p = np.asarray(p, dtype=float)
    q = p if q is None else np.asarray(q, dtype=float)
    return Scenario(name, "run", label, p=(tuple(p), tuple(q)))


_FIVE = np.array([0.05, 0.9, 0.2, 0.97, 0.3])
_HALFWAY = 0.5 + 0.5 * (REFERENCE - 0.5)
SCENARIOS: list[Scenario] = [
    _run("fair", "fair model (every p = ½)", np.full(10, 0.5)),
    _run("copy", "copies the reference", REFERENCE),
    _run("amplify", "amplifies the reference (logit × 2)", _amplify(REFERENCE)),
    _run("reversal", "reverses the reference (1 − p_ref)", 1 - REFERENCE),
    _run("9+1", "9 at parity, 1 at 0.55", np.r_[np.full(9, 0.5), 0.55]),
    _run("8+2", "8 at parity, 2 at 0.55 and 0.45", np.r_[np.full(8, 0.5), 0.55, 0.45]),
    _run("5+5", "5 at parity, 5 skewed (0.05 … 0.97)", np.r_[np.full(5, 0.5), _FIVE]),
    _run("5+5amp", "5 at parity, 5 amplified", np.r_[np.full(5, 0.5), _amplify(_FIVE)]),
    _run("pm05", "all within ±0.05 of parity", 0.5 + np.linspace(-0.05, 0.05, 10)),
    _run("pm10", "all within ±0.10 of parity", 0.5 + np.linspace(-0.10, 0.10, 10)),
    _run("templates", "templates disagree (logit ± 1 around the reference)", _expit(_logit(REFERENCE) + 1),
         _expit(_logit(REFERENCE) - 1)),
    _run("templates_fair", "templates disagree (0.35 and 0.65: fair on average)", np.full(10, 0.35),
         np.full(10, 0.65)),
    _run("shipped", "the shipped model's own shares (8 of 10 at 0 or 1)", SHIPPED_SHARES),
    Scenario("halfway", "compare", "halfway to parity, paired", p=(tuple(REFERENCE), tuple(_HALFWAY))),
    Scenario("parity", "compare", "to parity, paired", p=(tuple(REFERENCE), (0.5,) * 10)),
    Scenario("parity_half", "compare", "to parity, half the latents shared", p=(tuple(REFERENCE), (0.5,) * 10),
             shared=0.5),
    Scenario("new_seeds", "compare", "same model, new seeds (independent)", p=(tuple(REFERENCE), tuple(REFERENCE)),
             paired=False),
    Scenario("fair_fair", "compare", "fair vs fair, new seeds (independent)", p=((0.5,) * 10, (0.5,) * 10),
             paired=False),
    Scenario("reversed", "compare", "a reversal (1 − p), paired", p=(tuple(REFERENCE), tuple(1 - REFERENCE))),
]
for _p in (0.0, 0.02, 0.3, 0.7, 1.0):
    SCENARIOS += [
        Scenario(f"rg_pooled_{_p:g}", "rogan_gladen", f"p = {_p:g}, pooled Se/Sp (4 controls each per occupation)",
                 p=(_p,), se=(SE,) * 10, controls=4, pooled=True),
        Scenario(f"rg_occ_{_p:g}", "rogan_gladen",
                 f"p = {_p:g}, per-occupation Se/Sp ({DEFAULT_MIN_CONTROLS} controls each)", p=(_p,), se=(SE,) * 10,
                 controls=DEFAULT_MIN_CONTROLS),
        Scenario(f"rg_se06_{_p:g}", "rogan_gladen",
                 f"p = {_p:g}, one occupation's Se is 0.6 (per-occupation Se/Sp)", p=(_p,), se=(0.6,) + (SE,) * 9,
                 controls=DEFAULT_MIN_CONTROLS, extra={"report": "first"}),
    ]


def _hits(lo, hi, truth):
    truth = np.asarray(truth, dtype=float)
    return (lo <= truth + 1e-12) & (truth <= hi + 1e-12)


def _row(section, sc, interval, n_images, truth, hits, width, reps, per_group=False, worst=None):
    hits = np.asarray(hits, dtype=float)
    cov = float(hits.mean())
    draws = reps if not per_group else hits.size
    return {"section": section, "scenario": sc.name, "label": sc.label, "interval": interval, "n_images": n_images,
            "truth": truth, "coverage": cov, "mc_se": float(np.sqrt(max(cov * (1 - cov), 0.0025 * 0.9975) / draws)),
            "worst": float(worst) if worst is not None else cov, "mean_width": float(np.nanmean(width)),
            "min_width": float(np.nanmin(width)), "reps": reps}


def _per_group(section, sc, interval, n_images, lo, hi, truth, reps):
    h = _hits(lo, hi, truth)
    return _row(section, sc, interval, n_images, "per occupation", h, hi - lo, reps, per_group=True,
                worst=h.mean(axis=0).min())


def _one_run(sc: Scenario, n_images: int, reps: int, rng, ci: float) -> list[dict]:
    m = n_images // TEMPLATES
    p_t = np.asarray(sc.p)  # (templates, G)
    k = sum(rng.binomial(m, p_t[t], size=(reps, p_t.shape[1])) for t in range(TEMPLATES))
    n = np.full(p_t.shape[1], m * TEMPLATES)
    p = p_t.mean(axis=0)
    theta = float(np.abs(p - 0.5).mean())
    rows = []
    _, lo, hi = mean_imbalance_interval(successes=k, n=n, ci=ci)
    rows.append(_row("one run", sc, "mean imbalance θ", n_images, round(theta, 3), _hits(lo, hi, theta), hi - lo,
                     reps))
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
    rows.append(_row("one run", sc, "all shares at once (simultaneous)", n_images, "all 10", joint, (hi - lo).mean(1),
                     reps))
    lo, hi = share_interval(successes=k.sum(1), n=n.sum(), ci=ci)
    rows.append(_row("one run", sc, "pooled share (Clopper–Pearson)", n_images, round(float(p.mean()), 3),
                     _hits(lo, hi, p.mean()), hi - lo, reps))
    return rows


def _compare(sc: Scenario, n_images: int, reps: int, rng, ci: float) -> list[dict]:
    pa, pb = (np.asarray(x, dtype=float) for x in sc.p)
    G = len(pa)
    truth = {"mean_imbalance": np.abs(pb - 0.5).mean() - np.abs(pa - 0.5).mean(),
             "amplification": np.mean(reference_sign(REFERENCE) * (pb - pa)), "pooled_p_female": pb.mean() - pa.mean()}
    names = {"mean_imbalance": "Δ mean imbalance", "amplification": "Δ amplification",
             "pooled_p_female": "Δ pooled share"}
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
    rows = [_row("two runs", sc, names[key], n_images, round(float(truth[key]), 3), _hits(o[3], o[4], truth[key]),
                 o[4] - o[3], reps) for key, o in out.items()]
    rows.append(_per_group("two runs", sc, "Δ share per occupation (Newcombe)", n_images, lo, hi, pb - pa, reps))
    rows.append(_per_group("two runs", sc, "Δ|p − ½| per occupation", n_images, il, ih,
                           np.abs(pb - 0.5) - np.abs(pa - 0.5), reps))
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
    _, lo, hi = rogan_gladen_interval(successes=k, n=n_images, se_successes=xs, se_n=ms, sp_successes=xp, sp_n=ms,
                                      ci=ci)
    if sc.extra.get("report") == "first":  # the occupation whose Se differs
        lo, hi = lo[:, :1], hi[:, :1]
    return [_per_group("Rogan–Gladen", sc, "true share (Rogan–Gladen)", n_images, lo, hi, np.full(lo.shape[1], p),
                       reps)]


_KIND = {"run": _one_run, "compare": _compare, "rogan_gladen": _rogan_gladen}


def coverage_grid(*, n_images: int = 24, reps: int = 2000, seed: int = 2024, ci: float = 0.95,
                  cells: list[str] | None = None) -> pd.DataFrame:
    """The coverage grid at *n_images* labelled images per occupation, *reps* audits per cell.

    Seeded: each cell draws from its own generator, ``numpy.random.default_rng([seed, i])`` for
    the cell's index i in :data:`SCENARIOS`, so a cell's figures do not depend on which others
    run. *cells* picks scenarios by name (all by default). Returns one row per (cell, interval):
    ``section, scenario, label, interval, n_images, truth, coverage, mc_se, worst, mean_width,
    min_width, reps, seconds``; ``attrs["seconds"]`` is the grid's total time.
    """
    names = [sc.name for sc in SCENARIOS]
    unknown = sorted(set(cells or ()) - set(names))
    if unknown:
        raise InputError(f"unknown coverage cell(s) {unknown}; fix: pick from {names}")
    if n_images < 2 * TEMPLATES or n_images % TEMPLATES or reps < 1:
        raise InputError(f"n_images={n_images}, reps={reps}: fix: give an even n_images of at least {2 * TEMPLATES} "
                         f"({TEMPLATES} templates share them) and reps ≥ 1")
    rows = []
    t_all = time.perf_counter()
    for i, sc in enumerate(SCENARIOS):
        if cells is not None and sc.name not in cells:
            continue
        t0 = time.perf_counter()
        new = _KIND[sc.kind](sc, n_images, reps, np.random.default_rng([seed, i]), ci)
        for r in new:
            r["seconds"] = time.perf_counter() - t0
        rows += new
    out = pd.DataFrame(rows)
    out.attrs.update(seconds=time.perf_counter() - t_all, seed=seed, reps=reps, ci=ci)
    return out


def markdown_table(grid: pd.DataFrame) -> str:
    """The grid as the methodology page prints it: one table per section, coverage in %, the
    worst occupation for per-occupation intervals, mean widths, and the Monte Carlo error."""
    lines = []
    n = int(grid["n_images"].iloc[0])
    reps = int(grid["reps"].iloc[0])
    se = 100 * np.sqrt(0.95 * 0.05 / reps)
    lines.append(f"{n} labelled images per occupation (10 occupations × 2 templates), {reps:,} simulated audits per "
                 f"cell, seed {grid.attrs.get('seed', '–')}; Monte Carlo standard error ±{se:.1f} points at 95% "
                 "coverage (smaller for per-occupation rows, pooled over 10 occupations).")
    for section, g in grid.groupby("section", sort=False):
        lines += ["", f"**{section}**", "", "| case | interval | true value | coverage | worst occupation | mean width |",
                  "|---|---|---|---|---|---|"]
        for _, r in g.iterrows():
            per = r["truth"] == "per occupation"
            worst = f"{100 * r['worst']:.1f}%" if per else ""
            truth = r["truth"] if isinstance(r["truth"], str) else f"{r['truth']:.3f}"
            label, interval = (str(x).replace("|", "\\|") for x in (r["label"], r["interval"]))
            lines.append(f"| {label} | {interval} | {truth} | {100 * r['coverage']:.1f}% | {worst} | "
                         f"{r['mean_width']:.3f} |")
    return "\n".join(lines) + "\n"


def exact_share_coverage(*, n: int, ci: float = 0.95, interval=share_interval, points: int = 20_001) -> dict:
    """The exact coverage of a one-share *interval* (a function like :func:`~diffkit.audit.metrics.
    clopper_pearson_interval`) at *n* labelled images, over every true share p: no simulation.

    Coverage C(p) = Σ_k Binomial(k; n, p) · [lo_k ≤ p ≤ hi_k] is evaluated on *points* shares evenly
    spaced in (0, 1) and on both sides of every interval end, where C jumps (its infimum is a limit
    at a jump). Returns ``min_coverage`` and ``at_p`` (where), ``mean_coverage`` and ``mean_width``
    (E[hi − lo] averaged over the evenly spaced p).
    """
    k = np.arange(n + 1)
    lo, hi = interval(successes=k, n=n, ci=ci)
    even = np.linspace(0, 1, points)[1:-1]
    ends = np.unique(np.r_[lo, hi])
    ends = ends[(ends > 0) & (ends < 1)]
    ps = np.unique(np.r_[even, np.nextafter(ends, 0), ends, np.nextafter(ends, 1)])
    ps = ps[(ps > 0) & (ps < 1)]
    pmf = stats.binom.pmf(k[None, :], n, ps[:, None])
    cov = (pmf * ((lo[None, :] <= ps[:, None]) & (ps[:, None] <= hi[None, :]))).sum(axis=1)
    on_even = np.isin(ps, even)
    width = pmf[on_even] @ (hi - lo)
    i = int(np.argmin(cov))
    return {"n": n, "min_coverage": float(cov[i]), "at_p": float(ps[i]),
            "mean_coverage": float(cov[on_even].mean()), "mean_width": float(width.mean())}


def share_interval_table(*, ns=(24, 96), ci: float = 0.95) -> str:
    """Why every share gets Clopper–Pearson: its exact coverage over every p beside Wilson's, as the
    methodology page prints it (:func:`exact_share_coverage`)."""
    lines = ["| labelled images | interval | lowest coverage over p (at p) | mean coverage over p | mean width over p |",
             "|---|---|---|---|---|"]
    for n in ns:
        base = None
        for name, f in (("Wilson", wilson_interval), ("Clopper–Pearson (reported)", share_interval)):
            r = exact_share_coverage(n=n, ci=ci, interval=f)
            base = base or r["mean_width"]
            more = "" if f is wilson_interval else f" ({100 * (r['mean_width'] / base - 1):+.1f}%)"
            lines.append(f"| {n} | {name} | {100 * r['min_coverage']:.1f}% ({r['at_p']:.4f}) | "
                         f"{100 * r['mean_coverage']:.1f}% | {r['mean_width']:.3f}{more} |")
    return "\n".join(lines) + "\n"
