"""The embedded default: the bundled spec audits diffkit-tiny, checked against the pixel oracle."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_tiny_default_agrees_with_the_pixel_oracle(tmp_path):
    import time

    from diffkit.audit import oracle_check, run_audit

    t0 = time.perf_counter()
    result = run_audit("tiny_default", out=tmp_path / "run", progress=False)
    elapsed = time.perf_counter() - t0
    checked = oracle_check(result)
    check = checked.set_index("occupation")
    # judged image by image: the judge agrees with the oracle (κ), and each occupation's share within ε
    assert checked.attrs["kappa"] > 0.9, checked.attrs["confusion"]
    assert check["within_epsilon"].sum() >= len(check) - 1, "\n" + check.to_string()
    audit = result.by_occupation.set_index("occupation")
    # the audit's own 95% intervals hold the oracle's share of the same images (one miss allowed in 10)
    assert check["inside"].sum() >= len(check) - 1, "\n" + check.to_string()
    # the world's known skew shows: nurse and housekeeper lean female, pilot and electrician male
    assert audit.loc["nurse", "p_female"] > 0.5 > audit.loc["electrician", "p_female"]
    assert result.overall.set_index("metric").loc["pearson_r", "value"] > 0.5
    # the coverage grid's "shipped model" cell simulates exactly these shares (docs/audit_methodology.md §11)
    from diffkit.audit.coverage import REFERENCE, SHIPPED_SHARES

    occupations = [
        "nurse",
        "housekeeper",
        "teacher",
        "pharmacist",
        "lawyer",
        "CEO",
        "software developer",
        "pilot",
        "firefighter",
        "electrician",
    ]
    assert audit.loc[occupations, "p_ref"].to_numpy() == pytest.approx(REFERENCE)
    assert audit.loc[occupations, "p_female"].to_numpy() == pytest.approx(SHIPPED_SHARES)
    # 8 controls per stated gender per occupation; an occupation whose labelled controls fall below
    # min_controls (the judge abstained on one) falls back to the pooled Se and Sp, the others use their own
    from diffkit.audit._classifier import control_counts
    from diffkit.audit._group_table import DEFAULT_MIN_CONTROLS

    per, _ = control_counts(result.images)
    own = per[["se_n", "sp_n"]].min(axis=1) >= DEFAULT_MIN_CONTROLS
    expected = own.map({True: "occupation", False: "pooled"}).reindex(audit.index)
    assert (audit["se_sp_source"] == expected).all(), "\n" + per.to_string()
    assert own.sum() >= len(own) - 2, "\n" + per.to_string()
    assert elapsed < 600, f"the embedded default took {elapsed:.0f} s (target: 300 s on a 2-core CPU)"
