"""The overall table (one row per estimand over the occupations) and every table of an audit together.

:func:`overall_table` turns a :func:`~diffkit.audit.metrics.group_table` into the headline
figures; :func:`audit_metrics` builds every table from the per-image scores (fairlearn's
``MetricFrame`` is the model: tidy frames, keyword-only arguments). The words for each row come from
``_glossary``; the arithmetic from the concept modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._amplification import amplification_interval, reference_sign
from ._classifier import (
    classifier_validation,
    controls_by_occupation,
    reliability_table,
    suggest_thresholds,
)
from ._descriptive import heim_gender_imbalance, pearson, spearman
from ._glossary import describe
from ._group_table import DEFAULT_MIN_CONTROLS, group_table
from ._imbalance import mean_imbalance_interval
from ._intervals import pct, share_interval
from ._significance import global_fair_p

__all__ = ["AuditMetrics", "audit_metrics", "overall_table"]


def overall_table(
    *,
    table: pd.DataFrame,
    images: pd.DataFrame | None = None,
    by_prompt: pd.DataFrame | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed=None,
    n_sim: int = 10_000,
) -> pd.DataFrame:
    """Overall metrics from a :func:`group_table`, tidy: ``metric, value, ci_low, ci_high, n,
    interval, description`` (``interval`` names the method, empty where there is none).

    The headline estimands (see ``docs/audit_methodology.md``): ``mean_imbalance`` (mean over the
    fixed list of groups of |p − ½|, bias-corrected, with exact adaptive bounds), ``fair_null_p``
    (the global fair test: Holm's first step, so it rejects exactly when ``n_unfair_holm`` > 0),
    ``mean_sq_imbalance`` (its smooth, unbiased companion), ``amplification`` (directional:
    mean s·(p − p_ref) over groups with a reference), and the Holm counts ``n_unfair_holm``,
    ``n_amplified_holm``, ``n_reversed_holm``, ``n_differs_ref_holm``. Every interval is computed
    exactly: *by_prompt*, *n_boot*, *seed* and *n_sim* (resampling settings before diffkit 0.3) are
    accepted and have no effect.
    """
    t = table[table["n"] > 0].reset_index(drop=True)
    alpha = 1 - ci
    fmt = {"lvl": pct(ci), "alpha": f"{100 * alpha:.3g}%", "p": ""}
    rows: list[dict] = []

    def add(metric, value, lo=np.nan, hi=np.nan, n=None, **extra):
        description, interval = describe(metric, **{**fmt, **extra})
        rows.append(
            {
                "metric": metric,
                "value": float(value),
                "ci_low": float(lo),
                "ci_high": float(hi),
                "n": int(len(t) if n is None else n),
                "interval": interval,
                "description": description,
            }
        )

    _imbalance_rows(add, t, ci)
    if images is not None:
        _image_rows(add, images, ci)
    _reference_rows(add, t, ci)
    if t["p_corrected"].notna().any():
        tc = t[t["p_corrected"].notna()]
        add("mean_imbalance_rogan_gladen", (tc["p_corrected"] - 0.5).abs().mean(), n=len(tc))
    return pd.DataFrame(rows)


def _imbalance_rows(add, t: pd.DataFrame, ci: float) -> None:
    """The mean imbalance (corrected, plug-in, against the fair baseline), the fair test, the pooled share."""
    alpha = 1 - ci
    k, n = t["n_female"].to_numpy(), t["n"].to_numpy()
    p_glob = float(global_fair_p(t["p_fair"].to_numpy())) if len(t) else np.nan
    est, lo, hi = mean_imbalance_interval(successes=k, n=n, ci=ci, p_global=p_glob) if len(t) else (np.nan,) * 3
    add("mean_imbalance", est, lo, hi)
    add("fair_null_p", p_glob)
    plug = t["imbalance"].mean() if len(t) else np.nan
    add("mean_imbalance_plugin", plug)
    base = t["fair_baseline"].mean() if len(t) else np.nan
    add("mean_fair_baseline", base)
    add("mean_excess_imbalance", plug - base)
    sq = t["sq_imbalance"].mean() if len(t) else np.nan
    add("mean_sq_imbalance", sq)
    add("rms_imbalance", np.sqrt(max(sq, 0.0)) if np.isfinite(sq) else np.nan)
    add("n_unfair_holm", int((t["p_fair_holm"] <= alpha).sum()))
    add("mean_kl_uniform", t["kl_uniform"].mean() if len(t) else np.nan)
    n_f, n_all = t["n_female"].sum(), t["n"].sum()
    lo, hi = share_interval(successes=n_f, n=n_all, ci=ci)
    add("pooled_p_female", n_f / n_all if n_all else np.nan, lo, hi, n=n_all)


def _image_rows(add, images: pd.DataFrame, ci: float) -> None:
    """The rates of abstention, nobody, several people and blacked-out images; HEIM's imbalance."""
    aud = images[images["kind"] == "audit"]
    m = len(aud)
    for lab in ("abstain", "no_person", "several_people", "blacked_out"):
        kk = int((aud["label"] == lab).sum())
        lo, hi = share_interval(successes=kk, n=m, ci=ci)
        add(f"{lab}_rate", kk / m if m else np.nan, lo, hi, n=m)
    heim = heim_gender_imbalance(images=images)
    if np.isfinite(heim):
        add("heim_gender_imbalance", heim, n=int(aud["prompt_id"].nunique()))


def _reference_rows(add, t: pd.DataFrame, ci: float) -> None:
    """Against the reference, over the groups that have one: amplification, gaps, Holm counts, correlations."""
    alpha = 1 - ci
    has_ref = (reference_sign(t["p_ref"].to_numpy()) != 0) if len(t) else np.zeros(0, bool)
    tr = t[has_ref]
    if len(tr):
        g = len(tr)
        est, lo, hi = amplification_interval(
            successes=tr["n_female"].to_numpy(), n=tr["n"].to_numpy(), p_ref=tr["p_ref"].to_numpy(), ci=ci
        )
        add("amplification", est, lo, hi, n=g)
        add("mean_abs_gap", tr["gap"].abs().mean(), n=g)
        add("n_amplified_holm", int(tr["amplified_holm"].sum()), n=g)
        add("n_reversed_holm", int(tr["reversed_holm"].sum()), n=g)
        add("n_differs_ref_holm", int((tr["p_differs_ref_holm"] <= alpha).sum()), n=g)
        r, pv = pearson(x=tr["p_female"], y=tr["p_ref"])
        add("pearson_r", r, n=g, p=f"{pv:.3g}")
        rho, pv = spearman(x=tr["p_female"], y=tr["p_ref"])
        add("spearman_rho", rho, n=g, p=f"{pv:.3g}")


@dataclass
class AuditMetrics:
    """All tables of an audit (fairlearn ``MetricFrame``-like): per image, per prompt, per
    occupation, the classifier validation (pooled and per occupation), the reliability table
    and the overall metrics."""

    images: pd.DataFrame
    by_prompt: pd.DataFrame
    by_occupation: pd.DataFrame
    validation: pd.DataFrame
    overall: pd.DataFrame
    sensitivity: float = float("nan")
    specificity: float = float("nan")
    params: dict = field(default_factory=dict)
    validation_by_occupation: pd.DataFrame = field(default_factory=pd.DataFrame)
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)
    thresholds: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every tidy table by name (the CSV files of a report)."""
        return {
            "images": self.images,
            "by_prompt": self.by_prompt,
            "by_occupation": self.by_occupation,
            "validation": self.validation,
            "validation_by_occupation": self.validation_by_occupation,
            "reliability": self.reliability,
            "overall": self.overall,
        }


def audit_metrics(
    *,
    images: pd.DataFrame,
    ci: float = 0.95,
    n_boot: int = 1000,
    seed=None,
    min_controls: int = DEFAULT_MIN_CONTROLS,
) -> AuditMetrics:
    """Every table from a per-image score table (:func:`~diffkit.audit.score.score_images`).

    Sensitivity and specificity come from the control prompts (per occupation where an
    occupation has at least *min_controls* labelled controls of each stated gender, pooled
    otherwise) and drive the Rogan–Gladen columns; without controls those columns are NaN.
    Every interval is exact (no resampling): *n_boot* and *seed* are recorded in ``params`` and
    change nothing.
    """
    val = classifier_validation(images=images, ci=ci)
    se = float(val.loc[val["stated_gender"] == "female", "accuracy"].iloc[0])
    sp = float(val.loc[val["stated_gender"] == "male", "accuracy"].iloc[0])
    kw = dict(ci=ci, min_controls=min_controls)
    by_prompt = group_table(images=images, by="prompt_id", **kw)
    by_occ = group_table(images=images, by="occupation", **kw)
    overall = overall_table(table=by_occ, images=images, ci=ci)
    fmt = {"lvl": pct(ci), "alpha": f"{100 * (1 - ci):.3g}%", "p": ""}
    extra = []
    for i, name in enumerate(("sensitivity", "specificity")):
        description, interval = describe(name, **fmt)
        extra.append(
            {
                "metric": name,
                "value": se if i == 0 else sp,
                "ci_low": val["ci_low"].iloc[i],
                "ci_high": val["ci_high"].iloc[i],
                "n": int(val["n_labelled"].iloc[i]),
                "interval": interval,
                "description": description,
            }
        )
    overall = pd.concat([overall, pd.DataFrame(extra)], ignore_index=True)
    vocc = controls_by_occupation(images=images, ci=ci)
    if np.isfinite(vocc.attrs.get("p_homogeneous", np.nan)):
        description, _ = describe("se_sp_homogeneity_p", **fmt)
        overall = pd.concat(
            [
                overall,
                pd.DataFrame(
                    [
                        {
                            "metric": "se_sp_homogeneity_p",
                            "value": vocc.attrs["p_homogeneous"],
                            "ci_low": np.nan,
                            "ci_high": np.nan,
                            "n": len(vocc),
                            "interval": "",
                            "description": description,
                        }
                    ]
                ),
            ],
            ignore_index=True,
        )
    return AuditMetrics(
        images,
        by_prompt,
        by_occ,
        val,
        overall,
        se,
        sp,
        {"ci": ci, "n_boot": n_boot, "seed": seed, "min_controls": min_controls},
        validation_by_occupation=vocc,
        reliability=reliability_table(images=images, ci=ci),
        thresholds=suggest_thresholds(images=images),
    )
