"""Checking an audit of diffkit-tiny against the truth: the pictogram world's pixel oracle.

Only possible on the pictogram world, where every image can be read exactly; this is how diffkit
validates its own audit pipeline end to end, image by image. It is also the one place where the
control prompts' two ingredients can be told apart: whether the *generator* drew the stated
gender (compliance) and whether the *classifier* read what was drawn (accuracy).

The oracle reads the gender twice, from two cues no judge was built on: the width of the figure just
above the knees (``width``) and the height at which the legs begin, the dress's hem (``hem``;
:mod:`diffkit.tiny.oracle`). By default (``cue="both"``) an image's truth is what both readings say, and
an image where they disagree is ``undetermined`` and left out of every comparison (counted in
``attrs``), so a judge is never scored against one rule's mistake. What the oracle validates: that the
judge reads the silhouette the generator drew, image by image. It does not validate the generator's
bias against the world (the reference does that), nor a judge on any other model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import group_table

__all__ = ["DEFAULT_EPSILON", "cohen_kappa", "correction_check", "correction_figure", "oracle_check", "oracle_labels"]

_LABEL = {"woman": "female", "man": "male"}

#: The stated tolerance for |p̂_judge − p̂_oracle| per occupation in :func:`oracle_check`.
DEFAULT_EPSILON = 0.15


def _reading_label(r: Any, cue: str) -> str:
    if r.figures is not None and r.figures >= 2:
        return "several_people"
    width = _LABEL.get(r.gender, "no_person")
    hem = _LABEL.get(r.hem_gender, "no_person")
    if cue == "width":
        return width
    if cue == "hem":
        return hem
    return width if width == hem else "undetermined"


def oracle_labels(result: Any, *, cue: str = "both") -> pd.Series:
    """The oracle's label (``female``, ``male``, ``no_person``, ``several_people``, or with ``cue="both"``
    ``undetermined`` where its two readings disagree) for every image of a run on diffkit-tiny,
    aligned with ``result.images``. *cue*: ``"both"``, ``"width"`` or ``"hem"`` (see the module doc)."""
    from PIL import Image

    from ..tiny import oracle

    if cue not in ("both", "width", "hem"):
        from ..errors import InputError

        raise InputError(f"cue must be 'both', 'width' or 'hem', got {cue!r}")
    labels = []
    for p in result.images["path"]:
        with Image.open(result.run_dir / p) as im:
            labels.append(_reading_label(oracle.read(im), cue))
    return pd.Series(labels, index=result.images.index, name="oracle_label")


def cohen_kappa(a, b) -> float:
    """Cohen's (1960) κ of two label sequences: (p_o − p_e) / (1 − p_e); NaN when p_e = 1.

    >>> cohen_kappa(["f", "f", "m", "m"], ["f", "m", "m", "m"])
    0.5
    """
    a, b = np.asarray(a, dtype=object), np.asarray(b, dtype=object)
    if len(a) == 0:
        return float("nan")
    cats = sorted(set(a) | set(b))
    po = float(np.mean(a == b))
    pe = float(sum(np.mean(a == c) * np.mean(b == c) for c in cats))
    return (po - pe) / (1 - pe) if pe < 1 else float("nan")


def oracle_check(result: Any, *, epsilon: float = DEFAULT_EPSILON, cue: str = "both") -> pd.DataFrame:
    """The audit judged against the oracle, image by image.

    *result* is what :func:`diffkit.audit.run_audit` returns for a run on diffkit-tiny. Returns
    the per-occupation table, with the image-level results in ``attrs``:

    * the table, per occupation: ``occupation, n, p_female, ci_low, ci_high, p_ref`` (the audit's), the
      oracle's share of the same images ``oracle_p_female``, ``inside`` (the audit's interval
      holds it), ``abs_diff`` = |p̂_judge − p̂_oracle| and ``within_epsilon`` (≤ *epsilon*),
      ``agreement`` (share of the occupation's images the judge and the oracle label alike);
    * ``attrs["confusion"]``: counts of (oracle label, judge label) over every audit image;
    * ``attrs["kappa"]``: Cohen's κ of judge and oracle over the audit images;
    * ``attrs["controls"]``, per stated gender: ``n``, ``compliance`` (the oracle sees the stated gender:
      the generator's part), ``accuracy`` (the judge agrees with the oracle: the classifier's
      part) and ``judge_matches_stated`` (what the controls alone measure: their product, roughly);
    * ``attrs["epsilon"]``: the tolerance used; ``attrs["undetermined"]``: images whose two readings
      disagreed (left out of every figure above), ``attrs["cue"]``.
    """
    images = result.images.copy()
    images["oracle_label"] = oracle_labels(result, cue=cue).to_numpy()
    undetermined = int((images["oracle_label"] == "undetermined").sum())
    images = images[images["oracle_label"] != "undetermined"]
    audit = images[images["kind"] == "audit"]
    truth = images.assign(label=images["oracle_label"])
    oracle_share = group_table(images=truth, by="occupation", controls="none").set_index("occupation")["p_female"]
    occ = result.by_occupation.set_index("occupation")
    cols = [c for c in ("n", "p_female", "ci_low", "ci_high", "p_ref") if c in occ]
    out = occ[cols].assign(oracle_p_female=oracle_share)
    out["inside"] = (out["ci_low"] <= out["oracle_p_female"]) & (out["oracle_p_female"] <= out["ci_high"])
    out["abs_diff"] = (out["p_female"] - out["oracle_p_female"]).abs()
    out["within_epsilon"] = out["abs_diff"] <= epsilon
    out["agreement"] = (audit["label"] == audit["oracle_label"]).groupby(audit["occupation"]).mean()
    confusion = pd.crosstab(audit["oracle_label"].rename("oracle"), audit["label"].rename("judge"))
    ctrl = images[images["kind"] == "control"]
    rows = []
    for g, sub in ctrl.groupby("stated_gender", sort=True):
        drawn = sub["oracle_label"] == g
        read = sub["label"] == sub["oracle_label"]
        rows.append(
            {
                "stated_gender": g,
                "n": len(sub),
                "compliance": float(drawn.mean()),
                "accuracy": float(read.mean()),
                "judge_matches_stated": float((sub["label"] == g).mean()),
            }
        )
    table = out.reset_index()
    table.attrs.update(
        confusion=confusion,
        kappa=cohen_kappa(audit["label"], audit["oracle_label"]),
        epsilon=epsilon,
        controls=pd.DataFrame(rows),
        undetermined=undetermined,
        cue=cue,
    )
    return table


def correction_check(result: Any, *, cue: str = "both") -> pd.DataFrame:
    """Raw share, Rogan–Gladen-corrected share and the oracle's truth, per occupation, for the same images.

    Columns: ``occupation, n, p_female, ci_low, ci_high`` (the judge's raw share and its interval),
    ``p_corrected, corrected_low, corrected_high`` (Rogan–Gladen with the controls' Se and Sp, the
    interval carrying their uncertainty), ``oracle_p_female`` (the oracle's share of the occupation's
    audit images it could read), ``raw_covers``, ``corrected_covers`` (each interval holds the oracle's
    share), ``raw_error``, ``corrected_error`` (distance to it). With a judge that errs (the weaker
    tiny judge, ``classifier.model = "tiny-weak"``) the raw intervals miss where the true share is near 0
    or 1 and the corrected ones hold it; with a perfect judge the two agree.
    ``attrs``: ``sensitivity``, ``specificity`` (pooled, from the controls), ``undetermined``.
    """
    images = result.images.copy()
    images["oracle_label"] = oracle_labels(result, cue=cue).to_numpy()
    truth = images[(images["kind"] == "audit") & images["oracle_label"].isin(["female", "male"])]
    oracle_share = (truth["oracle_label"] == "female").groupby(truth["occupation"]).mean()
    occ = result.by_occupation.set_index("occupation")
    cols = ["n", "p_female", "ci_low", "ci_high", "p_corrected", "corrected_low", "corrected_high"]
    out = occ[[c for c in cols if c in occ]].copy()
    out["oracle_p_female"] = oracle_share
    out["raw_covers"] = (out["ci_low"] <= out["oracle_p_female"]) & (out["oracle_p_female"] <= out["ci_high"])
    out["corrected_covers"] = (out["corrected_low"] <= out["oracle_p_female"]) & (
        out["oracle_p_female"] <= out["corrected_high"]
    )
    out["raw_error"] = (out["p_female"] - out["oracle_p_female"]).abs()
    out["corrected_error"] = (out["p_corrected"] - out["oracle_p_female"]).abs()
    ov = result.overall.set_index("metric")["value"]
    table = out.reset_index()
    table.attrs.update(
        sensitivity=float(ov.get("sensitivity", np.nan)),
        specificity=float(ov.get("specificity", np.nan)),
        undetermined=int((images["oracle_label"] == "undetermined").sum()),
        cue=cue,
    )
    return table


def correction_figure(table: pd.DataFrame, *, ci: float = 0.95) -> Any:
    """:func:`correction_check`'s table as a figure: per occupation the raw share and the
    Rogan–Gladen share with their intervals, and the oracle's truth (a ``matplotlib.figure.Figure``,
    drawn without pyplot)."""
    from matplotlib.figure import Figure

    from ..i18n import gettext as _
    from ..plots import show_figures_in_notebooks
    from ._report_figures import error_bars, plain_labels
    from .metrics import pct

    show_figures_in_notebooks()
    t = table.reset_index(drop=True)
    y = np.arange(len(t))
    fig = Figure(figsize=(7.5, 0.45 * len(t) + 1.6))
    ax = fig.subplots()
    lvl = pct(ci)
    ax.errorbar(
        t["p_female"],
        y - 0.15,
        xerr=error_bars(t["p_female"], t["ci_low"], t["ci_high"]),
        fmt="o",
        color="C0",
        capsize=3,
        label=_("raw share ({lvl} Clopper–Pearson)").format(lvl=lvl),
    )
    ax.errorbar(
        t["p_corrected"],
        y + 0.15,
        xerr=error_bars(t["p_corrected"], t["corrected_low"], t["corrected_high"]),
        fmt="s",
        color="C2",
        capsize=3,
        label=_("Rogan–Gladen ({lvl}, Se/Sp uncertain)").format(lvl=lvl),
    )
    ax.plot(t["oracle_p_female"], y, "x", color="C3", ms=9, mew=2, label=_("oracle's truth (the same images)"))
    ax.set_yticks(y, plain_labels(t["occupation"]))
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel(_("share female"))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(t), 1)), ncol=2, fontsize=8, frameon=False)
    return fig
