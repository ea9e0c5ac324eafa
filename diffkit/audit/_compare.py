"""Two runs compared (two models, or a model before and after a mitigation): differences b − a.

==========================  =========================================================================
design                      **paired** when the runs share audit images, matched by (prompt, seed);
                            **independent** otherwise
Δ share, per occupation     Newcombe's paired (1998b) or independent (1998a) interval, method 11
                            (continuity-corrected score limits; method 10 dips to 88% per occupation
                            in a simulated reversal at 24 images)
Δ|p − ½|, per occupation    |p_b − ½| − |p_a − ½| = sgn(d)·clamp(m, −|d|, |d|) with d = p_b − p_a and
                            m = p_a + p_b − 1: the range of that function over the rectangle of
                            Newcombe intervals for d and for m, each at 1 − α/2 (Bonferroni)
Δ mean imbalance            Laber & Murphy's adaptive bracket for θ_b − θ_a, exact (``_adaptive``)
Δ amplification             exact parametric interval of the linear Σ s_g (p_b,g − p_a,g)/G
Δ pooled share              Newcombe on the pooled table of pairs (paired) or counts
==========================  =========================================================================

No interval here is a bootstrap: the same two runs always give the same bounds, and a share of
0 of 24 still varies (each share's sampling distribution is Binomial(n, (k + 1)/(n + 2))), so no
interval has zero width where the data are finite, not even a run compared with itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DiffkitError
from ._change_intervals import (
    imbalance_change_interval,
    independent_change_intervals,
    independent_overall,
    paired_change_intervals,
    paired_overall,
)
from ._imbalance import corrected_imbalance
from ._intervals import pct

__all__ = ["NothingInCommonError", "compare_metrics", "imbalance_change_interval", "pair_runs"]

_LABELLED = ("female", "male")


class NothingInCommonError(DiffkitError, ValueError):
    """Two runs that cannot be compared: they audit no occupation in common, or share no image when
    a paired comparison is asked for."""


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


def _tables(pairs: pd.DataFrame, occupations: list[str]) -> pd.DataFrame:
    """Per occupation, the 2×2 table of pairs labelled in both runs: columns A (both female),
    B (a only), C (b only), D (neither)."""
    both = pairs[pairs["label_a"].isin(_LABELLED) & pairs["label_b"].isin(_LABELLED)]
    fa, fb = both["label_a"] == "female", both["label_b"] == "female"
    return (
        pd.DataFrame({"occupation": both["occupation"], "A": fa & fb, "B": fa & ~fb, "C": ~fa & fb, "D": ~fa & ~fb})
        .groupby("occupation")[["A", "B", "C", "D"]]
        .sum()
        .reindex(occupations, fill_value=0)
        .astype(int)
    )


def compare_metrics(
    *,
    a,
    b,
    ci: float = 0.95,
    n_boot: int = 1000,
    seed=None,
    paired: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run *b* against run *a* (two models, or before and after a mitigation): differences b − a.

    **Paired** when the runs share audit images, matched by (prompt, seed) (*paired* = None
    decides; True insists): only the shared images count. Per occupation, the share's change gets
    :func:`newcombe_paired_interval` (continuity-corrected, method 11) on the pairs labelled in both runs (shifted to the difference
    among all labelled images) and the imbalance's change :func:`imbalance_change_interval`;
    overall, the exact bounds of ``_adaptive`` on the pairs labelled in both runs, so what the
    shared seeds make common cancels. **Independent** otherwise: Newcombe's independent interval
    (method 11)
    and the independent exact bounds. Runs with no occupation in common are refused
    (:class:`NothingInCommonError`). Nothing is resampled: *n_boot* and *seed* (bootstrap settings
    before diffkit 0.3) are accepted and have no effect.

    Returns ``(by_occupation, overall)``. Per occupation: ``occupation, reference, n_a, n_b,
    p_female_a, p_female_b, diff, ci_low, ci_high, imbalance_a, imbalance_b, imbalance_diff``
    (bias-corrected), ``imbalance_diff_low, imbalance_diff_high``. Overall: ``metric, a, b, diff,
    ci_low, ci_high``. Both carry ``design`` (a sentence saying what is shared) in a column and in
    ``attrs``.
    """
    shared = _shared_occupations(a, b)
    pairs = pair_runs(a=a.images, b=b.images)
    pairs = pairs[pairs["occupation"].isin(shared)]
    if paired is True and pairs.empty:
        raise NothingInCommonError(
            "paired=True but the runs share no (prompt, seed): fix: give both specs the same [audit] seed and "
            "templates, or compare unpaired (paired=None)"
        )
    use_pairs = (paired is not False) and not pairs.empty
    if use_pairs:
        m, overall, design = _paired(a, b, pairs, ci)
    else:
        m, overall, design = _independent(a, b, shared, ci)
    rows = [
        {"metric": name, "a": float(va), "b": float(vb), "diff": float(d), "ci_low": float(lo_), "ci_high": float(hi_)}
        for name, (va, vb, d, lo_, hi_) in overall.items()
    ]
    for metric in ("pearson_r", "abstain_rate", "no_person_rate"):
        va = a.overall.set_index("metric")["value"].get(metric, np.nan)
        vb = b.overall.set_index("metric")["value"].get(metric, np.nan)
        rows.append({"metric": metric, "a": va, "b": vb, "diff": vb - va, "ci_low": np.nan, "ci_high": np.nan})
    out = pd.DataFrame(rows)
    for frame in (m, out):
        frame["design"] = "paired" if use_pairs else "independent"
        frame.attrs["design"] = design
        frame.attrs["paired"] = use_pairs
    return m, out


