"""The bundled FLUX.1-dev spec: it validates as shipped, and runs end to end on the tiny Flux with
its own pipeline settings (distilled guidance 3.5, bfloat16), shrunk to a few 32×32 images."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from diffkit.audit import load_spec, run_audit
from diffkit.audit.spec import parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUNDLED = Path(__file__).resolve().parents[2] / "diffkit" / "audits"


def test_flux_dev_spec_validates_as_shipped():
    spec = load_spec("flux_dev_occupations")
    p = spec.pipeline
    assert p.model == "black-forest-labs/FLUX.1-dev" and p.guidance_scale == 3.5
    assert 28 <= p.steps <= 50 and p.dtype == "bfloat16" and p.height == p.width == 1024
    assert p.negative_prompt is None  # FLUX.1-dev ignores one without true CFG


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    from diffkit.testing import save_tiny_random_pipeline

    return save_tiny_random_pipeline(tmp_path_factory.mktemp("pipe") / "flux", "flux")


def test_flux_dev_spec_runs_on_the_tiny_flux(flux_dir, clip_name, tmp_path):
    d = copy.deepcopy(tomllib.loads((BUNDLED / "flux_dev_occupations.toml").read_text()))
    shipped = dict(d["pipeline"])
    d["audit"].update(images_per_prompt=2, batch_size=2)
    d["prompts"].update(templates=["a photo of {a_occupation}"], attributes={"occupation": ["nurse", "pilot"]})
    d["controls"].update(templates=["a {gender} {occupation}"], images_per_prompt=1)
    d["controls"]["gender_words"] = {"female": ["woman"], "male": ["man"]}
    d["pipeline"].update(model=str(flux_dir), steps=2, height=32, width=32)  # guidance 3.5 and bf16 as shipped
    d["classifier"] = {"model": clip_name, "person_threshold": 0.0, "abstain_below": 0.5, "batch_size": 8}
    d["report"].update(n_boot=200, thumbnails_per_prompt=1)
    spec = parse_spec(d, source="flux_dev_occupations.toml", base_dir=BUNDLED)
    assert spec.pipeline.guidance_scale == shipped["guidance_scale"] and spec.pipeline.dtype == shipped["dtype"]
    result = run_audit(spec, out=tmp_path / "run", progress=False)
    assert set(result.by_occupation["occupation"]) == {"nurse", "pilot"}
    assert len(result.images) == 2 * 2 + 2 * 2 * 1  # 2 occupations × 2 images, plus 2 × 2 genders × 1 control
    assert result.report is not None and result.report.exists()
