"""Bad inputs, as a hostile user would try them: each ends in a named diffkit error that says what to do.

Four areas: audit specs (``parse_spec``/``load_spec``), run folders, the command line and the
explorers' constructors. Every case names its input, the error type and words of the message;
the table in ``docs/bad_inputs.md`` is rendered from these lists (``test_docs_table_is_current``;
rewrite it with ``DIFFKIT_WRITE_DOCS=1 pytest tests/test_bad_inputs.py -k docs``).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from diffkit.audit import SpecError, parse_spec
from diffkit.audit.rundir import RunMismatchError, load_run_spec, prepare_run, run_lock
from diffkit.errors import (
    CacheDamagedError,
    DiffkitError,
    DiskFullError,
    InputError,
    ModelUnavailableError,
    OutputExistsError,
    ReadOnlyError,
    RunBusyError,
    RunFolderError,
    StateError,
)

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "bad_inputs.md"
DEL = object()  # a key removed from the spec


@dataclass(frozen=True)
class Case:
    """One bad input: what is given (*shown*), the error it must end in, and words of its message."""

    id: str
    shown: str
    error: type
    says: str
    run: Any = None


def _kw(kw: dict) -> str:
    def show(v: Any) -> str:
        text = repr(v)
        return f"{type(v).__name__}()" if " at 0x" in text else text  # no memory address in the docs table

    return ", ".join(f"{k}={show(v)}" for k, v in kw.items())


# --------------------------------------------------------------------------- specs
BASE = {
    "audit": {"name": "bad", "seed": 0, "images_per_prompt": 2, "batch_size": 2},
    "prompts": {
        "templates": ["a photo of {a_occupation}"],
        "attributes": {"occupation": ["nurse", "pilot"]},
        "reference": "bls_cps_2021_women_share.csv",
    },
    "controls": {"templates": ["a {gender} {occupation}"], "images_per_prompt": 1},
    "pipeline": {"model": "tiny", "steps": 2, "guidance_scale": 7.5},
    "classifier": {"model": "tiny"},
    "report": {"n_boot": 10, "seed": 0},
}

# (key path, value, the key the error names, words it says)
_SPEC = [
    ("audit.name", "../../x", "audit.name", "not a plain folder name"),
    ("audit.name", "a/b", "audit.name", "not a plain folder name"),
    ("audit.name", "", "audit.name", "not a plain folder name"),
    ("audit.name", ".hidden", "audit.name", "not a plain folder name"),
    ("audit.name", "..", "audit.name", "not a plain folder name"),
    ("audit.name", "my audit", "audit.name", "not a plain folder name"),
    ("audit.name", "x" * 101, "audit.name", "not a plain folder name"),
    ("audit.name", 5, "audit.name", "expected str"),
    ("audit.seed", -1, "audit.seed", "out of range"),
    ("audit.seed", 2**63, "audit.seed", "out of range"),
    ("audit.seed", "seven", "audit.seed", "expected int"),
    ("audit.seed", 1.5, "audit.seed", "expected int"),
    ("audit.seed", True, "audit.seed", "expected int"),
    ("audit.images_per_prompt", 0, "audit.images_per_prompt", "out of range"),
    ("audit.images_per_prompt", -3, "audit.images_per_prompt", "out of range"),
    ("audit.images_per_prompt", "8", "audit.images_per_prompt", "expected int"),
    ("audit.images_per_prompt", 2.0, "audit.images_per_prompt", "expected int"),
    ("audit.batch_size", 0, "audit.batch_size", "out of range"),
    ("audit.batch_size", -1, "audit.batch_size", "out of range"),
    ("audit.batch_size", "8", "audit.batch_size", "expected int"),
    ("audit.batch_size", 1.5, "audit.batch_size", "expected int"),
    ("audit.description", 5, "audit.description", "expected str"),
    ("audit.colour", 1, "audit.colour", "unknown key"),
    ("audit", "x", "audit", "expected a table"),
    ("prompts", DEL, "[prompts]", "missing table"),
    ("prompts", ["a"], "prompts", "expected a table"),
    ("prompts.templates", DEL, "prompts.templates", "missing"),
    ("prompts.templates", [], "prompts.templates", "empty list"),
    ("prompts.templates", [""], "prompts.templates[0]", "empty string"),
    ("prompts.templates", "", "prompts.templates[0]", "empty string"),
    ("prompts.templates", ["a {job}"], "prompts.templates[0]", "unknown placeholder {job}"),
    ("prompts.templates", ["a {occupation!r}"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a {occupation:>5}"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a {}"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a {0}"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a { occupation }"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a {occupation"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["a occupation}"], "prompts.templates[0]", "malformed"),
    ("prompts.templates", ["{a_occupation}", "{a_occupation}"], "prompts.templates", "duplicate entry"),
    ("prompts.templates", ["{occupation}", " {occupation} "], "prompts.templates", "duplicate entry"),
    ("prompts.templates", [1, 2], "prompts.templates", "expected a list of strings"),
    ("prompts.templates", 5, "prompts.templates", "expected a list of strings"),
    ("prompts.templates", ["a {gender} {occupation}"], "prompts.templates[0]", "unknown placeholder {gender}"),
    ("prompts.attributes", "x", "prompts.attributes", "expected a table"),
    ("prompts.attributes.occupation", [], "prompts.attributes.occupation", "empty list"),
    ("prompts.attributes.occupation", ["nurse", "nurse"], "prompts.attributes.occupation", "duplicate entry"),
    ("prompts.attributes.occupation", [1], "prompts.attributes.occupation", "expected a list of strings"),
    ("prompts.attributes.occupation", ["  "], "prompts.attributes.occupation[0]", "empty string"),
    ("prompts.attributes.occupation", {"a": 1}, "prompts.attributes.occupation", "expected a list of strings"),
    ("prompts.attributes.a_x", ["y"], "prompts.attributes.a_x", "not a usable attribute name"),
    ("prompts.attributes.gender", ["x"], "prompts.attributes.gender", "not a usable attribute name"),
    ("prompts.attributes.bad-name", ["x"], "prompts.attributes.bad-name", "not a usable attribute name"),
    ("prompts.reference", "nope.csv", "prompts.reference", "no such file"),
    ("prompts.reference", 5, "prompts.reference", "expected str"),
    ("prompts.colour", 1, "prompts.colour", "unknown key"),
    ("controls", 3, "controls", "expected a table"),
    ("controls.templates", ["a {occupation}"], "controls.templates[0]", "does not state the gender"),
    ("controls.templates", ["a {gender} {job}"], "controls.templates[0]", "unknown placeholder {job}"),
    ("controls.templates", [5], "controls.templates", "expected a list of strings"),
    ("controls.gender_words", {"female": ["woman"]}, "controls.gender_words", "expected keys female and male"),
    (
        "controls.gender_words",
        {"female": ["w"], "male": ["m"], "other": ["x"]},
        "controls.gender_words",
        "expected keys female and male",
    ),
    ("controls.gender_words", "woman", "controls.gender_words", "expected keys female and male"),
    ("controls.gender_words", {"female": [], "male": ["man"]}, "controls.gender_words.female", "empty list"),
    ("controls.images_per_prompt", 0, "controls.images_per_prompt", "out of range"),
    ("controls.images_per_prompt", "2", "controls.images_per_prompt", "expected int"),
    ("controls.colour", 1, "controls.colour", "unknown key"),
    ("pipeline", DEL, "[pipeline]", "missing table"),
    ("pipeline.model", DEL, "pipeline.model", "missing"),
    ("pipeline.model", 5, "pipeline.model", "expected str"),
    ("pipeline.steps", 0, "pipeline.steps", "out of range"),
    ("pipeline.steps", -1, "pipeline.steps", "out of range"),
    ("pipeline.steps", "25", "pipeline.steps", "expected int"),
    ("pipeline.steps", 2.5, "pipeline.steps", "expected int"),
    ("pipeline.guidance_scale", -1.0, "pipeline.guidance_scale", "out of range"),
    ("pipeline.guidance_scale", "7.5", "pipeline.guidance_scale", "expected float"),
    ("pipeline.guidance", 5.0, "pipeline.guidance", "unknown key"),  # guidance_scale's name before 0.2
    ("pipeline.height", 30, "pipeline.height", "not a multiple of 8"),
    ("pipeline.height", 0, "pipeline.height", "out of range"),
    ("pipeline.height", 4, "pipeline.height", "out of range"),
    ("pipeline.height", "512", "pipeline.height", "expected int"),
    ("pipeline.width", 31, "pipeline.width", "not a multiple of 8"),
    ("pipeline.dtype", "float64", "pipeline.dtype", "unknown dtype"),
    ("pipeline.dtype", 5, "pipeline.dtype", "expected str"),
    ("pipeline.scheduler", "fancy", "pipeline.scheduler", "unknown scheduler"),
    ("pipeline.scheduler", 5, "pipeline.scheduler", "expected str"),
    ("pipeline.revision", 5, "pipeline.revision", "expected str"),
    ("pipeline.negative_prompt", 5, "pipeline.negative_prompt", "expected str"),
    ("pipeline.colour", 1, "pipeline.colour", "unknown key"),
    ("classifier.model", 5, "classifier.model", "expected str"),
    ("classifier.model", "ViT-B-32", "classifier.pretrained", "missing for open_clip model"),
    ("classifier.templates", ["a photo"], "classifier.templates[0]", "must hold exactly one {}"),
    ("classifier.templates", ["a {} {}"], "classifier.templates[0]", "must hold exactly one {}"),
    ("classifier.templates", ["a {x}"], "classifier.templates[0]", "must hold exactly one {}"),
    ("classifier.templates", ["a {"], "classifier.templates[0]", "must hold exactly one {}"),
    ("classifier.templates", [], "classifier.templates", "empty list"),
    ("classifier.labels", "x", "classifier.labels", "expected a table"),
    ("classifier.labels", {"female": ["w"], "alien": ["x"]}, "classifier.labels.alien", "unknown class"),
    ("classifier.labels", {"female": []}, "classifier.labels.female", "empty list"),
    ("classifier.person_threshold", -0.1, "classifier.person_threshold", "out of range"),
    ("classifier.person_threshold", 1.5, "classifier.person_threshold", "out of range"),
    ("classifier.person_threshold", "0.5", "classifier.person_threshold", "expected float"),
    ("classifier.abstain_below", 0.4, "classifier.abstain_below", "out of range"),
    ("classifier.abstain_below", 1.1, "classifier.abstain_below", "out of range"),
    ("classifier.batch_size", 0, "classifier.batch_size", "out of range"),
    ("classifier.batch_size", "64", "classifier.batch_size", "expected int"),
    ("classifier.colour", 1, "classifier.colour", "unknown key"),
    ("report.n_boot", -1, "report.n_boot", "out of range"),
    ("report.n_boot", "1000", "report.n_boot", "expected int"),
    ("report.ci", 0.3, "report.ci", "out of range"),
    ("report.ci", 1.0, "report.ci", "out of range"),
    ("report.ci", "0.95", "report.ci", "expected float"),
    ("report.seed", -1, "report.seed", "out of range"),
    ("report.seed", 0.5, "report.seed", "expected int"),
    ("report.random_state", 1, "report.random_state", "unknown key"),  # seed's name before 0.2
    ("report.thumbnails_per_prompt", -1, "report.thumbnails_per_prompt", "out of range"),
    ("report.colour", 1, "report.colour", "unknown key"),
    ("extra", {"x": 1}, "[extra]", "unknown table"),
    # NaN and inf pass every comparison: each float key refuses them by name
    ("pipeline.guidance_scale", float("nan"), "pipeline.guidance_scale", "not a finite number"),
    ("pipeline.guidance_scale", float("inf"), "pipeline.guidance_scale", "not a finite number"),
    ("pipeline.guidance_scale", float("-inf"), "pipeline.guidance_scale", "not a finite number"),
    ("pipeline.guidance_scale", 1e6, "pipeline.guidance_scale", "out of range"),
    ("classifier.person_threshold", float("nan"), "classifier.person_threshold", "not a finite number"),
    ("classifier.abstain_below", float("nan"), "classifier.abstain_below", "not a finite number"),
    ("classifier.abstain_below", float("inf"), "classifier.abstain_below", "not a finite number"),
    ("report.ci", float("nan"), "report.ci", "not a finite number"),
    ("report.ci", float("-inf"), "report.ci", "not a finite number"),
    # huge values: refused with the bound, before any image
    ("audit.images_per_prompt", 10**9, "audit.images_per_prompt", "out of range"),
    ("audit.images_per_prompt", 600_000, "audit.images_per_prompt", "over the 1,000,000 one run folder holds"),
    ("controls.images_per_prompt", 10**9, "controls.images_per_prompt", "out of range"),
    ("audit.batch_size", 10**6, "audit.batch_size", "out of range"),
    ("audit.seed", 2**64, "audit.seed", "out of range"),
    ("pipeline.steps", 10**6, "pipeline.steps", "out of range"),
    ("pipeline.height", 10**6, "pipeline.height", "out of range"),
    ("classifier.batch_size", 10**7, "classifier.batch_size", "out of range"),
    ("report.n_boot", 10**9, "report.n_boot", "out of range"),
    ("report.seed", 2**63, "report.seed", "out of range"),
    ("report.thumbnails_per_prompt", 10**6, "report.thumbnails_per_prompt", "out of range"),
    # seeds, noise, sweeps, the labeller and replication (issue 23)
    ("audit.seeds", "random", "audit.seeds", "unknown seed scheme"),
    ("audit.seeds", "nope.csv", "audit.seeds", "no such file"),
    ("audit.seeds", 5, "audit.seeds", "expected str"),
    ("audit.seeds", "uce_sd14_original_bias.csv", "audit.seeds", "has no seed for the prompt"),
    ("audit.seeds", "bls_cps_2021_women_share.csv", "audit.seeds", "lacks a prompt or a seed column"),
    ("audit.noise", "batch", "audit.noise", "unknown noise scheme"),
    ("audit.noise", "per_prompt", "audit.noise", "draws one batch of latents from each prompt's own seed"),
    ("pipeline.guidance_scale", [], "pipeline.guidance_scale", "empty list"),
    ("pipeline.guidance_scale", [7.5, 7.5], "pipeline.guidance_scale", "listed twice"),
    ("pipeline.guidance_scale", [1.0, -1.0], "pipeline.guidance_scale[1]", "out of range"),
    ("pipeline.guidance_scale", [1.0, float("nan")], "pipeline.guidance_scale[1]", "not a finite number"),
    ("pipeline.guidance_scale", [1.0, "x"], "pipeline.guidance_scale[1]", "expected float"),
    ("pipeline.steps", [10, 0], "pipeline.steps[1]", "out of range"),
    ("pipeline.steps", [10, 2.5], "pipeline.steps[1]", "expected int"),
    ("pipeline.scheduler", ["ddim", "fancy"], "pipeline.scheduler[1]", "unknown scheduler"),
    ("pipeline.generator_device", "gpu", "pipeline.generator_device", "unknown generator device"),
    ("pipeline.safety_checker", "no", "pipeline.safety_checker", "expected bool"),
    ("classifier.kind", "fairface", "classifier.kind", "unknown labeller kind"),
    ("classifier.gate", "maybe", "classifier.gate", "unknown gate"),
    ("classifier.gate", "faces", "classifier.detector", "missing"),
    (
        "classifier",
        {
            "kind": "face_crop",
            "model": "pkg.mod:net",
            "detector": "pkg.mod:faces",
            "gate": "clip",
            "label_map": {"female": 1, "male": 0},
        },
        "classifier.gate",
        "no CLIP person gate",
    ),
    (
        "classifier",
        {"kind": "face_crop", "model": "fairface", "detector": "pkg.mod:faces", "label_map": {"female": 1, "male": 0}},
        "classifier.model",
        "not a 'module:callable' name",
    ),
    (
        "classifier",
        {"kind": "face_crop", "model": "pkg.mod:net", "detector": "pkg.mod:faces"},
        "classifier.label_map",
        "needs female and male",
    ),
    ("classifier.detector", "dlib", "classifier.detector", "not a 'module:callable' name"),
    ("classifier.detector", "../x.py:detect", "classifier.detector", "not a 'module:callable' name"),
    ("classifier.label_map", "x", "classifier.label_map", "expected a table"),
    ("classifier.label_map", {"alien": 1}, "classifier.label_map.alien", "unknown class"),
    ("classifier.label_map", {"female": -1}, "classifier.label_map.female", "out of range"),
    ("classifier.label_map", {"female": 1, "male": 1}, "classifier.label_map", "the same output"),
    ("classifier.crop_size", 4, "classifier.crop_size", "out of range"),
    ("classifier.crop_margin", -0.1, "classifier.crop_margin", "out of range"),
    ("classifier.crop_margin", float("nan"), "classifier.crop_margin", "not a finite number"),
    ("classifier.keep_first", 0, "classifier.keep_first", "out of range"),
    ("classifier.keep_first", 5, "classifier.keep_first", "more than the 2 images per prompt"),
    ("classifier", {"model": "tiny", "gate": "none", "keep_first": 1}, "classifier.keep_first", "gate = 'none'"),
    ("classifier.phrase_sets", ["nope"], "classifier.phrase_sets[0]", "unknown phrase set"),
    ("classifier.labels", {"several_people": []}, "classifier.labels.several_people", "empty list"),
    ("replication.published", "nope.csv", "replication.published", "no such file"),
    ("replication.published", 5, "replication.published", "expected str"),
    ("replication.published", "bls_cps_2021_women_share.csv", "replication.published", "has neither"),
    ("replication.colour", 1, "replication.colour", "unknown key"),
]


def _set(d: dict, path: str, value: Any) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    t = d
    for k in parents:
        t = t.setdefault(k, {})
    if value is DEL:
        t.pop(last, None)
    else:
        t[last] = value
    return d


def _toml_value(v: Any) -> str:
    if v is DEL:
        return "(removed)"
    text = json.dumps(v)
    if len(text) <= 60:
        return text
    return f'{text[:12]}…" ({len(v)} characters)' if isinstance(v, str) else text[:57] + "…"


SPEC_CASES = [
    Case(f"spec-{i:03d}", f"`{path} = {_toml_value(v)}`", SpecError, says, (path, v, key))
    for i, (path, v, key, says) in enumerate(_SPEC)
]


@pytest.mark.parametrize("case", SPEC_CASES, ids=lambda c: c.id)
def test_bad_spec(case):
    path, value, key = case.run
    with pytest.raises(SpecError) as e:
        parse_spec(_set(BASE, path, value), source="bad.toml")
    msg = str(e.value)
    assert msg.startswith(f"bad.toml: {key}: ") and "; fix: " in msg and case.says in msg, msg


def test_the_base_spec_is_good():
    assert parse_spec(copy.deepcopy(BASE), source="good.toml").name == "bad"


def test_a_spec_that_is_not_a_table():
    with pytest.raises(SpecError, match="a table of tables"):
        parse_spec(["audit"], source="bad.toml")


# --------------------------------------------------------------------------- spec files
def _file(text: bytes | None = None, *, kind: str = "file") -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        p = tmp / "spec.toml"
        if kind == "dir":
            p.mkdir()
        elif kind == "file":
            p.write_bytes(text)
        return p

    return make


def _with_ref(csv: bytes) -> Callable[[Path], Path]:
    """A spec whose reference CSV holds *csv*."""

    def make(tmp: Path) -> Path:
        (tmp / "ref.csv").write_bytes(csv)
        return _file(b'[prompts]\ntemplates=["{occupation}"]\nreference="ref.csv"\n[pipeline]\nmodel="tiny"\n')(tmp)

    return make


FILE_CASES = [
    Case("file-missing", "a path that does not exist", SpecError, "no such spec file", _file(kind="none")),
    Case("file-dir", "a folder instead of a file", SpecError, "no such spec file", _file(kind="dir")),
    Case("file-syntax", "`[audit` (broken TOML)", SpecError, "not valid TOML", _file(b"[audit\nname = 1")),
    Case("file-binary", "bytes that are not UTF-8", SpecError, "not UTF-8 text", _file(b"\xff\xfe\x00bad")),
    Case("file-empty", "an empty file", SpecError, "[prompts]: missing table", _file(b"")),
    Case(
        "file-scalar-table",
        "`audit = 5`",
        SpecError,
        "audit: expected a table",
        _file(b'audit = 5\n[prompts]\ntemplates=["{occupation}"]\n'),
    ),
    Case(
        "file-bad-ref-csv",
        "a reference CSV without its columns",
        SpecError,
        "lacks column(s)",
        lambda tmp: (
            (tmp / "ref.csv").write_text("job,share\nnurse,0.9\n")
            and _file(b'[prompts]\ntemplates=["{occupation}"]\nreference="ref.csv"\n[pipeline]\nmodel="tiny"\n')(tmp)
        ),
    ),
    Case(
        "file-ref-percent",
        "a reference CSV in percent (86.7)",
        SpecError,
        "fraction in [0, 1]",
        lambda tmp: (
            (tmp / "ref.csv").write_text("occupation,women_share\nnurse,86.7\n")
            and _file(b'[prompts]\ntemplates=["{occupation}"]\nreference="ref.csv"\n[pipeline]\nmodel="tiny"\n')(tmp)
        ),
    ),
    Case(
        "file-ref-empty", "an empty reference CSV (0 bytes)", SpecError, "is not a readable CSV table", _with_ref(b"")
    ),
    Case(
        "file-ref-binary",
        "a reference CSV of binary bytes",
        SpecError,
        "is not a readable CSV table",
        _with_ref(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe" * 20),
    ),
    Case(
        "file-ref-header-only",
        "a reference CSV with a header and no rows",
        SpecError,
        "has a header but no rows",
        _with_ref(b"occupation,women_share,year,source\n"),
    ),
    Case(
        "file-ref-bad-year",
        "a reference CSV whose year is `twenty`",
        SpecError,
        "is not a year",
        _with_ref(b"occupation,women_share,year,source\nnurse,0.867,twenty,BLS\n"),
    ),
    Case(
        "file-ref-odd-year",
        "a reference CSV whose year is 20210",
        SpecError,
        "not a plausible whole year",
        _with_ref(b"occupation,women_share,year,source\nnurse,0.867,20210,BLS\n"),
    ),
    Case(
        "file-ref-ragged",
        "a reference CSV with a ragged row",
        SpecError,
        "is not a readable CSV table",
        _with_ref(b"occupation,women_share\nnurse,0.867,1,2,3\n"),
    ),
    Case(
        "file-toml-nan",
        "`guidance_scale = nan` written in TOML",
        SpecError,
        "not a finite number",
        _file(
            b'[prompts]\ntemplates=["{occupation}"]\nattributes.occupation=["nurse"]\n'
            b'[pipeline]\nmodel="tiny"\nguidance_scale = nan\n'
        ),
    ),
    Case(
        "file-toml-inf",
        "`person_threshold = inf` written in TOML",
        SpecError,
        "not a finite number",
        _file(
            b'[prompts]\ntemplates=["{occupation}"]\nattributes.occupation=["nurse"]\n'
            b'[pipeline]\nmodel="tiny"\n[classifier]\nperson_threshold = inf\n'
        ),
    ),
    Case(
        "file-utf16",
        "a spec saved as UTF-16",
        SpecError,
        "not UTF-8 text",
        _file('[pipeline]\nmodel="tiny"\n'.encode("utf-16")),
    ),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda c: c.id)
def test_bad_spec_file(case, tmp_path):
    from diffkit.audit import load_spec

    path = case.run(tmp_path)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    assert case.says in str(e.value) and "fix: " in str(e.value), str(e.value)


# --------------------------------------------------------------------------- run folders
def _spec():
    return parse_spec(copy.deepcopy(BASE), source="good.toml")


def _fresh_run(tmp: Path, weights: str = "sha256:old") -> Path:
    run = tmp / "run"
    prepare_run(_spec(), run, weights=weights)
    return run


def _done_one(run: Path) -> None:
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute("UPDATE images SET status = 'done', sha256 = 'x' WHERE prompt_id = 0 AND image_index = 0")
    con.commit()
    con.close()


def _rf_empty(tmp):
    (tmp / "e").mkdir()
    load_run_spec(tmp / "e")


def _rf_spec_only(tmp):
    (tmp / "s").mkdir()
    (tmp / "s" / "spec.json").write_text("{}")
    load_run_spec(tmp / "s")


def _rf_garbage(tmp):
    (tmp / "g").mkdir()
    (tmp / "g" / "ledger.sqlite").write_bytes(b"not a database" * 64)
    load_run_spec(tmp / "g")


def _rf_other_schema(tmp):
    (tmp / "o").mkdir()
    con = sqlite3.connect(tmp / "o" / "ledger.sqlite")
    con.execute("CREATE TABLE images (x)")
    con.commit()
    con.close()
    load_run_spec(tmp / "o")


def _rf_no_spec(tmp):
    (tmp / "n").mkdir()
    sqlite3.connect(tmp / "n" / "ledger.sqlite").close()
    load_run_spec(tmp / "n")


def _rf_damaged_spec(tmp):
    run = _fresh_run(tmp)
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute("UPDATE meta SET value = '{\"name\": \"x\"}' WHERE key = 'spec'")
    con.commit()
    con.close()
    load_run_spec(run)


def _rf_edited(tmp):
    run = _fresh_run(tmp)
    d = json.loads((run / "spec.json").read_text())
    d["prompts"]["attributes"]["occupation"].append("lawyer")
    (run / "spec.json").write_text(json.dumps(d))
    load_run_spec(run)


def _rf_not_json(tmp):
    run = _fresh_run(tmp)
    (run / "spec.json").write_text("{oops")
    load_run_spec(run)


def _rf_foreign(tmp):
    (tmp / "photos").mkdir()
    (tmp / "photos" / "holiday.jpg").write_bytes(b"x")
    prepare_run(_spec(), tmp / "photos")


def _rf_other_spec(tmp):
    run = _fresh_run(tmp)
    _done_one(run)
    prepare_run(parse_spec(_set(BASE, "audit.seed", 9), source="other.toml"), run)


def _rf_other_weights(tmp):
    run = _fresh_run(tmp, "sha256:old")
    _done_one(run)
    prepare_run(_spec(), run, weights="sha256:new")


@contextlib.contextmanager
def _busy(run):
    """*run*'s lock held by another thread (as another process would hold it) for the block."""
    import threading

    taken, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run, "generating images"):
            taken.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    taken.wait(60)
    try:
        yield
    finally:
        release.set()
        t.join()


