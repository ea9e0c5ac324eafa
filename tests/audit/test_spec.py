from __future__ import annotations

import pytest
from audit_helpers import REPO, spec_dict

from diffkit.audit import SpecError, build_prompts, bundled_specs, load_spec, parse_spec
from diffkit.audit.spec import spec_from_dict


def test_bundled_specs_load():
    assert {"tiny_default", "sd15_occupations"} <= set(bundled_specs())
    tiny = load_spec("tiny_default")
    assert tiny.pipeline.model == "tiny" and tiny.classifier.model == "tiny"
    assert len(build_prompts(tiny)) == 40
    assert tiny.prompts.reference["nurse"] == pytest.approx(0.867)
    sd = load_spec(REPO / "audits" / "sd15_occupations.toml")
    assert sd.prompts.reference_titles["CEO"] == "Chief executives"
    assert load_spec("tiny_default", model="/some/folder").pipeline.model == "/some/folder"


def test_reference_csv_matches_design_values():
    import pandas as pd

    df = pd.read_csv(REPO / "audits" / "bls_cps_2021_women_share.csv")
    assert list(df.columns) == ["occupation", "bls_title", "women_share", "year", "source"]
    got = dict(zip(df["bls_title"], df["women_share"] * 100))
    expected = {"Chief executives": 29.1, "Software developers": 19.7, "Registered nurses": 86.7, "Lawyers": 37.9,
                "Aircraft pilots and flight engineers": 5.3, "Flight attendants": 64.6, "Taxi drivers": 12.0,
                "Firefighters": 5.1, "Electricians": 1.7, "Chefs and head cooks": 22.8,
                "Maids and housekeeping cleaners": 88.7, "Elementary and middle school teachers": 79.2,
                "Police officers": 15.3, "Pharmacists": 57.8}
    assert got == pytest.approx(expected)
    assert (df["year"] == 2021).all() and df["source"].str.contains("Table 11").all()


def _err(pipe_dir, clip_name, mutate) -> SpecError:
    d = spec_dict(pipe_dir, clip_name)
    mutate(d)
    with pytest.raises(SpecError) as e:
        parse_spec(d, source="audits/bad.toml")
    assert str(e.value).startswith("audits/bad.toml: ") and "; fix: " in str(e.value)
    return e.value


@pytest.mark.parametrize(
    "mutate, key, words",
    [
        (lambda d: d["prompts"].__setitem__("templates", ["a {job} at work"]), "prompts.templates[0]",
         "unknown placeholder {job}"),
        (lambda d: d["prompts"].__setitem__("templates", []), "prompts.templates", "empty list"),
        (lambda d: d["prompts"]["attributes"].__setitem__("occupation", []), "prompts.attributes.occupation",
         "empty list"),
        (lambda d: d["prompts"].__setitem__("templates", ["a {occupation!r}"]), "prompts.templates[0]", "malformed"),
        (lambda d: d["audit"].__setitem__("images_per_prompt", 0), "audit.images_per_prompt", "out of range"),
        (lambda d: d["audit"].__setitem__("seed", "seven"), "audit.seed", "expected int"),
        (lambda d: d["audit"].__setitem__("colour", 1), "audit.colour", "unknown key"),
        (lambda d: d.pop("pipeline"), "[pipeline]", "missing table"),
        (lambda d: d["pipeline"].__setitem__("height", 30), "pipeline.height", "multiple of 8"),
        (lambda d: d["pipeline"].__setitem__("scheduler", "fancy"), "pipeline.scheduler", "unknown scheduler"),
        (lambda d: d["controls"].__setitem__("templates", ["a {occupation}"]), "controls.templates[0]",
         "does not state the gender"),
        (lambda d: d["prompts"].__setitem__("reference", "nope.csv"), "prompts.reference", "no such file"),
        (lambda d: d["classifier"].__setitem__("templates", ["a photo"]), "classifier.templates[0]",
         "exactly one {}"),
        (lambda d: d["classifier"].update(model="ViT-B-32", pretrained=""), "classifier.pretrained", "missing"),
        (lambda d: d["classifier"].__setitem__("abstain_below", 0.2), "classifier.abstain_below", "out of range"),
    ],
)
def test_spec_errors_name_file_key_and_fix(pipe_dir, clip_name, mutate, key, words):
    e = _err(pipe_dir, clip_name, mutate)
    assert e.key == key and words in e.problem and e.fix


def test_toml_syntax_and_missing_file(tmp_path):
    bad = tmp_path / "broken.toml"
    bad.write_text("[audit\nname = 1\n")
    with pytest.raises(SpecError, match=r"broken.toml: \(syntax\): not valid TOML.*fix:"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such spec file.*tiny_default"):
        load_spec(tmp_path / "missing.toml")


def test_duplicate_prompts_refused(make_spec):
    with pytest.raises(SpecError, match="prompts.templates: duplicate entry"):
        make_spec(prompts__templates=["a photo of {a_occupation}", "a photo of {a_occupation}"])
    spec = make_spec(prompts__templates=["a photo of {a_occupation}", "a photo of a {occupation}"])
    with pytest.raises(SpecError, match="appears twice"):  # "a photo of a nurse" from both
        build_prompts(spec)


def test_fingerprint_and_round_trip(make_spec):
    a, b = make_spec(), make_spec()
    assert a.fingerprint() == b.fingerprint()
    assert make_spec(audit__seed=8).fingerprint() != a.fingerprint()
    assert a.with_model("other").fingerprint() != a.fingerprint()
    again = spec_from_dict(a.to_dict())
    assert again.fingerprint() == a.fingerprint() and again.prompts.templates == a.prompts.templates



def test_occupations_the_reference_lacks_are_audited_without_one(pipe_dir, clip_name):
    d = spec_dict(pipe_dir, clip_name)
    d["prompts"]["attributes"]["occupation"] = ["nurse", "astronaut"]
    spec = parse_spec(d, source="unit.toml")
    assert spec.prompts.reference == {"nurse": pytest.approx(0.867)}
    p = build_prompts(spec).groupby("occupation")["p_ref"].first()
    assert p["nurse"] == pytest.approx(0.867) and p.isna()["astronaut"]
