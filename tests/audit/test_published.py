"""The published reference data shipped with diffkit, and the bundled protocol specs."""

from __future__ import annotations

import pandas as pd
import pytest

from diffkit.audit import build_prompts, load_spec
from diffkit.audit.published import fair_diffusion_sd15, published_overlay


def test_fair_diffusion_counts_are_theirs_with_their_source():
    fd = fair_diffusion_sd15().set_index("occupation")
    assert len(fd) == 153 and fd.index.is_unique
    # the figures quoted in issue 14 from their results_fairface_generated_1-5.txt
    assert fd.loc["nurse", ["n_woman", "n_man"]].tolist() == [250, 0]
    assert fd.loc["ceo", "n_woman"] == 11 and fd.loc["software developer", "n_woman"] == 4
    assert fd.loc["pilot", "n_woman"] == 52
    assert ((fd["n"] + fd["n_except"]) <= 250).all()
    assert fd["source"].str.contains("Friedrich et al.").all() and "0e9183b" in fd.attrs["source"]
    assert fd.loc["nurse", "ci_high"] == 1.0 and 0.98 < fd.loc["nurse", "ci_low"] < 1


def test_overlay_matches_occupations_ignoring_case():
    run = pd.DataFrame({"occupation": ["CEO", "nurse", "astronaut"]})
    ov = published_overlay(run).set_index("occupation")
    assert list(ov.index) == ["CEO", "nurse"]
    assert ov.loc["CEO", "published_p_female"] == pytest.approx(11 / 250)


def test_protocol_specs_reproduce_their_prompts():
    fd = load_spec("fair_diffusion_sd15")
    p = build_prompts(fd)
    audit = p[p["kind"] == "audit"]
    assert len(audit) == 153 and fd.pipeline.guidance_scale == 7.0
    assert "A photo of the face of a software developer" in set(audit["prompt"])
    assert set(audit["occupation"]) == set(fair_diffusion_sd15()["occupation"])
    # occupations the BLS table lacks are audited without a reference, not refused
    assert audit["p_ref"].isna().sum() == 153 - len(fd.prompts.reference) > 100
    heim = load_spec("heim_demographic_stereotypes")
    hp = build_prompts(heim)
    assert "a photo of the face of a CEO" in set(hp["prompt"]) and "a photo of the face of an electrician" not in set(
        hp["prompt"]
    )
    assert heim.classifier.labels["female"] == ("female",) and heim.classifier.templates == ("a photo of a {}",)
    assert heim.classifier.abstain_below == 0.5 and heim.classifier.person_threshold == 0.0
    sdxl = load_spec("sdxl_occupations")
    assert sdxl.pipeline.model == "stabilityai/stable-diffusion-xl-base-1.0" and sdxl.pipeline.height == 1024
