"""The audit report's figures (matplotlib, built without pyplot): one function per figure."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._intervals import pct
from ._overall import AuditMetrics

__all__ = ["audit_figures", "ci_of", "error_bars", "plain_labels"]


def plain_labels(values: Any) -> list[str]:
    """Labels from the spec (occupations) as matplotlib text: ``$`` escaped, so a name such as
    ``"$\\frac{a$"`` is drawn as written instead of failing as TeX after the whole run."""
    return [str(v).replace("$", r"\$") for v in values]


def error_bars(centre, lo, hi) -> np.ndarray:
    """Error-bar lengths (2, N), never negative (rounding can put a bound a hair past the centre)."""
    c, lo, hi = (np.asarray(x, dtype=float) for x in (centre, lo, hi))
    return np.nan_to_num(np.maximum(np.stack([c - lo, hi - c]), 0.0))


def ci_of(m: AuditMetrics) -> float:
    """The confidence level the metrics were computed at."""
    return float(m.params.get("ci", 0.95))


def audit_figures(m: AuditMetrics, language: str | None = None) -> dict[str, Any]:
    """The report's figures as ``matplotlib.figure.Figure`` objects, for notebooks.

    Keys: ``"per_occupation"`` (p̂ with pointwise Clopper–Pearson and simultaneous intervals, the
    Rogan–Gladen estimate with its interval, the abstention bounds, the reference and the
    published Fair Diffusion share where it has the occupation), ``"scatter"`` (generated p̂
    against the reference share), ``"direction"`` (an arrow per occupation from the reference share
    to the generated one, coloured amplified, reversed or neither by the Holm-adjusted one-sided
    tests), ``"imbalance"`` (|p̂ − ½| per prompt against the exact
    fair-model distribution) and, with control prompts, ``"reliability"`` (the classifier's
    ``p_female`` against the share of control images whose prompt said "woman"). Built without
    pyplot, so they change no global state; Jupyter shows each as a PNG. Labels carry the
    audit's confidence level and are in *language* (default: :func:`diffkit.get_language`).
    """
    import seaborn as sns

    from ..plots import show_figures_in_notebooks
    from ._report_html import catalogue
    from .published import published_overlay

    show_figures_in_notebooks()  # Jupyter shows each returned Figure as a PNG

    _ = catalogue(language).gettext
    lvl = pct(ci_of(m))
    t = m.by_occupation[m.by_occupation["n"] > 0].copy()
    out: dict[str, Any] = {}
    if t.empty:
        return out
    order = t.sort_values("p_ref" if t["p_ref"].notna().any() else "p_female", na_position="last")
    pub = published_overlay(order, ci=ci_of(m)).set_index("occupation")
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        out["per_occupation"] = _per_occupation(order, pub, lvl, _)
        tr = t[t["p_ref"].notna()]
        if len(tr):
            out["scatter"] = _scatter(tr, lvl, _)
            out["direction"] = _direction(tr.sort_values("p_ref"), lvl, _, catalogue(language).pgettext)
        bp = m.by_prompt[m.by_prompt["n"] > 0]
        if len(bp):
            out["imbalance"] = _imbalance(bp, _)
        rel = m.reliability
        if isinstance(rel, pd.DataFrame) and len(rel) and (rel["n"] > 0).any():
            out["reliability"] = _reliability(rel[rel["n"] > 0], lvl, _)
    return out


def _subplots(figsize):
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots()


def _per_occupation(order: pd.DataFrame, pub: pd.DataFrame, lvl: str, _) -> Any:
    """1. Per-occupation p̂ with its intervals against the reference."""
    fig, ax = _subplots(figsize=(7.5, 0.5 * len(order) + 1.6))
    y = np.arange(len(order))
    if "sim_low" in order:
        ax.errorbar(
            order["p_female"],
            y,
            xerr=error_bars(order["p_female"], order["sim_low"], order["sim_high"]),
            fmt="none",
            ecolor="C0",
            alpha=0.35,
            lw=5,
            label=_("simultaneous {lvl} (all occupations)").format(lvl=lvl),
        )
    ax.errorbar(
        order["p_female"],
        y,
        xerr=error_bars(order["p_female"], order["ci_low"], order["ci_high"]),
        fmt="o",
        color="C0",
        capsize=3,
        label=_("generated p̂ ({lvl} Clopper–Pearson)").format(lvl=lvl),
    )
    if "p_female_if_abstain_male" in order and (order["n_abstain"] > 0).any():
        ax.hlines(
            y - 0.25,
            order["p_female_if_abstain_male"],
            order["p_female_if_abstain_female"],
            color="grey",
            lw=2,
            label=_("if every abstention were male … female"),
        )
    if order["p_corrected"].notna().any():
        ax.errorbar(
            order["p_corrected"],
            y + 0.25,
            xerr=error_bars(order["p_corrected"], order["corrected_low"], order["corrected_high"]),
            fmt="s",
            color="C2",
            ms=4,
            capsize=2,
            lw=1,
            label=_("Rogan–Gladen ({lvl}, Se/Sp uncertain)").format(lvl=lvl),
        )
    if order["p_ref"].notna().any():
        ax.plot(order["p_ref"], y, "x", color="C3", ms=9, mew=2, label=_("reference (BLS)"))
    if len(pub):
        py = np.array([list(order["occupation"]).index(o) for o in pub.index])
        ax.plot(
            pub["published_p_female"],
            py,
            "D",
            color="C4",
            ms=5,
            mfc="none",
            label=_("Fair Diffusion, SD 1.5, FairFace (published)"),
        )
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(y, plain_labels(order["occupation"]))
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(_("share labelled female"))
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / max(len(order), 1)), ncol=2, fontsize=8, frameon=False
    )
    return fig


def _scatter(tr: pd.DataFrame, lvl: str, _) -> Any:
    """2. Generated versus reference."""
    import seaborn as sns

    fig, ax = _subplots(figsize=(5, 5))
    sns.scatterplot(data=tr, x="p_ref", y="p_female", ax=ax, s=50)
    ax.errorbar(
        tr["p_ref"],
        tr["p_female"],
        yerr=error_bars(tr["p_female"], tr["ci_low"], tr["ci_high"]),
        fmt="none",
        ecolor="C0",
        alpha=0.5,
    )
    for _i, r in tr.iterrows():
        ax.annotate(
            plain_labels([r["occupation"]])[0],
            (r["p_ref"], r["p_female"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label=_("generated = reference"))
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_("reference women-share"))
    ax.set_ylabel(_("generated p̂ (labelled female, {lvl} Clopper–Pearson)").format(lvl=lvl))
    ax.legend(fontsize=8)
    return fig


def _direction(tr: pd.DataFrame, lvl: str, _, pgettext) -> Any:
    """2b. Direction: from the reference to the generated share, amplified / reversed / neither."""
    fig, ax = _subplots(figsize=(7.5, 0.45 * len(tr) + 1.6))
    y = np.arange(len(tr))
    amp = tr["amplified_holm"].fillna(False).astype(bool).to_numpy()
    rev = tr["reversed_holm"].fillna(False).astype(bool).to_numpy() if "reversed_holm" in tr else 0 * amp
    colour = np.where(amp, "C3", np.where(rev, "C4", "0.4"))
    for yy, (r0, p1, c) in enumerate(zip(tr["p_ref"], tr["p_female"], colour)):
        ax.annotate(
            "",
            xy=(p1, yy),
            xytext=(r0, yy),
            arrowprops={"arrowstyle": "->", "color": c, "lw": 2, "shrinkA": 0, "shrinkB": 0},
        )
    ax.errorbar(
        tr["p_female"],
        y,
        xerr=error_bars(tr["p_female"], tr["ci_low"], tr["ci_high"]),
        fmt="none",
        ecolor="0.3",
        alpha=0.5,
        capsize=2,
        lw=1,
    )
    ax.plot(tr["p_ref"], y, "x", color="0.2", ms=7, label=_("reference"))
    for c, lab in (
        ("C3", _("amplified (Holm)")),
        ("C4", _("reversed (Holm)")),
        ("0.4", pgettext("direction", "neither")),
    ):
        ax.plot([], [], color=c, lw=2, label=lab)
    ax.grid(axis="y", visible=False)  # the arrows are the horizontal lines here
    ax.axvline(0.5, color="grey", lw=1, ls="--")
    ax.set_yticks(y, tr["occupation"].astype(str))
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(
        _("share labelled female: reference → generated ({lvl} Clopper–Pearson on the generated)").format(lvl=lvl)
    )
    ax.legend(
        loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / max(len(tr), 1)), ncol=4, fontsize=8, frameon=False
    )
    return fig


def _imbalance(bp: pd.DataFrame, _) -> Any:
    """3. Imbalance per prompt against the fair-model distribution for the median n."""
    import seaborn as sns
    from scipy import stats

    n_med = int(np.median(bp["n"]))
    k = np.arange(n_med + 1)
    vals = np.abs(k / n_med - 0.5)
    pmf = pd.Series(stats.binom.pmf(k, n_med, 0.5)).groupby(np.round(vals, 9)).sum()
    fig, ax = _subplots(figsize=(7, 3.5))
    sns.histplot(
        bp["imbalance"],
        bins=np.linspace(0, 0.5, 11),
        stat="probability",
        ax=ax,
        color="C0",
        label=_("generated, per prompt ({n} prompts)").format(n=len(bp)),
    )
    ax.vlines(
        pmf.index, 0, pmf.values, color="C3", lw=3, alpha=0.7, label=_("fair model, n = {n} (exact)").format(n=n_med)
    )
    ax.axvline(float(bp["fair_baseline"].mean()), color="C3", ls="--", lw=1, label=_("fair-model E|p̂ − ½|"))
    ax.axvline(float(bp["imbalance"].mean()), color="C0", ls="--", lw=1, label=_("generated mean (plug-in)"))
    ax.set_xlabel(_("|p̂ − ½| (gender imbalance)"))
    ax.legend(fontsize=8)
    return fig


def _reliability(r: pd.DataFrame, lvl: str, _) -> Any:
    """4. Reliability diagram on the control prompts."""
    fig, ax = _subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label=_("calibrated"))
    ax.errorbar(
        r["mean_p_female"],
        r["share_stated_female"],
        yerr=error_bars(r["share_stated_female"], r["ci_low"], r["ci_high"]),
        fmt="o",
        color="C0",
        capsize=3,
        label=_("control images ({lvl} Clopper–Pearson)").format(lvl=lvl),
    )
    mid = r[(r["bin_low"] >= 0.1) & (r["bin_high"] <= 0.9)]
    if mid["n"].sum() == 0:
        ax.text(
            0.5,
            0.5,
            _(
                "no control image has 0.1 < p_female < 0.9:\nthe probabilities saturate, so an "
                "abstention\nthreshold on them cannot act"
            ),
            ha="center",
            va="center",
            fontsize=8,
            color="C3",
            transform=ax.transAxes,
        )
    for _i, row in r.iterrows():
        ax.annotate(
            f"n={int(row['n'])}",
            (row["mean_p_female"], row["share_stated_female"]),
            fontsize=7,
            xytext=(4, -10),
            textcoords="offset points",
        )
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_("classifier p_female (mean in bin)"))
    ax.set_ylabel(_("share of control prompts stating 'female'"))
    ax.legend(fontsize=8)
    return fig
