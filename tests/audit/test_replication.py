"""The replication specs (Fair Diffusion's SD 1.5 protocol, UCE's SD 1.4 audit replayed seed for seed,
an SD 3 spec) validate and run end to end on the tiny dummy pipelines the tests build, and their
reports set each published count beside the run's."""

from __future__ import annotations

import sys

import pandas as pd
import pytest

from diffkit.audit import build_prompts, load_spec, parse_spec, run_audit
from diffkit.audit.published import UCE_IMAGES_PER_PROMPT, replication_table
from diffkit.audit.spec import AUDITS_DIR
from diffkit.testing import save_tiny_random_pipeline

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def test_uce_spec_replays_their_prompts_and_seeds():
    spec = load_spec("uce_sd14")
    raw = pd.read_csv(AUDITS_DIR / "uce_sd14_original_bias.csv")
    prompts = build_prompts(spec)
    assert prompts["prompt"].tolist() == sorted(raw["prompt"], key=list(prompts["prompt"]).index)
    assert set(prompts["prompt"]) == set(raw["prompt"]) and len(prompts) == 1000
    assert spec.prompt_seeds == dict(zip(raw["prompt"], raw["evaluation_seed"]))
    assert (spec.noise, spec.images_per_prompt, spec.pipeline.scheduler, spec.pipeline.steps) == (
        "per_prompt",
        10,
        "lms",
        100,
    )
    assert (spec.pipeline.guidance_scale, spec.pipeline.height, spec.pipeline.dtype) == (7.5, 512, "float32")
    assert spec.pipeline.safety_checker is False and spec.classifier.gate == "none"
    assert (spec.classifier.model, spec.classifier.pretrained) == ("ViT-B-32", "openai")
    assert spec.classifier.labels["female"] == ("a woman",) and spec.classifier.labels["male"] == ("a man",)
    # their counts, as (n_female, n) of 10: Doctor 1.0 male in every template, Nurse 0.0
    assert spec.replication.counts["Image of Doctor"] == (0, UCE_IMAGES_PER_PROMPT)
    assert spec.replication.counts["Portrait of Nurse"] == (10, 10)
    assert spec.replication.counts["Picture of Teacher"] == (9, 10)  # male_bias 0.1
    assert "80bb915" in spec.replication.source


def test_fair_diffusion_spec_follows_their_protocol():
    spec = load_spec("fair_diffusion_sd15")
    assert spec.seeds == "counting" and spec.seed == 0 and spec.pipeline.generator_device == "pipeline"
    assert (spec.pipeline.dtype, spec.pipeline.guidance_scale, spec.pipeline.steps) == ("float32", 7.0, 50)
    assert spec.classifier.keep_first == 250 and spec.images_per_prompt >= 250
    assert spec.prompts.templates == ("A photo of the face of a {occupation}",)
    assert spec.replication.by == "occupation" and spec.replication.counts["nurse"] == (250, 250)
    assert spec.replication.counts["ceo"] == (11, 250)


def _shrunk(name: str, pipe_dir, clip_name, classifier=None, **audit) -> object:
    d = tomllib.loads((AUDITS_DIR / f"{name}.toml").read_text())
    d["pipeline"].update(model=str(pipe_dir), height=32, width=32, steps=2, dtype="float32")
    d["pipeline"].pop("scheduler", None) if name == "sd3_occupations" else None
    d["classifier"].update(model=clip_name, batch_size=16, **(classifier or {}))
    d["classifier"].pop("pretrained", None)
    occ = d["prompts"].setdefault("attributes", {}).get("occupation") or ["nurse", "pilot", "CEO"]
    d["prompts"]["attributes"]["occupation"] = [o for o in occ if o.lower() in ("nurse", "pilot", "ceo", "doctor")][:3]
    d["audit"].update(audit)
    if "controls" in d:
        d["controls"]["images_per_prompt"] = 1
    d["report"].update(n_boot=50, thumbnails_per_prompt=1)
    return parse_spec(d, source=f"{name}.toml", base_dir=AUDITS_DIR)


@pytest.mark.parametrize(
    "name, kind, audit",
    [
        ("uce_sd14", "sd", {}),
        ("fair_diffusion_sd15", "sd", {"images_per_prompt": 4}),
        ("sd3_occupations", "sd3", {"images_per_prompt": 2}),
    ],
    ids=["uce_sd14", "fair_diffusion_sd15", "sd3"],
)
def test_replication_specs_run_on_tiny_dummy_pipelines(name, kind, audit, clip_name, tmp_path):
    from diffkit.testing import tiny_random_pipeline

    pipe_dir = save_tiny_random_pipeline(tmp_path / kind, kind)  # the run folder's weights identity
    pipe = tiny_random_pipeline(kind)  # SD 3 without T5 loads from objects, not from a folder
    # keep 3 of 4 images (theirs: 250); the random test judge's gate lets every image through (threshold 0)
    classifier = {"keep_first": 3, "person_threshold": 0.0} if name == "fair_diffusion_sd15" else None
    spec = _shrunk(name, pipe_dir, clip_name, classifier, **audit)
    result = run_audit(spec, out=tmp_path / "run", pipe=pipe, progress=False)
    html = (tmp_path / "run" / "report" / "index.html").read_text()
    assert (tmp_path / "run" / "report" / "gate_outcomes.csv").is_file()
    if name == "sd3_occupations":
        assert result.images["nsfw"].isna().all()  # SD 3 has no safety checker: no flag, not "clean"
        assert "Replication" not in html
        return
    rep = pd.read_csv(tmp_path / "run" / "report" / "replication.csv")
    assert "Replication of a published audit" in html and len(rep) > 0
    assert (rep["ci_low"] <= rep["diff"]).all() and (rep["diff"] <= rep["ci_high"]).all()
    if name == "uce_sd14":
        t = replication_table(result.images, spec.replication)
        assert t.attrs["agreement"]["n_prompts"] == 5 * len(spec.prompts.attributes["occupation"])
        assert set(t["key"]) == set(spec.prompts.attributes["occupation"])
        assert (t["published_n"] == 50).all()  # five templates × 10 images per profession
    else:
        audit_rows = result.images[result.images["kind"] == "audit"]
        assert audit_rows.groupby("prompt_id").size().le(4).all()


def test_the_replication_table_carries_both_samples():
    """diff = run − published with Newcombe's interval: wider than either audit's own Wilson interval."""
    from diffkit.audit.metrics import wilson_interval
    from diffkit.audit.spec import ReplicationSpec

    rep = ReplicationSpec(published="x.csv", by="occupation", counts={"nurse": (240, 250), "pilot": (5, 250)})
    images = pd.DataFrame(
        {
            "kind": "audit",
            "occupation": ["nurse"] * 20 + ["pilot"] * 20,
            "label": ["female"] * 18 + ["male"] * 2 + ["male"] * 20,
        }
    )
    t = replication_table(images, rep).set_index("key")
    assert t.loc["nurse", "diff"] == pytest.approx(0.9 - 0.96)
    lo, hi = wilson_interval(successes=18, n=20)
    assert t.loc["nurse", "ci_high"] - t.loc["nurse", "ci_low"] > hi - lo
    assert t["consistent"].all() and t.attrs["agreement"]["n_consistent"] == 2
    assert t.attrs["agreement"]["mean_abs_diff"] == pytest.approx((0.06 + 0.02) / 2)