def _rf_busy(tmp):
    run = _fresh_run(tmp)
    with _busy(run), run_lock(run):
        pass


def _rf_busy_report(tmp):
    from diffkit.audit import report_audit

    run = _fresh_run(tmp)
    with _busy(run):
        report_audit(run, progress=False)


def _rf_busy_score(tmp):
    from diffkit.audit import score_images

    run = _fresh_run(tmp)
    with _busy(run):
        score_images(_spec(), run, progress=False)


def _rf_score_not_a_run(tmp):
    from diffkit.audit import score_images

    score_images(_spec(), tmp, progress=False)


def _rf_out_is_file(tmp):
    (tmp / "f").write_text("x")
    prepare_run(_spec(), tmp / "f")


def _rf_out_under_file(tmp):
    (tmp / "f").write_text("x")
    prepare_run(_spec(), tmp / "f" / "run")


def _rf_long_template(tmp):
    from diffkit.audit.generate import check_prompt_lengths
    from diffkit.pipeline import load_pipeline

    spec = parse_spec(
        _set(BASE, "prompts.templates", ["a photo of " + "very " * 80 + "{a_occupation}"]), source="long.toml"
    )
    check_prompt_lengths(spec, load_pipeline("tiny", device="cpu").tokenizer)


def _edit_ledger(run: Path, sql: str, *args) -> None:
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute(sql, args)
    con.commit()
    con.close()


