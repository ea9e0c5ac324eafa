from __future__ import annotations

import json

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
    expected = {
        "Chief executives": 29.1,
        "Software developers": 19.7,
        "Registered nurses": 86.7,
        "Lawyers": 37.9,
        "Aircraft pilots and flight engineers": 5.3,
        "Flight attendants": 64.6,
        "Taxi drivers": 12.0,
        "Firefighters": 5.1,
        "Electricians": 1.7,
        "Chefs and head cooks": 22.8,
        "Maids and housekeeping cleaners": 88.7,
        "Elementary and middle school teachers": 79.2,
        "Police officers": 15.3,
        "Pharmacists": 57.8,
    }
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
        (
            lambda d: d["prompts"].__setitem__("templates", ["a {job} at work"]),
            "prompts.templates[0]",
            "unknown placeholder {job}",
        ),
        (lambda d: d["prompts"].__setitem__("templates", []), "prompts.templates", "empty list"),
        (
            lambda d: d["prompts"]["attributes"].__setitem__("occupation", []),
            "prompts.attributes.occupation",
            "empty list",
        ),
        (lambda d: d["prompts"].__setitem__("templates", ["a {occupation!r}"]), "prompts.templates[0]", "malformed"),
        (lambda d: d["audit"].__setitem__("images_per_prompt", 0), "audit.images_per_prompt", "out of range"),
        (lambda d: d["audit"].__setitem__("seed", "seven"), "audit.seed", "expected int"),
        (lambda d: d["audit"].__setitem__("colour", 1), "audit.colour", "unknown key"),
        (lambda d: d.pop("pipeline"), "[pipeline]", "missing table"),
        (lambda d: d["pipeline"].__setitem__("height", 30), "pipeline.height", "multiple of 8"),
        (lambda d: d["pipeline"].__setitem__("scheduler", "fancy"), "pipeline.scheduler", "unknown scheduler"),
        (
            lambda d: d["controls"].__setitem__("templates", ["a {occupation}"]),
            "controls.templates[0]",
            "does not state the gender",
        ),
        (lambda d: d["prompts"].__setitem__("reference", "nope.csv"), "prompts.reference", "no such file"),
        (lambda d: d["classifier"].__setitem__("templates", ["a photo"]), "classifier.templates[0]", "exactly one {}"),
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


# --------------------------------------------------------------------------- renamed keys
# A spec as diffkit 0.1 stored it in a run folder (AuditSpec.to_dict() before the renames of 0.2),
# and its fingerprint then: sha256 of that dict's sorted JSON.
OLD_STORED = {
    "batch_size": 2,
    "description": "",
    "images_per_prompt": 1,
    "name": "old",
    "seed": 3,
    "classifier": {
        "abstain_below": 0.5,
        "batch_size": 8,
        "model": "tiny",
        "person_threshold": 0.0,
        "pretrained": None,
        "templates": ["a photo of a {}."],
        "labels": {"female": ["woman"], "male": ["man"], "no_person": ["shape"], "person": ["person"]},
    },
    "controls": {
        "gender_words": {"female": ["woman"], "male": ["man"]},
        "images_per_prompt": 1,
        "templates": ["a {gender} {occupation}"],
    },
    "pipeline": {
        "dtype": None,
        "guidance": 5.0,
        "height": 32,
        "model": "tiny",
        "negative_prompt": None,
        "revision": None,
        "scheduler": None,
        "steps": 2,
        "width": 32,
    },
    "prompts": {
        "attributes": {"occupation": ["nurse", "pilot"]},
        "reference": {},
        "reference_source": "",
        "reference_titles": {},
        "templates": ["a photo of {a_occupation}"],
    },
    "report": {"ci": 0.95, "n_boot": 50, "random_state": 4, "thumbnails_per_prompt": 2},
}
OLD_FINGERPRINT = "c9e5a03189315c5a3ab41d2c4a26fa481c687a2107f33cb7b4dfc1e832a51f92"  # computed by diffkit 0.1


def test_the_fingerprint_survives_the_key_renames():
    import hashlib
    import json

    assert hashlib.sha256(json.dumps(OLD_STORED, sort_keys=True).encode()).hexdigest() == OLD_FINGERPRINT
    spec = spec_from_dict(OLD_STORED)  # a stored spec is read without a warning
    assert spec.pipeline.guidance_scale == 5.0 and spec.report.seed == 4
    assert spec.fingerprint() == OLD_FINGERPRINT
    new = spec.to_dict()
    assert new["pipeline"]["guidance_scale"] == 5.0 and "guidance" not in new["pipeline"]
    assert new["report"]["seed"] == 4 and "random_state" not in new["report"]
    assert spec_from_dict(new) == spec and spec_from_dict(new).fingerprint() == OLD_FINGERPRINT


