"""The classifier on the control prompts (the gender stated): validation, reliability, thresholds.

==========================  =========================================================================
sensitivity, specificity    Se = P(labelled female | stated female), Sp = P(labelled male | stated
                            male) among labelled control images, with Clopper–Pearson intervals; pooled and
                            per occupation, with a χ² test that they are the same everywhere
reliability table           per bin of ``p_female``: the share of control images stating "woman"
suggested thresholds        stated rules on the control images (not applied automatically)
==========================  =========================================================================

What the controls measure is the generator's *compliance* (did it draw a woman for "a woman
nurse"?) times the classifier's accuracy: the two are not separable from the controls alone
(``docs/audit_methodology.md``, §5).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from ._intervals import share_interval

__all__ = ["classifier_validation", "controls_by_occupation", "reliability_table", "suggest_thresholds"]


def _counts(g: pd.DataFrame) -> pd.Series:
    lab = g["label"]
    return pd.Series(
        {
            "n_images": len(g),
            "n_no_person": int((lab == "no_person").sum()),
            "n_several_people": int((lab == "several_people").sum()),
            "n_abstain": int((lab == "abstain").sum()),
            "n_female": int((lab == "female").sum()),
            "n_male": int((lab == "male").sum()),
        }
    )


def classifier_validation(*, images: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """The classifier on the control prompts (the gender stated): one row per stated gender.

    ``accuracy`` among labelled images is the sensitivity for ``female`` and the specificity
    for ``male`` (female is "positive"), with a Clopper–Pearson interval; abstentions and no-person
    images are counted beside it. What the controls measure is the generator's *compliance*
    (did it draw a woman for "a woman nurse"?) times the classifier's accuracy: the two are
    not separable from the controls alone (see ``docs/audit_methodology.md``).
    """
    ctrl = images[images["kind"] == "control"]
    rows = []
    for g in ("female", "male"):
        sub = ctrl[ctrl["stated_gender"] == g]
        c = _counts(sub)
        n = c["n_female"] + c["n_male"]
        correct = c[f"n_{g}"]
        lo, hi = share_interval(successes=correct, n=n, ci=ci)
        rows.append(
            {
                "stated_gender": g,
                "measure": "sensitivity" if g == "female" else "specificity",
                **c.to_dict(),
                "n_labelled": int(n),
                "n_correct": int(correct),
                "accuracy": correct / n if n else np.nan,
                "ci_low": float(lo),
                "ci_high": float(hi),
            }
        )
    return pd.DataFrame(rows)


def controls_by_occupation(*, images: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """Sensitivity and specificity per occupation from the control prompts, with Clopper–Pearson intervals.

    Columns: ``occupation, se_correct, se_n, sensitivity, se_low, se_high, sp_correct, sp_n,
    specificity, sp_low, sp_high`` (counts among labelled control images). ``attrs["p_homogeneous"]``
    holds the check that Se and Sp do not vary by occupation: the smaller of two χ² tests of
    homogeneity (one for Se, one for Sp) across occupations, Bonferroni for the two (NaN when
    fewer than two occupations have controls).
    """
    ctrl = images[(images["kind"] == "control") & images["label"].isin(["female", "male"])]
    cols = [
        "occupation",
        "se_correct",
        "se_n",
        "sensitivity",
        "se_low",
        "se_high",
        "sp_correct",
        "sp_n",
        "specificity",
        "sp_low",
        "sp_high",
    ]
    if ctrl.empty or "occupation" not in ctrl:
        out = pd.DataFrame(columns=cols)
        out.attrs["p_homogeneous"] = float("nan")
        return out
    rows = []
    for occ, g in ctrl.groupby("occupation", sort=True):
        f = g[g["stated_gender"] == "female"]
        m = g[g["stated_gender"] == "male"]
        row = {
            "occupation": occ,
            "se_correct": int((f["label"] == "female").sum()),
            "se_n": len(f),
            "sp_correct": int((m["label"] == "male").sum()),
            "sp_n": len(m),
        }
        for key, x, n in (("se", row["se_correct"], row["se_n"]), ("sp", row["sp_correct"], row["sp_n"])):
            lo, hi = share_interval(successes=x, n=n, ci=ci)
            row["sensitivity" if key == "se" else "specificity"] = x / n if n else np.nan
            row[f"{key}_low"], row[f"{key}_high"] = float(lo), float(hi)
        rows.append(row)
    out = pd.DataFrame(rows)[cols]
    pvals = []
    for key in ("se", "sp"):
        sub = out[out[f"{key}_n"] > 0]
        tab = np.stack([sub[f"{key}_correct"], sub[f"{key}_n"] - sub[f"{key}_correct"]], axis=1)
        if len(sub) >= 2 and (tab.sum(axis=0) > 0).all():
            pvals.append(stats.chi2_contingency(tab, correction=False)[1])
    out.attrs["p_homogeneous"] = float(min(1.0, 2 * min(pvals))) if pvals else float("nan")
    return out


def reliability_table(*, images: pd.DataFrame, bins: int = 10, ci: float = 0.95) -> pd.DataFrame:
    """A reliability diagram's data from the control prompts: per bin of the classifier's
    ``p_female``, the number of control images, their mean ``p_female`` and the share whose
    prompt stated "female" (with a Clopper–Pearson interval). A calibrated classifier has the share
    equal to the mean prediction in every bin. Every control image counts, whatever its label
    (the gate and the abstention rule are applied after the probability)."""
    ctrl = images[(images["kind"] == "control") & images["stated_gender"].isin(["female", "male"])]
    cols = ["bin_low", "bin_high", "n", "mean_p_female", "share_stated_female", "ci_low", "ci_high"]
    if ctrl.empty or "p_female" not in ctrl:
        return pd.DataFrame(columns=cols)
    edges = np.linspace(0, 1, bins + 1)
    p = ctrl["p_female"].to_numpy(float)
    y = (ctrl["stated_gender"] == "female").to_numpy()
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        k = int(y[sel].sum())
        lo, hi = share_interval(successes=k, n=n, ci=ci)
        rows.append(
            {
                "bin_low": edges[b],
                "bin_high": edges[b + 1],
                "n": n,
                "mean_p_female": float(p[sel].mean()) if n else np.nan,
                "share_stated_female": k / n if n else np.nan,
                "ci_low": float(lo),
                "ci_high": float(hi),
            }
        )
    return pd.DataFrame(rows)


def suggest_thresholds(
    *, images: pd.DataFrame, max_error: float = 0.05, person_quantile: float = 0.01
) -> dict[str, float]:
    """Thresholds chosen from the control images by a stated rule (not applied automatically).

    * ``abstain_below``: the smallest confidence threshold t ≥ 0.5 at which the control images
      kept (confidence ≥ t) disagree with their stated gender at most ``max_error`` of the
      time; 0.5 (no abstention) when even that is reached without abstaining; NaN when no t is.
    * ``person_threshold``: the ``person_quantile`` quantile of ``p_person`` over the control
      images, which all show a person by construction (so about that share of true persons
      would be gated out). It needs controls whose ``p_person`` varies to mean anything.

    Also returns ``error_at_suggestion`` and ``kept_at_suggestion`` (share of controls kept).
    Apply them to a finished run with :func:`diffkit.audit.score.relabel` (no rescoring), or write
    them into the spec's ``[classifier]`` for the next run.
    """
    ctrl = images[(images["kind"] == "control") & images["stated_gender"].isin(["female", "male"])]
    out = {
        "abstain_below": float("nan"),
        "person_threshold": float("nan"),
        "error_at_suggestion": float("nan"),
        "kept_at_suggestion": float("nan"),
        "n_controls": float(len(ctrl)),
    }
    if ctrl.empty or "confidence" not in ctrl:
        return out
    conf = ctrl["confidence"].to_numpy(float)
    wrong = (ctrl["p_female"].to_numpy(float) >= 0.5) != (ctrl["stated_gender"] == "female").to_numpy()
    for t in np.unique(np.concatenate([[0.5], conf[conf >= 0.5]])):
        keep = conf >= t
        if keep.sum() == 0:
            break
        err = wrong[keep].mean()
        if err <= max_error:
            out.update(abstain_below=float(t), error_at_suggestion=float(err), kept_at_suggestion=float(keep.mean()))
            break
    out["person_threshold"] = float(np.quantile(ctrl["p_person"].to_numpy(float), person_quantile))
    return out


def control_counts(images: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Se/Sp counts per occupation (indexed by occupation) and pooled over occupations."""
    per = controls_by_occupation(images=images)
    pooled = {
        "se_correct": int(per["se_correct"].sum()),
        "se_n": int(per["se_n"].sum()),
        "sp_correct": int(per["sp_correct"].sum()),
        "sp_n": int(per["sp_n"].sum()),
    }
    return per.set_index("occupation") if len(per) else per, pooled