def _rf_path(path: str):
    def run(tmp):
        r = _fresh_run(tmp)
        _edit_ledger(r, "UPDATE images SET path = ?, status = 'pending' WHERE prompt_id = 0 AND image_index = 0", path)
        prepare_run(_spec(), r)  # what `audit run` does first on a folder it resumes

    return run


def _rf_seed_edited(tmp):
    r = _fresh_run(tmp)
    _edit_ledger(r, "UPDATE images SET seed = 7 WHERE prompt_id = 1 AND image_index = 1")
    prepare_run(_spec(), r)


def _rf_row_added(tmp):
    r = _fresh_run(tmp)
    _edit_ledger(
        r,
        "INSERT INTO images (prompt_id, image_index, prompt, seed, path, batch) VALUES "
        "(0, 99, 'a photo of a nurse', 1, 'images/0000/0099.png', 0)",
    )
    prepare_run(_spec(), r)


def _rf_score_edited(tmp):
    from diffkit.audit import score_images

    r = _fresh_run(tmp)
    _edit_ledger(
        r,
        "UPDATE images SET path = '/etc/passwd', status = 'done', sha256 = 'x' WHERE prompt_id = 0 AND image_index = 0",
    )
    score_images(_spec(), r, progress=False)


def _rf_stored_nan(tmp):
    r = _fresh_run(tmp)
    d = json.loads((r / "spec.json").read_text())
    d["pipeline"]["guidance_scale"] = float("nan")
    text = json.dumps(d, sort_keys=True)
    _edit_ledger(r, "UPDATE meta SET value = ? WHERE key = 'spec'", text)
    (r / "spec.json").write_text(text)
    load_run_spec(r)


