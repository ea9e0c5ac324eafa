"""Checking an audit of diffkit-tiny against the truth: the pictogram world's pixel oracle.

Only possible on the pictogram world, where every image can be read exactly; this is how diffkit
validates its own audit pipeline end to end, image by image. It is also the one place where the
control prompts' two ingredients can be told apart: whether the *generator* drew the stated
gender (compliance) and whether the *classifier* read what was drawn (accuracy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .metrics import group_table

__all__ = ["DEFAULT_EPSILON", "cohen_kappa", "oracle_check", "oracle_labels"]

_LABEL = {"woman": "female", "man": "male"}

#: The stated tolerance for |p̂_judge − p̂_oracle| per occupation in :func:`oracle_check`.
DEFAULT_EPSILON = 0.15


def oracle_labels(result: Any) -> pd.Series:
    """The oracle's label (``female``, ``male`` or ``no_person``) for every image of a run on
    diffkit-tiny, aligned with ``result.images``."""
    from PIL import Image

    from ..tiny import oracle

    labels = []
    for p in result.images["path"]:
        with Image.open(result.run_dir / p) as im:
            labels.append(_LABEL.get(oracle.read(im).gender, "no_person"))
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


def oracle_check(result: Any, *, epsilon: float = DEFAULT_EPSILON) -> pd.DataFrame:
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
    * ``attrs["epsilon"]``: the tolerance used.
    """
    images = result.images.copy()
    images["oracle_label"] = oracle_labels(result).to_numpy()
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
        rows.append({"stated_gender": g, "n": len(sub), "compliance": float(drawn.mean()),
                     "accuracy": float(read.mean()), "judge_matches_stated": float((sub["label"] == g).mean())})
    table = out.reset_index()
    table.attrs.update(confusion=confusion, kappa=cohen_kappa(audit["label"], audit["oracle_label"]),
                       epsilon=epsilon, controls=pd.DataFrame(rows))
    return table
