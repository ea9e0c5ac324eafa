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

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import InputError
from ._coverage_cells import SIMULATE
from ._coverage_scenarios import REFERENCE, SCENARIOS, SHIPPED_SHARES, TEMPLATES, Scenario
from ._intervals import share_interval, wilson_interval

__all__ = [
    "REFERENCE",
    "SCENARIOS",
    "SHIPPED_SHARES",
    "Scenario",
    "coverage_grid",
    "exact_share_coverage",
    "markdown_table",
    "share_interval_table",
]


def coverage_grid(
    *, n_images: int = 24, reps: int = 2000, seed: int = 2024, ci: float = 0.95, cells: list[str] | None = None
) -> pd.DataFrame:
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
        raise InputError(
            f"n_images={n_images}, reps={reps}: fix: give an even n_images of at least {2 * TEMPLATES} "
            f"({TEMPLATES} templates share them) and reps ≥ 1"
        )
    rows = []
    t_all = time.perf_counter()
    for i, sc in enumerate(SCENARIOS):
        if cells is not None and sc.name not in cells:
            continue
        t0 = time.perf_counter()
        new = SIMULATE[sc.kind](sc, n_images, reps, np.random.default_rng([seed, i]), ci)
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
    lines.append(
        f"{n} labelled images per occupation (10 occupations × 2 templates), {reps:,} simulated audits per "
        f"cell, seed {grid.attrs.get('seed', '–')}; Monte Carlo standard error ±{se:.1f} points at 95% "
        "coverage (smaller for per-occupation rows, pooled over 10 occupations)."
    )
    for section, g in grid.groupby("section", sort=False):
        lines += [
            "",
            f"**{section}**",
            "",
            "| case | interval | true value | coverage | worst occupation | mean width |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in g.iterrows():
            per = r["truth"] == "per occupation"
            worst = f"{100 * r['worst']:.1f}%" if per else ""
            truth = r["truth"] if isinstance(r["truth"], str) else f"{r['truth']:.3f}"
            label, interval = (str(x).replace("|", "\\|") for x in (r["label"], r["interval"]))
            lines.append(
                f"| {label} | {interval} | {truth} | {100 * r['coverage']:.1f}% | {worst} | {r['mean_width']:.3f} |"
            )
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
    return {
        "n": n,
        "min_coverage": float(cov[i]),
        "at_p": float(ps[i]),
        "mean_coverage": float(cov[on_even].mean()),
        "mean_width": float(width.mean()),
    }


def share_interval_table(*, ns=(24, 96), ci: float = 0.95) -> str:
    """Why every share gets Clopper–Pearson: its exact coverage over every p beside Wilson's, as the
    methodology page prints it (:func:`exact_share_coverage`)."""
    lines = [
        "| labelled images | interval | lowest coverage over p (at p) | mean coverage over p | mean width over p |",
        "|---|---|---|---|---|",
    ]
    for n in ns:
        base = None
        for name, f in (("Wilson", wilson_interval), ("Clopper–Pearson (reported)", share_interval)):
            r = exact_share_coverage(n=n, ci=ci, interval=f)
            base = base or r["mean_width"]
            more = "" if f is wilson_interval else f" ({100 * (r['mean_width'] / base - 1):+.1f}%)"
            lines.append(
                f"| {n} | {name} | {100 * r['min_coverage']:.1f}% ({r['at_p']:.4f}) | "
                f"{100 * r['mean_coverage']:.1f}% | {r['mean_width']:.3f}{more} |"
            )
    return "\n".join(lines) + "\n"