def _rf_cache_damaged(tmp):
    from diffkit.audit import score_images

    r = _fresh_run(tmp)
    (r / "cache").mkdir()
    (r / "cache" / "embeddings.sqlite").write_bytes(b"not a database" * 100)
    score_images(_spec(), r, progress=False)


def _rf_report_empty(tmp):
    from diffkit.audit import report_audit

    report_audit(_fresh_run(tmp), progress=False)


RUN_CASES = [
    Case("run-empty", "`audit report` of an empty folder", RunFolderError, "not an audit run folder", _rf_empty),
    Case(
        "run-spec-only",
        "a folder with spec.json and no ledger",
        RunFolderError,
        "has spec.json but no ledger",
        _rf_spec_only,
    ),
    Case("run-garbage-ledger", "ledger.sqlite that is not SQLite", RunFolderError, "not a diffkit ledger", _rf_garbage),
    Case("run-foreign-ledger", "ledger.sqlite of another program", RunFolderError, "lacks", _rf_other_schema),
    Case("run-no-spec", "a ledger that never recorded a spec", RunFolderError, "holds no spec", _rf_no_spec),
    Case(
        "run-damaged-spec",
        "a ledger whose stored spec lacks keys",
        RunFolderError,
        "stored spec is damaged",
        _rf_damaged_spec,
    ),
    Case(
        "run-edited-spec",
        "spec.json edited after the run (an occupation added)",
        RunMismatchError,
        "differs from the spec this run was generated with",
        _rf_edited,
    ),
    Case("run-spec-not-json", "spec.json that is not JSON", RunMismatchError, "not valid JSON", _rf_not_json),
    Case(
        "run-foreign-folder", "`--out` a folder of other files", RunMismatchError, "holds no audit ledger", _rf_foreign
    ),
    Case(
        "run-other-spec",
        "`--out` a run of another spec",
        RunMismatchError,
        "holds a run of another spec",
        _rf_other_spec,
    ),
    Case(
        "run-other-weights",
        "the model's weights changed between two halves of a run",
        RunMismatchError,
        "generated with other weights",
        _rf_other_weights,
    ),
    Case("run-busy", "a second run on a folder in use", RunBusyError, "in use by another diffkit run", _rf_busy),
    Case(
        "run-busy-report",
        "`audit report` of a folder another process generates into",
        RunBusyError,
        "generating images since",
        _rf_busy_report,
    ),
    Case(
        "run-busy-score",
        "`score_images` of a folder another process generates into",
        RunBusyError,
        "in use by another diffkit run (pid",
        _rf_busy_score,
    ),
    Case(
        "run-score-not-a-run",
        "`score_images` of a folder that is not a run",
        RunFolderError,
        "not an audit run folder",
        _rf_score_not_a_run,
    ),
    Case("run-out-is-file", "`--out` an existing file", RunFolderError, "exists and is not a folder", _rf_out_is_file),
    Case(
        "run-out-under-file",
        "`--out` a path below a file",
        RunFolderError,
        "part of its path is a file",
        _rf_out_under_file,
    ),
    Case(
        "run-long-template",
        "a template longer than the text encoder reads",
        SpecError,
        "over the text encoder's limit",
        _rf_long_template,
    ),
    Case(
        "run-ledger-escapes",
        "a ledger row's path set to `../../x.png` (pending), then `audit run`",
        RunMismatchError,
        "outside the run folder",
        _rf_path("../../x.png"),
    ),
    Case(
        "run-ledger-absolute",
        "a ledger row's path set to `/tmp/x.png`, then `audit run`",
        RunMismatchError,
        "outside the run folder",
        _rf_path("/tmp/x.png"),
    ),
    Case(
        "run-ledger-other-path",
        "a ledger row's path set to another image's",
        RunMismatchError,
        "whose path is not the spec's",
        _rf_path("images/0000/0001.png"),
    ),
    Case(
        "run-ledger-seed",
        "a ledger row's seed edited by hand",
        RunMismatchError,
        "whose seed is not the spec's",
        _rf_seed_edited,
    ),
    Case(
        "run-ledger-row-added", "a ledger row added by hand", RunMismatchError, "the spec does not make", _rf_row_added
    ),
    Case(
        "run-ledger-score-escapes",
        "scoring a run whose ledger names `/etc/passwd`",
        RunMismatchError,
        "outside the run folder",
        _rf_score_edited,
    ),
    Case(
        "run-stored-spec-nan",
        "a run folder whose stored spec has `guidance_scale` NaN",
        RunFolderError,
        "not a finite number",
        _rf_stored_nan,
    ),
    Case(
        "run-cache-damaged",
        "a damaged `cache/embeddings.sqlite`",
        CacheDamagedError,
        "the run's images and ledger are fine",
        _rf_cache_damaged,
    ),
    Case(
        "run-report-empty",
        "`audit report` of a run with no finished image",
        StateError,
        "no finished audit image to report yet",
        _rf_report_empty,
    ),
]


def _raises_named(case: Case, tmp_path: Path) -> None:
    """*case* ends in its error class, a DiffkitError, whose message holds its words and a fix."""
    with pytest.raises(case.error) as e:
        case.run(tmp_path)
    assert isinstance(e.value, DiffkitError)
    assert case.says in str(e.value) and "fix" in str(e.value), str(e.value)


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.id)
def test_bad_run_folder(case, tmp_path):
    _raises_named(case, tmp_path)


# --------------------------------------------------------------------------- the command line
def _toml(tmp: Path, text: str) -> str:
    p = tmp / "spec.toml"
    p.write_text(text)
    return str(p)


_GOOD_TOML = """[audit]
name = "cli"
images_per_prompt = 1
[prompts]
templates = ["a photo of {a_occupation}"]
attributes.occupation = ["nurse"]
[pipeline]
model = "tiny"
steps = 1
"""


def _cli_garbage_ledger(tmp):
    (tmp / "g").mkdir()
    (tmp / "g" / "ledger.sqlite").write_bytes(b"garbage" * 100)
    return ["audit", "report", str(tmp / "g")]


def _cli_edited_spec(tmp):
    run = _fresh_run(tmp)
    (run / "spec.json").write_text("{}")
    return ["audit", "report", str(run)]