def test_old_spec_keys_are_unknown_keys(pipe_dir, clip_name):
    """Renamed before the first release: a TOML spec must use the new names (a stored spec may hold
    the old ones, read by upgrade_spec_dict above)."""
    old = spec_dict(pipe_dir, clip_name)
    old["pipeline"]["guidance"] = old["pipeline"].pop("guidance_scale")
    with pytest.raises(SpecError, match=r"pipeline\.guidance: unknown key; fix: use one of .*'guidance_scale'"):
        parse_spec(old, source="audits/old.toml")
    old = spec_dict(pipe_dir, clip_name, report__random_state=9)
    with pytest.raises(SpecError, match=r"report\.random_state: unknown key; fix: use one of .*'seed'"):
        parse_spec(old, source="audits/old.toml")


def test_old_attribute_and_constructor_names_are_gone(make_spec):
    from diffkit.audit.spec import PipelineSpec, ReportSpec

    spec = make_spec()
    assert not hasattr(spec.pipeline, "guidance") and not hasattr(spec.report, "random_state")
    with pytest.raises(TypeError):
        PipelineSpec(model="m", guidance=3.0)
    with pytest.raises(TypeError):
        ReportSpec(random_state=2)


def test_bundled_specs_use_the_current_keys():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bundled spec loads without a warning
        for name in bundled_specs():
            load_spec(name)


def test_a_spec_saved_with_a_byte_order_mark_is_read(tmp_path):
    """Windows editors start UTF-8 files with a BOM; tomllib alone says "Invalid statement (line 1, column 1)"."""
    from diffkit.audit import load_spec

    text = (REPO / "audits" / "tiny_default.toml").read_text(encoding="utf-8")
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    (tmp_path / "bls_cps_2021_women_share.csv").write_bytes(
        (REPO / "audits" / "bls_cps_2021_women_share.csv").read_bytes()
    )
    assert (
        load_spec(tmp_path / "bom.toml").fingerprint() == load_spec(REPO / "audits" / "tiny_default.toml").fingerprint()
    )


def test_a_stored_spec_is_checked_like_a_toml_one():
    """A run folder is input: spec_from_dict refuses what parse_spec refuses (NaN, out of range)."""
    import math

    from diffkit.audit import SpecError, load_spec
    from diffkit.audit.spec import spec_from_dict

    d = load_spec("tiny_default").to_dict()
    assert spec_from_dict(d).fingerprint() == load_spec("tiny_default").fingerprint()
    for section, key, value in [
        ("pipeline", "guidance_scale", math.nan),
        ("report", "ci", math.inf),
        ("classifier", "abstain_below", 0.2),
        ("", "seed", -1),
    ]:
        bad = json.loads(json.dumps(d))
        (bad[section] if section else bad)[key] = value
        with pytest.raises(SpecError, match=rf"{section + '.' if section else 'audit.'}{key}: .*fix: the stored spec"):
            spec_from_dict(bad, source="run/spec.json")


def test_every_bundled_spec_finds_its_reference_rows_ignoring_case():
    """An occupation matches its reference row whatever the case ("ceo" finds "CEO", as the published
    overlay matches): every occupation of every bundled spec that has a row gets its value and title."""
    import pandas as pd

    table = pd.read_csv(REPO / "audits" / "bls_cps_2021_women_share.csv")
    share = {o.casefold(): v for o, v in zip(table["occupation"], table["women_share"])}
    title = {o.casefold(): t for o, t in zip(table["occupation"], table["bls_title"])}
    found = 0
    for name in bundled_specs():
        spec = load_spec(name)
        if not spec.prompts.reference_source:
            continue
        for occ in spec.prompts.attributes["occupation"]:
            if occ.casefold() in share:
                assert spec.prompts.reference.get(occ) == pytest.approx(share[occ.casefold()]), (name, occ)
                assert spec.prompts.reference_titles.get(occ) == title[occ.casefold()], (name, occ)
                found += 1
            else:
                assert occ not in spec.prompts.reference, (name, occ)
    assert found > 0
    fd = load_spec("fair_diffusion_sd15")
    assert "ceo" in fd.prompts.attributes["occupation"] and fd.prompts.reference["ceo"] == pytest.approx(0.291)
    # and the prompts carry it, so the audit reports a reference for it
    prompts = build_prompts(fd)
    assert prompts.loc[prompts["occupation"] == "ceo", "p_ref"].dropna().unique().tolist() == pytest.approx([0.291])
