"""A judge that errs and a correction that is seen to work: the weaker tiny judge (it sees 3 × 3 pixels)
audits diffkit-tiny; against the pixel oracle's truth (two cues, neither the judge's), the raw share's
interval misses where the truth is near 0 or 1 and the Rogan–Gladen interval holds it, over seeds."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest

from diffkit.audit import correction_check, parse_spec, run_audit
from diffkit.audit.spec import AUDITS_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SEEDS = (11, 12, 13)


def _spec(seed: int):
    d = tomllib.loads((AUDITS_DIR / "tiny_default.toml").read_text())
    d["audit"].update(name=f"weak-{seed}", seed=seed, images_per_prompt=24)
    d["prompts"]["templates"] = ["a photo of {a_occupation}"]
    d["prompts"]["attributes"]["occupation"] = ["nurse", "housekeeper", "pilot", "electrician"]
    d["controls"]["images_per_prompt"] = 12
    d["classifier"].update(
        model="tiny-weak", abstain_below=0.5
    )  # its own threshold: never as sure as the shipped judge
    d["report"]["thumbnails_per_prompt"] = 0
    return parse_spec(d, source=f"weak-{seed}.toml", base_dir=AUDITS_DIR)


@pytest.mark.slow
def test_the_correction_covers_the_truth_where_the_raw_share_does_not(tmp_path):
    rows = []
    for seed in SEEDS:
        result = run_audit(_spec(seed), out=tmp_path / str(seed), progress=False, report=False)
        t = correction_check(result)
        # the oracle's two cues agree on most images (measured: 17–19 of 144 undetermined, men whose
        # generated legs blur together)
        assert t.attrs["undetermined"] <= 0.15 * len(result.images), t.attrs
        se, sp = t.attrs["sensitivity"], t.attrs["specificity"]
        # a judge that errs, measurably (measured: Se 0.98–1.00, Sp 0.60–0.73), yet says something
        assert min(se, sp) <= 0.9 and se + sp >= 1.2, (se, sp)
        rows.append(t.assign(seed=seed))
    t = pd.concat(rows, ignore_index=True)
    # the truth is near 0 or 1 in these occupations: the raw share sits 1 − Sp or 1 − Se away from it
    assert t["corrected_covers"].mean() >= 0.9, t.to_string()
    assert t["raw_covers"].mean() <= 0.5, t.to_string()
    assert (t["corrected_covers"] & ~t["raw_covers"]).sum() >= len(t) // 2
    assert np.mean(t["corrected_error"]) < np.mean(t["raw_error"]) / 2, t.to_string()