def _shared_occupations(a, b) -> list[str]:
    """The occupations with labelled images in both runs; none is :class:`NothingInCommonError`."""
    occ_a = set(a.by_occupation.loc[a.by_occupation["n"] > 0, "occupation"])
    occ_b = set(b.by_occupation.loc[b.by_occupation["n"] > 0, "occupation"])
    shared = sorted(occ_a & occ_b)
    if not shared:
        raise NothingInCommonError(
            f"the two runs audit no occupation in common (a: {sorted(occ_a)[:6]}, b: {sorted(occ_b)[:6]}); "
            "a comparison needs the same occupations in both. Fix: run both specs with the same "
            "[prompts.attributes] occupation list (ideally the same seed and templates, so the runs pair image by "
            "image)"
        )
    return shared


def _paired(a, b, pairs: pd.DataFrame, ci: float) -> tuple[pd.DataFrame, dict, str]:
    """Per occupation and overall, on the image pairs (same prompt and seed): ``(table, overall, design)``."""
    lvl = pct(ci)
    shared = sorted(set(pairs["occupation"]))
    tab = _tables(pairs, shared)
    shared = [o for o in shared if tab.loc[o].sum() > 0]
    tab = tab.loc[shared]
    ref = a.by_occupation.set_index("occupation").loc[shared]["p_ref"].to_numpy(dtype=float)
    n_a_all = int((a.images["kind"] == "audit").sum())
    n_b_all = int((b.images["kind"] == "audit").sum())
    design = (
        f"paired by prompt and seed: {len(pairs)} image pairs in {len(shared)} occupations "
        f"(of {n_a_all} audit images in a, {n_b_all} in b); per occupation {lvl} Newcombe paired interval (method 11), "
        f"overall {lvl} exact adaptive bounds on the pairs labelled in both runs"
    )
    lab_a = pairs["label_a"].isin(_LABELLED)
    lab_b = pairs["label_b"].isin(_LABELLED)
    occ = pairs["occupation"]
    n_a = lab_a.groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    n_b = lab_b.groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    k_a = (pairs["label_a"] == "female").groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    k_b = (pairs["label_b"] == "female").groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    t4 = tab[["A", "B", "C", "D"]].to_numpy()
    _, lo, hi, il, ih = paired_change_intervals(t4, ci=ci)
    n_both = t4.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = k_a / n_a, k_b / n_b
        # centred on the difference among all labelled images (pairs with an abstention included)
        shift = (pb - pa) - (t4[:, 2] - t4[:, 1]) / np.where(n_both > 0, n_both, np.nan)
    m = pd.DataFrame(
        {
            "occupation": shared,
            "n_a": n_a,
            "n_b": n_b,
            "p_female_a": pa,
            "p_female_b": pb,
            "diff": pb - pa,
            "ci_low": lo + shift,
            "ci_high": hi + shift,
            "n_pairs_labelled": n_both,
            "discordant_pairs": t4[:, 1] + t4[:, 2],
        }
    )
    _imbalance_change_columns(m, k_a, n_a, k_b, n_b, il, ih, ref)
    return m, paired_overall(t4, ref, ci=ci), design


def _independent(a, b, shared: list[str], ci: float) -> tuple[pd.DataFrame, dict, str]:
    """Per occupation and overall, the runs' labelled images compared unpaired: ``(table, overall, design)``."""
    lvl = pct(ci)
    ta = a.by_occupation.set_index("occupation").loc[shared]
    tb = b.by_occupation.set_index("occupation").loc[shared]
    ref = ta["p_ref"].to_numpy(dtype=float)
    design = (
        f"independent: the runs share no (prompt, seed), so their images are compared unpaired; "
        f"{len(shared)} occupations in common; per occupation {lvl} Newcombe (method 11), overall {lvl} exact adaptive "
        "bounds"
    )
    k_a, n_a = ta["n_female"].to_numpy(), ta["n"].to_numpy()
    k_b, n_b = tb["n_female"].to_numpy(), tb["n"].to_numpy()
    dd, lo, hi, il, ih = independent_change_intervals(k_a, n_a, k_b, n_b, ci=ci)
    m = pd.DataFrame(
        {
            "occupation": shared,
            "n_a": n_a,
            "n_b": n_b,
            "p_female_a": ta["p_female"].to_numpy(),
            "p_female_b": tb["p_female"].to_numpy(),
            "diff": dd,
            "ci_low": lo,
            "ci_high": hi,
        }
    )
    _imbalance_change_columns(m, k_a, n_a, k_b, n_b, il, ih, ref)
    return m, independent_overall(k_a, n_a, k_b, n_b, ref, ci=ci), design


def _imbalance_change_columns(m: pd.DataFrame, k_a, n_a, k_b, n_b, il, ih, ref) -> None:
    """The bias-corrected imbalance of each run and its change (interval widened to hold the
    change itself), then the reference beside the occupation."""
    m["imbalance_a"] = corrected_imbalance(successes=k_a, n=n_a)
    m["imbalance_b"] = corrected_imbalance(successes=k_b, n=n_b)
    m["imbalance_diff"] = m["imbalance_b"] - m["imbalance_a"]
    m["imbalance_diff_low"] = np.fmin(il, m["imbalance_diff"].to_numpy())
    m["imbalance_diff_high"] = np.fmax(ih, m["imbalance_diff"].to_numpy())
    m.insert(1, "reference", ref)
