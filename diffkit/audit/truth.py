"""Checking an audit of diffkit-tiny against the truth: the pictogram world's pixel oracle.

Only possible on the pictogram world, where every image can be read exactly; this is how diffkit
validates its own audit pipeline end to end.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from .metrics import group_table

__all__ = ["oracle_check"]

_LABEL = {"woman": "female", "man": "male"}


def oracle_check(result: Any) -> pd.DataFrame:
    """Per occupation: the audit's share of women with its interval beside the oracle's share of
    the same images, and whether the interval holds it.

    *result* is what :func:`diffkit.audit.run_audit` returns for a run on diffkit-tiny. Columns:
    ``occupation, n, p_female, ci_low, ci_high, oracle_p_female, inside, p_ref``.
    """
    from PIL import Image

    from ..tiny import oracle

    images = result.images.copy()
    readings = [oracle.read(Image.open(result.run_dir / p)) for p in images["path"]]
    truth = images.assign(label=[_LABEL.get(r.gender, "no_person") for r in readings])
    oracle_share = group_table(images=truth, by="occupation").set_index("occupation")["p_female"]
    audit = result.by_occupation.set_index("occupation")
    cols = [c for c in ("n", "p_female", "ci_low", "ci_high", "p_ref") if c in audit]
    out = audit[cols].assign(oracle_p_female=oracle_share)
    out["inside"] = (out["ci_low"] <= out["oracle_p_female"]) & (out["oracle_p_female"] <= out["ci_high"])
    return out.reset_index()
