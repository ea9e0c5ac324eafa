"""The per-group table: one row per occupation (or per prompt) with its counts and every per-group metric.

Tidy, one row per group; every column a named quantity (the list is in :func:`group_table`), every
interval at the level *ci*. The estimands behind the columns: ``docs/audit_methodology.md``.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import pandas as pd

from ._amplification import direction_columns
from ._classifier import control_counts
from ._descriptive import kl_to_uniform
from ._imbalance import corrected_imbalance, fair_baseline, imbalance_interval, squared_imbalance
from ._intervals import clopper_pearson_interval, share_interval
from ._rogan_gladen import rogan_gladen_interval
from ._significance import binom_two_sided, holm

__all__ = ["DEFAULT_MIN_CONTROLS", "group_table"]

_LABELS = ("female", "male", "abstain", "no_person", "several_people", "blacked_out")

#: Labelled control images of each stated gender an occupation needs for its own Se and Sp.
DEFAULT_MIN_CONTROLS = 8


def group_table(
    *,
    images: pd.DataFrame,
    by: str | list[str] = "occupation",
    ci: float = 0.95,
    kind: Literal["audit", "control", "all"] = "audit",
    controls: Literal["auto", "pooled", "per_occupation", "none"] = "auto",
    min_controls: int = DEFAULT_MIN_CONTROLS,
    n_draws: int | None = None,
    seed=None,
) -> pd.DataFrame:
    """Per group (``"occupation"``, or ``"prompt_id"`` for per prompt): counts, p̂_female and every
    per-group metric.

    Columns: ``n_images, n_blacked_out`` (every pixel black: a safety checker's output),
    ``n_no_person, n_several_people, n_abstain, n_female, n_male, n`` (labelled);
    ``p_female, ci_low, ci_high`` (Clopper–Pearson at *ci*, :func:`share_interval`: coverage ≥
    *ci* for every p, p̂ = 0 or 1 included); ``sim_low, sim_high`` (simultaneous over
    the G groups of this table: Clopper–Pearson at 1 − (1 − ci)/G, Bonferroni, so all G hold
    their shares together at least *ci* of the time); ``abstain_rate, no_person_rate`` (shares of
    the group's images); ``p_female_if_abstain_male, p_female_if_abstain_female`` (the share if every
    abstention were male / female: the bounds abstentions could move it within); ``imbalance``
    (plug-in |p̂ − ½|, biased upward), ``imbalance_corrected`` (:func:`corrected_imbalance`),
    ``imbalance_low, imbalance_high`` (:func:`imbalance_interval`, Clopper–Pearson-based: coverage ≥
    *ci* for every p), ``sq_imbalance`` (unbiased estimate of (p − ½)², :func:`squared_imbalance`),
    ``fair_baseline`` (E|p̂ − ½| of a fair model at this n), ``excess_imbalance`` (imbalance −
    fair_baseline), ``p_fair`` and ``p_fair_holm`` (exact binomial test of p = ½, Holm-adjusted over
    the table's groups), ``kl_uniform``, ``p_ref``, ``gap`` (p̂ − p_ref), the direction against the
    reference (``amplification`` = s(p̂ − p_ref) with s the side of ½ the reference is on,
    ``direction``; ``p_beyond_ref``, ``p_beyond_ref_holm``, ``amplified_holm``: one-sided exact test
    that p is further from ½ than p_ref on its side; ``p_reversed``, ``p_reversed_holm``,
    ``reversed_holm``: one-sided exact test that p is on the other side of ½; Holm-adjusted, tests
    rejecting at α = 1 − ci), ``p_differs_ref_holm`` (two-sided exact test of p = p_ref, Holm),
    ``p_female_no_abstention`` (Fair Diffusion's and HEIM's way: the share with classifier
    ``p_female`` ≥ ½ among every image past the person gate, no abstention; NaN without scores),
    and Rogan–Gladen ``p_corrected, corrected_low, corrected_high`` with ``se_sp_source``
    (``"occupation"`` or ``"pooled"``), from the control prompts in *images* (*controls*:
    ``"auto"`` uses an occupation's own controls when both stated genders have at least
    *min_controls* labelled images, the pooled ones otherwise; ``"none"`` leaves them NaN). The
    Rogan–Gladen interval is exact (:func:`rogan_gladen_interval`): *n_draws* and *seed* are
    accepted and have no effect.
    """
    by = [by] if isinstance(by, str) else list(by)
    df = images if kind == "all" else images[images["kind"] == kind]
    if df.empty:
        return pd.DataFrame(columns=[*by, "n_images", "n", "p_female", "ci_low", "ci_high"])
    t = _counts(df, by)
    k, n = t["n_female"].to_numpy(), t["n"].to_numpy()
    _share_columns(t, k, n, ci)
    _no_abstention_column(t, df, by)
    _imbalance_columns(t, k, n, ci)
    _reference_columns(t, df, by, k, n, alpha=1 - ci)
    t["p_corrected"] = t["corrected_low"] = t["corrected_high"] = np.nan
    t["se_sp_source"] = None
    has_ctrl = "stated_gender" in images.columns and (images["kind"] == "control").any()
    if controls != "none" and has_ctrl and kind == "audit" and "occupation" in t.columns:
        _rogan_gladen_columns(t, images, k, n, ci=ci, controls=controls, min_controls=min_controls)
    return t


def _counts(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per group: its other key columns, the count of each label, and ``n`` (labelled)."""
    keep = [c for c in ("occupation", "prompt", "template_id", "language") if c in df.columns and c not in by]
    if by == ["prompt_id"]:
        extra = df.groupby("prompt_id", sort=True)[keep].first()
    else:
        extra = pd.DataFrame(index=df.groupby(by, sort=True).size().index)
    lab = pd.crosstab([df[c] for c in by], df["label"]).reindex(columns=list(_LABELS), fill_value=0)
    counts = pd.DataFrame(
        {
            "n_images": lab.sum(axis=1),
            "n_blacked_out": lab["blacked_out"],
            "n_no_person": lab["no_person"],
            "n_several_people": lab["several_people"],
            "n_abstain": lab["abstain"],
            "n_female": lab["female"],
            "n_male": lab["male"],
        }
    )
    counts.index.names = by
    t = extra.join(counts).reset_index() if len(extra.columns) else counts.reset_index()
    t["n"] = t["n_female"] + t["n_male"]
    return t


def _share_columns(t: pd.DataFrame, k: np.ndarray, n: np.ndarray, ci: float) -> None:
    """p̂_female with its pointwise and simultaneous intervals, the rates, the abstention bounds."""
    alpha = 1 - ci
    with np.errstate(invalid="ignore", divide="ignore"):
        t["p_female"] = np.where(t["n"] > 0, t["n_female"] / t["n"].where(t["n"] > 0, 1), np.nan)
        t["ci_low"], t["ci_high"] = share_interval(successes=k, n=n, ci=ci)
        g = max(int((t["n"] > 0).sum()), 1)
        t["sim_low"], t["sim_high"] = clopper_pearson_interval(successes=k, n=n, ci=1 - alpha / g)
        t["abstain_rate"] = np.where(
            t["n_images"] > 0, t["n_abstain"] / t["n_images"].where(t["n_images"] > 0, 1), np.nan
        )
        t["no_person_rate"] = np.where(
            t["n_images"] > 0, t["n_no_person"] / t["n_images"].where(t["n_images"] > 0, 1), np.nan
        )
        m_all = t["n"] + t["n_abstain"]
        t["p_female_if_abstain_male"] = np.where(m_all > 0, t["n_female"] / m_all.where(m_all > 0, 1), np.nan)
        t["p_female_if_abstain_female"] = np.where(
            m_all > 0, (t["n_female"] + t["n_abstain"]) / m_all.where(m_all > 0, 1), np.nan
        )


def _no_abstention_column(t: pd.DataFrame, df: pd.DataFrame, by: list[str]) -> None:
    """Fair Diffusion's way: the share with p_female ≥ ½ among every image past the gate, nobody abstains."""
    if "p_female" in df.columns:
        gated = df[~df["label"].isin(["no_person", "several_people", "blacked_out"])]
        share = (gated["p_female"] >= 0.5).groupby([gated[c] for c in by]).mean()
        t["p_female_no_abstention"] = share.reindex(
            pd.MultiIndex.from_frame(t[by]) if len(by) > 1 else pd.Index(t[by[0]])
        ).to_numpy(dtype=float)
    else:
        t["p_female_no_abstention"] = np.nan


def _imbalance_columns(t: pd.DataFrame, k: np.ndarray, n: np.ndarray, ci: float) -> None:
    """|p̂ − ½| plug-in, corrected, with its interval; (p − ½)²; the fair baseline and test; KL."""
    t["imbalance"] = (t["p_female"] - 0.5).abs()
    t["imbalance_corrected"] = corrected_imbalance(successes=k, n=n)
    t["imbalance_low"], t["imbalance_high"] = imbalance_interval(successes=k, n=n, ci=ci)
    t["sq_imbalance"] = squared_imbalance(successes=k, n=n)
    t["fair_baseline"] = fair_baseline(n=n)
    t["excess_imbalance"] = t["imbalance"] - t["fair_baseline"]
    t["p_fair"] = binom_two_sided(k, n, 0.5)
    t["p_fair_holm"] = holm(t["p_fair"])
    t["kl_uniform"] = kl_to_uniform(p=t["p_female"].to_numpy())


def _reference_columns(
    t: pd.DataFrame, df: pd.DataFrame, by: list[str], k: np.ndarray, n: np.ndarray, *, alpha: float
) -> None:
    """p_ref, the gap to it, the direction against it and the tests of it."""
    if "p_ref" in df.columns:
        ref = df.groupby(by, sort=True)["p_ref"].first().reset_index(drop=True)
        t["p_ref"] = pd.to_numeric(ref, errors="coerce").astype(float).to_numpy()
    else:
        t["p_ref"] = np.nan
    t["gap"] = t["p_female"] - t["p_ref"]
    for name, col in direction_columns(successes=k, n=n, p_ref=t["p_ref"].to_numpy(), alpha=alpha).items():
        t[name] = col
    t["p_differs_ref_holm"] = holm(binom_two_sided(k, n, t["p_ref"].to_numpy()))


def _rogan_gladen_columns(
    t: pd.DataFrame, images: pd.DataFrame, k: np.ndarray, n: np.ndarray, *, ci: float, controls: str, min_controls: int
) -> None:
    """The Rogan–Gladen share per group from the control prompts' Se and Sp (the occupation's own
    where it has enough controls and *controls* allows, the pooled ones otherwise)."""
    per, pooled = control_counts(images)
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
                successes=k,
                n=n,
                se_successes=cnt["se_correct"],
                se_n=cnt["se_n"],
                sp_successes=cnt["sp_correct"],
                sp_n=cnt["sp_n"],
                ci=ci,
            )
        t["p_corrected"], t["corrected_low"], t["corrected_high"] = est, lo, hi
        t["se_sp_source"] = src