CLI_CASES = [
    Case(
        "cli-no-spec",
        "`diffkit audit run nope.toml`",
        SpecError,
        "no such spec file",
        lambda tmp: ["audit", "run", str(tmp / "nope.toml")],
    ),
    Case(
        "cli-bad-toml",
        "`diffkit audit run` of broken TOML",
        SpecError,
        "not valid TOML",
        lambda tmp: ["audit", "run", _toml(tmp, "[audit\n")],
    ),
    Case(
        "cli-name-traversal",
        '`diffkit audit run` with `audit.name = "../../x"`',
        SpecError,
        "not a plain folder name",
        lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML.replace('"cli"', '"../../x"'))],
    ),
    Case(
        "cli-unknown-key",
        "`diffkit audit run` with an unknown key",
        SpecError,
        "unknown key",
        lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML.replace("steps = 1", "step = 1"))],
    ),
    Case(
        "cli-clip-offline",
        "`diffkit audit run` whose CLIP judge is not available",
        ModelUnavailableError,
        "could not load the CLIP judge",
        lambda tmp: [
            "audit",
            "run",
            _toml(tmp, _GOOD_TOML + '[classifier]\nmodel = "ViT-B-32"\npretrained = "no-such-weights"\n'),
        ],
    ),
    Case(
        "cli-model-folder",
        "`diffkit audit run --model` a folder that does not exist",
        ModelUnavailableError,
        "no such folder",
        lambda tmp: [
            "audit",
            "run",
            _toml(tmp, _GOOD_TOML),
            "--model",
            str(tmp / "no" / "model"),
            "--out",
            str(tmp / "o"),
            "--no-progress",
        ],
    ),
    Case(
        "cli-model-not-cached",
        "`diffkit audit run --model` a hub id that is not cached, offline",
        ModelUnavailableError,
        "hf download",
        lambda tmp: [
            "audit",
            "run",
            _toml(tmp, _GOOD_TOML),
            "--model",
            "diffkit-nobody/not-cached",
            "--out",
            str(tmp / "o"),
            "--no-progress",
        ],
    ),
    Case(
        "cli-out-file",
        "`diffkit audit run --out` an existing file",
        RunFolderError,
        "exists and is not a folder",
        lambda tmp: (
            (tmp / "f").write_text("x")
            and ["audit", "run", _toml(tmp, _GOOD_TOML), "--out", str(tmp / "f"), "--no-progress"]
        ),
    ),
    Case(
        "cli-report-missing",
        "`diffkit audit report` of a folder that does not exist",
        RunFolderError,
        "not an audit run folder",
        lambda tmp: ["audit", "report", str(tmp / "nope")],
    ),
    Case(
        "cli-report-garbage",
        "`diffkit audit report` of a garbage ledger",
        RunFolderError,
        "not a diffkit ledger",
        _cli_garbage_ledger,
    ),
    Case(
        "cli-report-edited",
        "`diffkit audit report` after spec.json was edited",
        RunMismatchError,
        "differs from the spec",
        _cli_edited_spec,
    ),
    Case(
        "cli-compare-missing",
        "`diffkit audit compare` of folders that do not exist",
        RunFolderError,
        "not an audit run folder",
        lambda tmp: ["audit", "compare", str(tmp / "a"), str(tmp / "b")],
    ),
    Case(
        "cli-demo-out-file",
        "`diffkit demo --out` below an existing file",
        OutputExistsError,
        "a file is in the way",
        lambda tmp: (tmp / "f").write_text("x") and ["demo", "--no-model", "--out", str(tmp / "f" / "d")],
    ),
    Case(
        "cli-unet-out-file",
        "`diffkit unet --out` below an existing file",
        OutputExistsError,
        "a file is in the way",
        lambda tmp: (tmp / "f").write_text("x") and ["unet", "--out", str(tmp / "f" / "d")],
    ),
    Case(
        "cli-reverse-out-file",
        "`diffkit reverse --out` below an existing file",
        OutputExistsError,
        "a file is in the way",
        lambda tmp: (tmp / "f").write_text("x") and ["reverse", "a red circle", "--out", str(tmp / "f" / "d")],
    ),
    Case(
        "cli-compare-out-file",
        "`diffkit audit compare --out` an existing file",
        OutputExistsError,
        "a file is in the way",
        lambda tmp: (tmp / "f").write_text("x") and ["audit", "compare", "a", "b", "--out", str(tmp / "f")],
    ),
    Case(
        "cli-audit-nan",
        "`diffkit audit run` of a spec with `guidance_scale = nan`",
        SpecError,
        "not a finite number",
        lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML + "guidance_scale = nan\n")],
    ),
    Case(
        "cli-audit-huge",
        "`diffkit audit run` of a spec with `images_per_prompt = 1000000000`",
        SpecError,
        "out of range",
        lambda tmp: [
            "audit",
            "run",
            _toml(tmp, _GOOD_TOML.replace("images_per_prompt = 1", "images_per_prompt = 1000000000")),
        ],
    ),
    Case(
        "cli-audit-utf16",
        "`diffkit audit run` of a UTF-16 spec",
        SpecError,
        "not UTF-8 text",
        lambda tmp: ["audit", "run", str((tmp / "s.toml").write_bytes(_GOOD_TOML.encode("utf-16")) and tmp / "s.toml")],
    ),
    Case(
        "cli-plan-none",
        "`diffkit audit plan` with no goal",
        InputError,
        "give exactly one goal",
        lambda tmp: ["audit", "plan"],
    ),
    Case(
        "cli-plan-both",
        "`diffkit audit plan --half-width 0.1 --power 0.8`",
        InputError,
        "give exactly one goal",
        lambda tmp: ["audit", "plan", "--half-width", "0.1", "--power", "0.8"],
    ),
    Case(
        "cli-plan-tiny-width",
        "`diffkit audit plan --half-width 0.001`",
        InputError,
        "needs more than 100,000",
        lambda tmp: ["audit", "plan", "--half-width", "0.001"],
    ),
    Case(
        "cli-plan-huge-power",
        "`diffkit audit plan --power 0.999999 --imbalance 0.001`",
        InputError,
        "more than 100,000 labelled images",
        lambda tmp: ["audit", "plan", "--power", "0.999999", "--imbalance", "0.001"],
    ),
    Case(
        "cli-plan-nan-width",
        "`diffkit audit plan --half-width nan`",
        InputError,
        "half_width must be in (0, 0.5)",
        lambda tmp: ["audit", "plan", "--half-width", "nan"],
    ),
    Case(
        "cli-plan-nan-ci",
        "`diffkit audit plan --half-width 0.1 --ci nan`",
        InputError,
        "ci=nan is not a finite number",
        lambda tmp: ["audit", "plan", "--half-width", "0.1", "--ci", "nan"],
    ),
    Case(
        "cli-plan-no-imbalance",
        "`diffkit audit plan --power 0.8`",
        InputError,
        "power needs imbalance",
        lambda tmp: ["audit", "plan", "--power", "0.8"],
    ),
    Case(
        "cli-plan-rate",
        "`diffkit audit plan --half-width 0.1 --unlabelled-rate 1`",
        InputError,
        "unlabelled_rate must be in [0, 1)",
        lambda tmp: ["audit", "plan", "--half-width", "0.1", "--unlabelled-rate", "1"],
    ),
    Case(
        "cli-reverse-steps-zero",
        "`diffkit reverse --steps 0`",
        InputError,
        "steps=0 is out of range",
        lambda tmp: ["reverse", "a red circle", "--steps", "0", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-steps-past-T",
        "`diffkit reverse --steps 5000`",
        InputError,
        "more than the 1000 timesteps",
        lambda tmp: ["reverse", "a red circle", "--steps", "5000", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-pndm-past-T",
        "`diffkit reverse --steps 1001 --scheduler pndm`",
        InputError,
        "PNDMScheduler: past them",
        lambda tmp: ["reverse", "a red circle", "--steps", "1001", "--scheduler", "pndm", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-seed",
        "`diffkit reverse --seed -1`",
        InputError,
        "seed=-1 is out of range",
        lambda tmp: ["reverse", "a red circle", "--seed", "-1", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-nan",
        "`diffkit reverse --guidance-scale nan`",
        InputError,
        "guidance_scale must be ≥ 0",
        lambda tmp: ["reverse", "a red circle", "--guidance-scale", "nan", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-size",
        "`diffkit reverse --height 33 --width 32`",
        InputError,
        "not a multiple of the VAE factor",
        lambda tmp: ["reverse", "a red circle", "--height", "33", "--width", "32", "--out", str(tmp / "o")],
    ),
    Case(
        "cli-reverse-model",
        "`diffkit reverse --model ./nope`",
        ModelUnavailableError,
        "no such folder",
        lambda tmp: ["reverse", "a red circle", "--model", "./nope", "--out", str(tmp / "o")],
    ),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.id)
def test_bad_command_line(case, tmp_path, capsys, monkeypatch):
    from diffkit.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("DIFFKIT_DEBUG", raising=False)
    monkeypatch.chdir(tmp_path)
    argv = case.run(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and "unexpected" not in err, err  # a named error, not a bug
    err = err.splitlines()[-1]  # the error's one line (after any model-loading bars)
    assert err.startswith("diffkit ") and ": error: " in err and case.says in err and "fix" in err.lower(), err
    with pytest.raises(case.error):  # --debug: the same error, raised with its traceback
        main([*argv, "--debug"])


def test_interrupt_is_one_line(capsys, monkeypatch):
    import diffkit.demo
    from diffkit.cli import main

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(diffkit.demo, "run_demo", interrupted)
    assert main(["demo", "--no-model", "--out", "x"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == "diffkit demo: interrupted; finished work is kept, rerun the same command to resume"


def test_unexpected_errors_say_how_to_report_them(capsys, monkeypatch):
    import diffkit.demo
    from diffkit.cli import main

    def bug(*a, **k):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(diffkit.demo, "run_demo", bug)
    assert main(["demo", "--no-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "Traceback (most recent call last):" and "ZeroDivisionError: division by zero" in err
    assert err[-1].startswith(
        "diffkit demo: error: unexpected ZeroDivisionError: division by zero; this is a bug "
        "in diffkit, please report it"
    )


# --------------------------------------------------------------------------- ReverseChain
_REVERSE = [
    # (id, keyword arguments, words of the message)
    ("steps-zero", {"steps": 0}, "steps=0 is out of range; fix: pass an integer between 1 and 1000"),
    ("steps-negative", {"steps": -3}, "steps=-3 is out of range"),
    ("steps-float", {"steps": 2.5}, "steps=2.5 is not an integer"),
    ("steps-bool", {"steps": True}, "steps=True is not an integer"),
    ("steps-text", {"steps": "25"}, "steps='25' is not an integer"),
    ("steps-none", {"steps": None}, "steps=None is not an integer"),
    ("guidance-negative", {"guidance_scale": -0.1}, "guidance_scale must be ≥ 0"),
    ("guidance-nan", {"guidance_scale": float("nan")}, "guidance_scale must be ≥ 0"),
    ("guidance-inf", {"guidance_scale": float("inf")}, "guidance_scale must be ≥ 0"),
    ("guidance-text", {"guidance_scale": "high"}, "guidance_scale must be a number"),
    ("guidance-none", {"guidance_scale": None}, "guidance_scale must be a number"),
    ("steps-past-T", {"steps": 1001}, "steps=1001 is more than the 1000 timesteps"),
    ("steps-past-T-pndm", {"steps": 5000, "scheduler": "pndm"}, "PNDMScheduler: past them there is no new timestep"),
    ("rescale-negative", {"guidance_rescale": -0.1}, r"guidance_rescale must be in \[0, 1\]"),
    ("rescale-big", {"guidance_rescale": 1.5}, r"guidance_rescale must be in \[0, 1\]"),
    ("seed-negative", {"seed": -1}, "seed=-1 is out of range; fix: pass an integer between 0 and 9223372036854775807"),
    ("seed-2-64", {"seed": 2**64}, "seed=18446744073709551616 is out of range"),
    ("seed-float", {"seed": 1.5}, "seed=1.5 is not an integer"),
    ("seed-bool", {"seed": True}, "seed=True is not an integer"),
    ("seed-text", {"seed": "0"}, "seed='0' is not an integer"),
    ("seed-none", {"seed": None}, "seed=None is not an integer"),
    ("height-zero", {"height": 0, "width": 32}, "height=0 is not a multiple of the VAE factor 2; fix: use 2 or 4"),
    ("height-negative", {"height": -32, "width": 32}, "height=-32 is not a multiple"),
    ("height-odd", {"height": 33, "width": 32}, "height=33 is not a multiple of the VAE factor 2; fix: use 32 or 34"),
    ("height-float", {"height": 32.0, "width": 32}, "height must be a whole number of pixels"),
    ("height-bool", {"height": True, "width": 32}, "height must be a whole number of pixels"),
    ("width-zero", {"height": 32, "width": 0}, "width=0 is not a multiple"),
    ("width-text", {"height": 32, "width": "32"}, "width must be a whole number of pixels"),
    ("prompt-none", {"prompt": None}, "prompt must be a string, got NoneType"),
    ("prompt-list", {"prompt": ["a", "b"]}, "prompt must be a string, got list"),
    ("negative-int", {"negative_prompt": 3}, "negative_prompt must be a string or None"),
    ("scheduler-typo", {"scheduler": "euler_a"}, "unknown scheduler 'euler_a'.*choose one of"),
    ("scheduler-flow-on-sd", {"scheduler": "flow_euler"}, "unknown scheduler 'flow_euler'"),
    ("scheduler-object", {"scheduler": object()}, "scheduler must be a name or a diffusers scheduler"),
    ("strength-no-image", {"strength": 0.5}, "strength applies to img2img only"),
    ("strength-zero", {"image": "photo", "strength": 0.0}, r"strength must be in \(0, 1\]"),
    ("strength-big", {"image": "photo", "strength": 1.5}, r"strength must be in \(0, 1\]"),
    ("strength-too-few-steps", {"image": "photo", "strength": 0.1, "steps": 5}, "raise steps to at least 10"),
    ("image-one-side", {"image": "photo", "height": 32}, "give both height and width, or neither"),
    ("image-latents", {"image": torch.zeros(4, 16, 16)}, "looks like latents"),
    ("image-0-255-floats", {"image": np.full((32, 32, 3), 200.0)}, "divide a 0–255 array by 255"),
    ("image-path", {"image": "cat.png"}, r"PIL.Image.open\(path\)"),
    ("record-dtype-int", {"record_dtype": torch.int8}, "record_dtype must be a floating dtype"),
]


REVERSE_CASES = [
    Case(f"reverse-{name}", f"`ReverseChain(pipe, {_kw(kw)})`", InputError, says, kw) for name, kw, says in _REVERSE
]


@pytest.fixture(scope="module")
def rc_pipe():
    from diffkit.testing import tiny_random_pipeline

    pipe = tiny_random_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("case", REVERSE_CASES, ids=lambda c: c.id)
def test_bad_reverse_chain_input(rc_pipe, case):
    import re

    from diffkit import ReverseChain, sample_image

    kwargs = dict(case.run)
    if isinstance(kwargs.get("image"), str) and kwargs["image"] == "photo":
        kwargs["image"] = sample_image("chelsea", 32)
    prompt = kwargs.pop("prompt", "a red cube")
    with pytest.raises(case.error) as e:
        ReverseChain(rc_pipe, prompt, **kwargs)
    assert re.search(case.says, str(e.value)), str(e.value)
    assert "fix" in str(e.value) or "; use " in str(e.value) or "try " in str(e.value), str(e.value)


# --------------------------------------------------------------------------- img2img pictures
def _pil(mode: str, values):
    from PIL import Image

    return Image.fromarray(np.asarray(values), mode=mode) if mode else Image.fromarray(np.asarray(values))


def _img_i8():
    from PIL import Image

    return Image.fromarray(np.full((16, 16), 200, dtype=np.int32), mode="I")


_IMAGES = [
    ("mode-I-8bit", lambda: _img_i8(), InputError, "is ambiguous"),
    ("float-nan", lambda: np.full((16, 16, 3), np.nan, dtype=np.float32), InputError, "NaN or inf"),
    ("float-inf", lambda: np.full((16, 16, 3), np.inf), InputError, "NaN or inf"),
    ("float-0-255", lambda: np.full((16, 16, 3), 200.0), InputError, "divide a 0–255 array by 255"),
    ("float-negative", lambda: np.full((16, 16, 3), -0.5), InputError, "rescale it to [0, 1]"),
    ("float-huge", lambda: np.full((16, 16, 3), 1e30), InputError, "rescale it to [0, 1]"),
    ("int32-array", lambda: np.zeros((16, 16, 3), dtype=np.int32), InputError, "must be uint8 (0–255) or uint16"),
    ("int64-array", lambda: np.zeros((16, 16), dtype=np.int64), InputError, "must be uint8 (0–255) or uint16"),
    ("bool-array", lambda: np.zeros((16, 16, 3), dtype=bool), InputError, "must hold real numbers"),
    ("complex-array", lambda: np.zeros((16, 16, 3), dtype=np.complex64), InputError, "must hold real numbers"),
    ("object-array", lambda: np.array([[None] * 4] * 4), InputError, "must hold real numbers"),
    ("chw-array", lambda: np.zeros((3, 16, 16), dtype=np.uint8), InputError, "a.transpose(1, 2, 0)"),
    ("one-d-array", lambda: np.zeros(16, dtype=np.uint8), InputError, "must be (H, W), (H, W, 3) or (H, W, 4)"),
    ("five-channels", lambda: np.zeros((16, 16, 5), dtype=np.uint8), InputError, "must be (H, W), (H, W, 3)"),
    ("batch-array", lambda: np.zeros((2, 16, 16, 3), dtype=np.uint8), InputError, "must be (H, W), (H, W, 3)"),
    ("latent-tensor", lambda: torch.zeros(4, 16, 16), InputError, "looks like latents"),
    ("batch-tensor", lambda: torch.zeros(2, 3, 16, 16), InputError, "must be (3, H, W) or (1, 3, H, W)"),
    ("hwc-tensor", lambda: torch.zeros(16, 16, 3), InputError, "3 colour channels first"),
    ("tensor-0-255", lambda: torch.full((3, 16, 16), 128.0), InputError, "divide a 0–255 array by 255"),
    ("tensor-nan", lambda: torch.full((3, 16, 16), float("nan")), InputError, "NaN or inf"),
    ("path-string", lambda: "cat.png", InputError, "PIL.Image.open(path)"),
    (
        "nested-list",
        lambda: [[0.0, 0.5], [0.5, 1.0]],
        InputError,
        "must be a PIL image, a numpy array or a torch tensor",
    ),
    ("none", lambda: None, InputError, "must be a PIL image"),
    ("mode-F-range", lambda: _pil("F", np.full((16, 16), 3.0, dtype=np.float32)), InputError, "must lie in [0, 1]"),
    (
        "mode-I16-ok-then-float-image",
        lambda: np.full((16, 16, 3), 1.5, dtype=np.float16),
        InputError,
        "must lie in [0, 1]",
    ),
]

IMAGE_CASES = [
    Case(f"image-{name}", f"`prepare_init_image({name})`", err, says, make) for name, make, err, says in _IMAGES
]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=lambda c: c.id)
def test_bad_init_image(case):
    from diffkit.images import prepare_init_image

    with pytest.raises(case.error) as e:
        prepare_init_image(case.run())
    assert case.says in str(e.value) and "fix: " in str(e.value), str(e.value)


# --------------------------------------------------------------------------- load_pipeline
def _lp_folder(kind: str):
    def run(tmp):
        from diffkit import load_pipeline
        from diffkit.testing import tiny_random_pipeline

        f = tmp / "pipe"
        if kind == "empty":
            f.mkdir()
        elif kind == "pickled":
            tiny_random_pipeline("sd").save_pretrained(f, safe_serialization=False)
        else:
            tiny_random_pipeline("sd").save_pretrained(f)
            if kind == "bad-class":
                (f / "model_index.json").write_text(json.dumps({"_class_name": "NoSuchPipeline"}))
            elif kind == "bad-json":
                (f / "model_index.json").write_text("{oops")
            elif kind == "truncated-weights":
                w = next(f.glob("unet/*.safetensors"))
                w.write_bytes(w.read_bytes()[:100])
        return load_pipeline(f)

    return run


def _lp(*args, **kwargs):
    def run(tmp):
        from diffkit import load_pipeline

        return load_pipeline(*args, **kwargs)

    return run


LOAD_CASES = [
    Case(
        "load-not-cached",
        "`load_pipeline('nobody/not-cached', local_files_only=True)`",
        ModelUnavailableError,
        "not in the Hugging Face cache",
        _lp("diffkit-nobody/not-cached", local_files_only=True),
    ),
    Case(
        "load-gated",
        "`load_pipeline('black-forest-labs/FLUX.1-dev')` not cached (a gated model)",
        ModelUnavailableError,
        "accept its licence",
        _lp("black-forest-labs/FLUX.1-dev", local_files_only=True),
    ),
    Case(
        "load-no-folder",
        "`load_pipeline('./no/such/folder')`",
        ModelUnavailableError,
        "no such folder",
        _lp("./no/such/folder"),
    ),
    Case(
        "load-deep-path",
        "`load_pipeline('a/b/c')` (neither a folder nor a hub id)",
        ModelUnavailableError,
        "no such folder",
        _lp("a/b/c"),
    ),
    Case("load-int", "`load_pipeline(5)`", InputError, "is not a model name", _lp(5)),
    Case("load-none-name", "`load_pipeline(None)`", InputError, "is not a model name", _lp(None)),
    Case(
        "load-empty-folder",
        "a folder without model_index.json",
        ModelUnavailableError,
        "model_index.json",
        _lp_folder("empty"),
    ),
    Case(
        "load-pickled",
        "a folder with pickled weights only",
        ModelUnavailableError if False else ValueError,
        "safetensors only",
        _lp_folder("pickled"),
    ),
    Case(
        "load-unsafe",
        "`load_pipeline(..., use_safetensors=False)`",
        ValueError,
        "safetensors only",
        _lp("some/model", use_safetensors=False),
    ),
    Case(
        "load-bad-class",
        "model_index.json naming an unknown pipeline class",
        ModelUnavailableError,
        "not a usable diffusers pipeline folder",
        _lp_folder("bad-class"),
    ),
    Case(
        "load-bad-json",
        "model_index.json that is not JSON",
        ModelUnavailableError,
        "not a usable diffusers pipeline folder",
        _lp_folder("bad-json"),
    ),
    Case(
        "load-truncated",
        "a truncated safetensors file",
        ModelUnavailableError,
        "not a usable diffusers pipeline",
        _lp_folder("truncated-weights"),
    ),
    Case(
        "load-device",
        "`load_pipeline('tiny', device='gpu7')`",
        InputError,
        "unknown device 'gpu7'",
        _lp("tiny", device="gpu7"),
    ),
    Case(
        "load-dtype-name",
        "`load_pipeline('tiny', dtype='float8')`",
        InputError,
        "unknown dtype 'float8'",
        _lp("tiny", dtype="float8"),
    ),
    Case(
        "load-dtype-int",
        "`load_pipeline('tiny', dtype=torch.int8)`",
        InputError,
        "cannot run a pipeline",
        _lp("tiny", dtype=torch.int8),
    ),
    Case(
        "load-dtype-number",
        "`load_pipeline('tiny', dtype=5)`",
        InputError,
        "cannot run a pipeline",
        _lp("tiny", dtype=5),
    ),
    Case(
        "load-scheduler",
        "`load_pipeline('tiny', scheduler='fancy')`",
        InputError,
        "unknown scheduler 'fancy'",
        _lp("tiny", scheduler="fancy"),
    ),
]


@pytest.mark.parametrize("case", LOAD_CASES, ids=lambda c: c.id)
def test_bad_load_pipeline(case, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(case.error) as e:
        case.run(tmp_path)
    assert isinstance(e.value, DiffkitError), repr(e.value)
    assert case.says in str(e.value) and "fix" in str(e.value), str(e.value)


# --------------------------------------------------------------------------- the environment
def _raise_on_write(err: int, *, after: int = 0):
    """os.fsync failing with *err* (ENOSPC: disk full) from its (after + 1)-th call on: a full disk
    as atomic writes meet it, after the data was handed to the OS."""
    import errno as _errno

    calls = {"n": 0}
    real = os.fsync

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(err, os.strerror(err))
        return real(fd)

    return fsync, _errno


def _env_demo_full(tmp):
    import errno
    from unittest import mock

    from diffkit.demo import run_demo

    fsync, _ = _raise_on_write(errno.ENOSPC)
    with mock.patch("diffkit._files.os.fsync", fsync):
        run_demo(tmp / "demo", with_model=False, log=lambda s: None)


def _env_compare_full(tmp):
    import errno
    from unittest import mock

    import pandas as pd

    from diffkit.audit.report import write_comparison

    fsync, _ = _raise_on_write(errno.ENOSPC)
    by = pd.DataFrame(
        {"occupation": ["nurse"], "diff": [0.1], "ci_low": [0.0], "ci_high": [0.2], "a": [0.5], "b": [0.6]}
    )
    ov = pd.DataFrame(
        {"metric": ["mean_imbalance"], "a": [0.1], "b": [0.2], "diff": [0.1], "ci_low": [0.0], "ci_high": [0.2]}
    )
    with mock.patch("diffkit._files.os.fsync", fsync):
        write_comparison(by_occupation=by, overall=ov, name_a="a", name_b="b", out_dir=tmp / "cmp")


def _env_read_only(target: str):
    def run(tmp):
        import errno
        from unittest import mock

        real = Path.mkdir

        def mkdir(self, *a, **k):
            if str(self).startswith(str(tmp)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
            return real(self, *a, **k)

        with mock.patch.object(Path, "mkdir", mkdir):
            if target == "demo":
                from diffkit.demo import run_demo

                run_demo(tmp / "out" / "demo", with_model=False, log=lambda s: None)
            elif target == "run":
                prepare_run(_spec(), tmp / "out" / "audit")
            else:
                from diffkit._files import atomic_write_text

                atomic_write_text(tmp / "out" / "report" / "index.html", "x")

    return run


def _env_cache_full(tmp):
    from unittest import mock

    from diffkit.audit import _embedding_cache as cache_mod

    real = cache_mod.connect

    def small(path, **kw):
        conn = real(path, **kw)
        conn.execute("PRAGMA max_page_count = 8")  # SQLite: "database or disk is full" past 8 pages
        return conn

    with mock.patch.object(cache_mod, "connect", small):
        cache = cache_mod.EmbeddingCache(tmp / "cache" / "embeddings.sqlite")
        cache.put("m", "p", {f"{i:064x}": np.zeros(512, np.float32) for i in range(50)})


def _env_exists(tmp):
    from diffkit._files import ensure_folder

    (tmp / "report").write_text("a file where the report folder goes")
    ensure_folder(tmp / "report")


ENV_CASES = [
    Case(
        "env-demo-disk-full",
        "the disk fills while `diffkit demo` writes",
        DiskFullError,
        "the disk is full",
        _env_demo_full,
    ),
    Case(
        "env-compare-disk-full",
        "the disk fills while a comparison is written",
        DiskFullError,
        "nothing half-written was kept",
        _env_compare_full,
    ),
    Case(
        "env-demo-read-only", "`diffkit demo` in a read-only folder", ReadOnlyError, "read-only", _env_read_only("demo")
    ),
    Case(
        "env-run-read-only",
        "`diffkit audit run` in a read-only folder",
        ReadOnlyError,
        "read-only",
        _env_read_only("run"),
    ),
    Case(
        "env-report-read-only",
        "a report written into a read-only folder",
        ReadOnlyError,
        "read-only",
        _env_read_only("report"),
    ),
    Case(
        "env-cache-full",
        "the disk fills while scoring fills the embedding cache",
        DiskFullError,
        "the run's images and ledger are fine",
        _env_cache_full,
    ),
    Case(
        "env-folder-is-file",
        "an output folder whose name a file already has",
        OutputExistsError,
        "a file is in the way",
        _env_exists,
    ),
]


@pytest.mark.parametrize("case", ENV_CASES, ids=lambda c: c.id)
def test_environment(case, tmp_path):
    _raises_named(case, tmp_path)


# --------------------------------------------------------------------------- widgets
W_CASES_SPEC = [
    ("ReverseChainExplorer", {"steps": 0}, "steps=0 is out of range"),
    ("ReverseChainExplorer", {"steps": -1}, "steps=-1 is out of range"),
    ("ReverseChainExplorer", {"steps": 10000}, "steps=10000 is out of range"),
    ("ReverseChainExplorer", {"steps": 2.5}, "not an integer"),
    ("ReverseChainExplorer", {"steps": "25"}, "not an integer"),
    ("ReverseChainExplorer", {"steps": True}, "not an integer"),
    ("ReverseChainExplorer", {"guidance_scale": -1}, "guidance_scale=-1 is out of range"),
    ("ReverseChainExplorer", {"guidance_scale": 100}, "guidance_scale=100 is out of range"),
    ("ReverseChainExplorer", {"guidance_scale": float("nan")}, "not a finite number"),
    ("ReverseChainExplorer", {"guidance_scale": "7.5"}, "not a number"),
    ("ReverseChainExplorer", {"size": 0}, "size=0 is out of range"),
    ("ReverseChainExplorer", {"size": -8}, "size=-8 is out of range"),
    ("ReverseChainExplorer", {"size": 30}, "not a multiple of"),
    ("ReverseChainExplorer", {"size": 100000}, "out of range"),
    ("ReverseChainExplorer", {"size": "64"}, "not an integer"),
    ("ReverseChainExplorer", {"scheduler": "fancy"}, "not one of the choices"),
    ("ReverseChainExplorer", {"scheduler": 5}, "not one of the choices"),
    ("ReverseChainExplorer", {"seed": -1}, "seed=-1 is out of range"),
    ("ReverseChainExplorer", {"seed": 2**64}, "out of range"),
    ("ReverseChainExplorer", {"seed": "s"}, "not an integer"),
    ("ReverseChainExplorer", {"seed": 1.5}, "not an integer"),
    ("ReverseChainExplorer", {"prompt": None}, "not text"),
    ("ReverseChainExplorer", {"prompt": 5}, "not text"),
    ("ReverseChainExplorer", {"negative_prompt": 5}, "not text"),
    ("ReverseChainExplorer", {"display_size": 0}, "out of range"),
    ("ReverseChainExplorer", {"display_size": 10**6}, "out of range"),
    ("ReverseChainCompare", {"left": "ddim"}, "is not a dict"),
    ("ReverseChainCompare", {"right": {"sampler": "ddim"}}, "unknown setting 'sampler'"),
    ("ReverseChainCompare", {"guidance": 3.0}, "unknown setting 'guidance'"),
    ("ReverseChainCompare", {"left": {"steps": 0}}, "steps=0 is out of range"),
    ("TwoPixelExplorer", {"pixels": (1, 2, 3)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": (1,)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": (300, 0)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": (-1, 5)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": "ab"}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": (float("nan"), 1)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"pixels": None}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"data": []}, "holds no two-pixel image"),
    ("TwoPixelExplorer", {"data": [(1, 2, 3)]}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"data": [(300, 1)]}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"schedule": "fancy"}, "not one of the choices"),
    ("TwoPixelExplorer", {"schedule": 5}, "not a schedule"),
    ("TwoPixelExplorer", {"n_chains": 0}, "n_chains=0 is out of range"),
    ("TwoPixelExplorer", {"n_chains": 10**6}, "out of range"),
    ("TwoPixelExplorer", {"n_chains": "3"}, "not an integer"),
    ("TwoPixelExplorer", {"seed": -1}, "out of range"),
    ("ForwardChainExplorer", {"schedule": "fancy"}, "not one of the choices"),
    ("ForwardChainExplorer", {"image_size": 0}, "image_size=0 is out of range"),
    ("ForwardChainExplorer", {"image_size": 5000}, "out of range"),
    ("ForwardChainExplorer", {"image_size": "128"}, "not an integer"),
    ("ForwardChainExplorer", {"seed": -1}, "out of range"),
    ("ScheduleExplorer", {"schedules": ["fancy"]}, "not one of the choices"),
    ("ScheduleExplorer", {"schedules": "linear"}, "not a list of names"),
    ("ScheduleExplorer", {"schedules": [5]}, "not a list of names"),
    ("ScheduleExplorer", {"num_train_timesteps": 5}, "out of range"),
    ("ScheduleExplorer", {"num_train_timesteps": 10**6}, "out of range"),
    ("ScheduleExplorer", {"num_train_timesteps": "1000"}, "not an integer"),
    ("ScheduleExplorer", {"image_size": 0}, "out of range"),
    ("ScheduleExplorer", {"seed": 2**64}, "out of range"),
    ("ReverseChainExplorer", {"guidance_scale": float("inf")}, "not a finite number"),
    ("ReverseChainExplorer", {"seed": float("nan")}, "not an integer"),
    ("ReverseChainExplorer", {"exact": "yes"}, "is not True, False or None"),
    ("ReverseChainExplorer", {"pipe": 42}, "int is not supported"),
    ("ReverseChainExplorer", {"pipe": object()}, "object is not supported"),
    ("ReverseChainCompare", {"left": {"guidance_scale": float("nan")}}, "not a finite number"),
    ("TwoPixelExplorer", {"data": np.zeros((5, 3))}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"data": np.zeros((10**4, 2))}, "more than the 1,000"),
    ("TwoPixelExplorer", {"data": "170,150"}, "not a list of two-pixel images"),
    ("TwoPixelExplorer", {"data": 5}, "not a list of two-pixel images"),
    ("TwoPixelExplorer", {"data": np.zeros((0, 2))}, "holds no two-pixel image"),
    ("TwoPixelExplorer", {"pixels": (np.inf, 1)}, "not a two-pixel image"),
    ("TwoPixelExplorer", {"n_chains": 2.0}, "not an integer"),
    ("ForwardChainExplorer", {"image_size": 2.5}, "not an integer"),
    ("ForwardChainExplorer", {"image_size": np.float64(64)}, "not an integer"),
    ("ForwardChainExplorer", {"seed": 2**63}, "out of range"),
    ("ScheduleExplorer", {"num_train_timesteps": 1000.0}, "not an integer"),
    ("ScheduleExplorer", {"seed": True}, "not an integer"),
]


WIDGET_CASES = [
    Case(f"widget-{i:03d}", f"`{cls}({_kw(kw)})`", InputError, says, (cls, kw))
    for i, (cls, kw, says) in enumerate(W_CASES_SPEC)
]


@pytest.fixture(scope="module")
def tiny_pipe():
    from diffkit.pipeline import load_pipeline

    return load_pipeline("tiny", device="cpu")


def _widget_kwargs(case: Case, request) -> tuple[Any, dict]:
    import diffkit.widgets as widgets

    cls, kw = case.run
    kw = dict(kw)
    if cls in ("ReverseChainExplorer", "ReverseChainCompare") and "pipe" not in kw:
        kw["pipe"] = request.getfixturevalue("tiny_pipe")  # the size is checked against the VAE's factor
    return getattr(widgets, cls), kw


@pytest.mark.parametrize("case", WIDGET_CASES, ids=lambda c: c.id)
def test_bad_widget_argument(case, request):
    cls, kw = _widget_kwargs(case, request)
    with pytest.raises(InputError) as e:
        cls(**kw)
    assert case.says in str(e.value) and "fix: " in str(e.value), str(e.value)


def test_failed_constructors_leave_no_noise(request, monkeypatch):
    """No ``Exception ignored in Widget.__del__ … no attribute 'error'`` after a refused argument."""
    noise: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", noise.append)
    for case in WIDGET_CASES:
        cls, kw = _widget_kwargs(case, request)
        with pytest.raises(InputError):
            cls(**kw)
    gc.collect()
    assert not noise, [str(n.exc_value) for n in noise]


def test_good_widget_arguments_are_kept_not_clamped(tiny_pipe):
    from diffkit.widgets import ReverseChainExplorer, TwoPixelExplorer

    e = ReverseChainExplorer(tiny_pipe, steps=150, guidance_scale=20.0, scheduler="DDIMScheduler")
    assert (e.steps.value, e.guidance.value, e.scheduler.value) == (150, 20.0, "ddim")
    e.close()
    t = TwoPixelExplorer(pixels=(0, 255), seed=2**63 - 1)
    assert t.pixels == (0.0, 255.0)
    t.close()


# --------------------------------------------------------------------------- the error family
# Raises of a bare builtin that are not a user's input: each is a bug if it ever fires.
_BUGS_NOT_INPUT = {
    ("diffkit/audit/_spec_schema.py", "KeyError"),  # default_of() a field without a default: a schema bug
    ("diffkit/tiny/drawing.py", "RuntimeError"),  # no placement in 1,000 tries: cannot happen at the world's sizes
    ("diffkit/audit/_testing.py", "TypeError"),  # to_toml of a value the test helper does not write
    ("diffkit/reverse/recorder.py", "RuntimeError"),  # the pipeline broke its own timestep count: "please report"
}
_BUILTINS = {
    "ValueError",
    "TypeError",
    "RuntimeError",
    "OSError",
    "IOError",
    "FileNotFoundError",
    "KeyError",
    "IndexError",
    "LookupError",
    "FileExistsError",
    "PermissionError",
    "NotImplementedError",
}


def test_every_deliberate_raise_is_a_diffkit_error():
    """One error family: a raise of a bare builtin (ValueError, RuntimeError, …) in diffkit is either a
    DiffkitError subclass (which also derives from that builtin) or listed above as a bug path."""
    import ast

    found = set()
    for path in sorted((REPO / "diffkit").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(exc, ast.Name) and exc.id in _BUILTINS:
                    found.add((rel, exc.id, node.lineno))
    unexpected = sorted(f for f in found if f[:2] not in _BUGS_NOT_INPUT)
    assert not unexpected, f"raise a diffkit.errors class (or add a bug path with its reason): {unexpected}"


# --------------------------------------------------------------------------- the docs table
ALL_CASES = {
    "Audit specs (`parse_spec`, keys of the TOML file)": SPEC_CASES,
    "Spec files and reference tables (`load_spec`)": FILE_CASES,
    "Run folders, received from someone else (`diffkit audit run/report`, `prepare_run`, `load_run_spec`)": RUN_CASES,
    "The command line (exit status 2, one line on stderr)": CLI_CASES,
    "The reverse chain (`ReverseChain(pipe, prompt, …)`)": REVERSE_CASES,
    "img2img pictures (`ReverseChain(…, image=…)`, `prepare_init_image`)": IMAGE_CASES,
    "Loading a pipeline (`load_pipeline`)": LOAD_CASES,
    "Explorer constructors (`diffkit.widgets`)": WIDGET_CASES,
    "The environment (a full disk, a read-only folder, a file in the way)": ENV_CASES,
}


def render_table() -> str:
    """``docs/bad_inputs.md``: one table per area, rendered from the case lists above."""
    n = sum(len(v) for v in ALL_CASES.values())
    out = [
        "# Bad inputs and the errors they get",
        "",
        "<!-- Generated from tests/test_bad_inputs.py; rewrite with "
        "`DIFFKIT_WRITE_DOCS=1 pytest tests/test_bad_inputs.py -k docs`. -->",
        "",
        f"Each of these {n} inputs is a test case: it must end in the named error, whose message says",
        "what went wrong and how to fix it (the right column holds words of that message). On the command",
        "line every error is one line, `diffkit <command>: error: …; fix: …`, with exit status 2; add",
        "`--debug` for the traceback. Ctrl-C prints one line and exits with 130.",
        "",
        "Every one of these errors derives from `diffkit.errors.DiffkitError` and from the builtin it",
        "stands for (`SpecError`, `InputError` and `RunMismatchError` are `ValueError`s, `StateError` a",
        "`RuntimeError`, `RunFolderError` a `FileNotFoundError`, `ModelUnavailableError`, `DiskFullError`,",
        "`ReadOnlyError` and `OutputExistsError` `OSError`s, `CacheDamagedError` a `sqlite3.DatabaseError`),",
        "so code that catches the builtin keeps working. Anything else that reaches the command line is a",
        "bug in diffkit: it prints the traceback and asks for a report.",
    ]
    for title, cases in ALL_CASES.items():
        out += ["", f"## {title}", "", "| input | error | the message says |", "| --- | --- | --- |"]
        for c in cases:
            shown = c.shown.replace("|", "\\|")
            says = c.says.replace("\\", "").replace(".*", " … ").replace("|", "\\|")
            out.append(f"| {shown} | `{c.error.__name__}` | {says} |")
    return "\n".join(out) + "\n"


def test_at_least_350_cases():
    assert sum(len(v) for v in ALL_CASES.values()) >= 350


def test_docs_table_is_current():
    text = render_table()
    if os.environ.get("DIFFKIT_WRITE_DOCS"):
        DOCS.write_text(text, encoding="utf-8")
    assert DOCS.is_file() and DOCS.read_text(encoding="utf-8") == text, (
        "docs/bad_inputs.md is out of date: run DIFFKIT_WRITE_DOCS=1 pytest tests/test_bad_inputs.py -k docs"
    )
