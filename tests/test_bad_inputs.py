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

import pytest

from diffkit.audit import SpecError, parse_spec
from diffkit.audit.rundir import RunMismatchError, load_run_spec, prepare_run, run_lock
from diffkit.errors import (
    DiffkitError,
    InputError,
    ModelUnavailableError,
    RunBusyError,
    RunFolderError,
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
    ("controls.gender_words", {"female": ["w"], "male": ["m"], "other": ["x"]}, "controls.gender_words",
     "expected keys female and male"),
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
    ("pipeline.guidance", 5.0, "pipeline.guidance", "given together with pipeline.guidance_scale"),
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
    ("report.random_state", 1, "report.random_state", "given together with report.seed"),
    ("report.thumbnails_per_prompt", -1, "report.thumbnails_per_prompt", "out of range"),
    ("report.colour", 1, "report.colour", "unknown key"),
    ("extra", {"x": 1}, "[extra]", "unknown table"),
]


def _set(d: dict, path: str, value: Any) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    t = d
    for k in parents:
        t = t[k]
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
    return f"{text[:12]}…\" ({len(v)} characters)" if isinstance(v, str) else text[:57] + "…"


SPEC_CASES = [
    Case(f"spec-{i:03d}", f"`{path} = {_toml_value(v)}`", SpecError,
         says, (path, v, key))
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


FILE_CASES = [
    Case("file-missing", "a path that does not exist", SpecError, "no such spec file", _file(kind="none")),
    Case("file-dir", "a folder instead of a file", SpecError, "no such spec file", _file(kind="dir")),
    Case("file-syntax", "`[audit` (broken TOML)", SpecError, "not valid TOML", _file(b"[audit\nname = 1")),
    Case("file-binary", "bytes that are not UTF-8", SpecError, "not valid TOML", _file(b"\xff\xfe\x00bad")),
    Case("file-empty", "an empty file", SpecError, "[prompts]: missing table", _file(b"")),
    Case("file-scalar-table", "`audit = 5`", SpecError, "audit: expected a table",
         _file(b'audit = 5\n[prompts]\ntemplates=["{occupation}"]\n')),
    Case("file-bad-ref-csv", "a reference CSV without its columns", SpecError, "lacks column(s)",
         lambda tmp: (tmp / "ref.csv").write_text("job,share\nnurse,0.9\n") and _file(
             b'[prompts]\ntemplates=["{occupation}"]\nreference="ref.csv"\n[pipeline]\nmodel="tiny"\n')(tmp)),
    Case("file-ref-percent", "a reference CSV in percent (86.7)", SpecError, "fraction in [0, 1]",
         lambda tmp: (tmp / "ref.csv").write_text("occupation,women_share\nnurse,86.7\n") and _file(
             b'[prompts]\ntemplates=["{occupation}"]\nreference="ref.csv"\n[pipeline]\nmodel="tiny"\n')(tmp)),
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

    spec = parse_spec(_set(BASE, "prompts.templates", ["a photo of " + "very " * 80 + "{a_occupation}"]),
                      source="long.toml")
    check_prompt_lengths(spec, load_pipeline("tiny", device="cpu").tokenizer)


RUN_CASES = [
    Case("run-empty", "`audit report` of an empty folder", RunFolderError, "not an audit run folder", _rf_empty),
    Case("run-spec-only", "a folder with spec.json and no ledger", RunFolderError, "has spec.json but no ledger",
         _rf_spec_only),
    Case("run-garbage-ledger", "ledger.sqlite that is not SQLite", RunFolderError, "not a diffkit ledger", _rf_garbage),
    Case("run-foreign-ledger", "ledger.sqlite of another program", RunFolderError, "lacks", _rf_other_schema),
    Case("run-no-spec", "a ledger that never recorded a spec", RunFolderError, "holds no spec", _rf_no_spec),
    Case("run-damaged-spec", "a ledger whose stored spec lacks keys", RunFolderError, "stored spec is damaged",
         _rf_damaged_spec),
    Case("run-edited-spec", "spec.json edited after the run (an occupation added)", RunMismatchError,
         "differs from the spec this run was generated with", _rf_edited),
    Case("run-spec-not-json", "spec.json that is not JSON", RunMismatchError, "not valid JSON", _rf_not_json),
    Case("run-foreign-folder", "`--out` a folder of other files", RunMismatchError, "holds no audit ledger",
         _rf_foreign),
    Case("run-other-spec", "`--out` a run of another spec", RunMismatchError, "holds a run of another spec",
         _rf_other_spec),
    Case("run-other-weights", "the model's weights changed between two halves of a run", RunMismatchError,
         "generated with other weights", _rf_other_weights),
    Case("run-busy", "a second run on a folder in use", RunBusyError, "in use by another diffkit run", _rf_busy),
    Case("run-busy-report", "`audit report` of a folder another process generates into", RunBusyError,
         "generating images since", _rf_busy_report),
    Case("run-busy-score", "`score_images` of a folder another process generates into", RunBusyError,
         "in use by another diffkit run (pid", _rf_busy_score),
    Case("run-score-not-a-run", "`score_images` of a folder that is not a run", RunFolderError,
         "not an audit run folder", _rf_score_not_a_run),
    Case("run-out-is-file", "`--out` an existing file", RunFolderError, "exists and is not a folder",
         _rf_out_is_file),
    Case("run-out-under-file", "`--out` a path below a file", RunFolderError, "part of its path is a file",
         _rf_out_under_file),
    Case("run-long-template", "a template longer than the text encoder reads", SpecError,
         "over the text encoder's limit", _rf_long_template),
]


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.id)
def test_bad_run_folder(case, tmp_path):
    with pytest.raises(case.error) as e:
        case.run(tmp_path)
    assert isinstance(e.value, DiffkitError)
    assert case.says in str(e.value) and "fix" in str(e.value), str(e.value)


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
    Case("cli-no-spec", "`diffkit audit run nope.toml`", SpecError, "no such spec file",
         lambda tmp: ["audit", "run", str(tmp / "nope.toml")]),
    Case("cli-bad-toml", "`diffkit audit run` of broken TOML", SpecError, "not valid TOML",
         lambda tmp: ["audit", "run", _toml(tmp, "[audit\n")]),
    Case("cli-name-traversal", '`diffkit audit run` with `audit.name = "../../x"`', SpecError,
         "not a plain folder name",
         lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML.replace('"cli"', '"../../x"'))]),
    Case("cli-unknown-key", "`diffkit audit run` with an unknown key", SpecError, "unknown key",
         lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML.replace("steps = 1", "step = 1"))]),
    Case("cli-clip-offline", "`diffkit audit run` whose CLIP judge is not available", ModelUnavailableError,
         "could not load the CLIP judge",
         lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML + '[classifier]\nmodel = "ViT-B-32"\n'
                                            'pretrained = "no-such-weights"\n')]),
    Case("cli-model-folder", "`diffkit audit run --model` a folder that does not exist", ModelUnavailableError,
         "no such folder",
         lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML), "--model", str(tmp / "no" / "model"),
                      "--out", str(tmp / "o"), "--no-progress"]),
    Case("cli-model-not-cached", "`diffkit audit run --model` a hub id that is not cached, offline",
         ModelUnavailableError, "hf download",
         lambda tmp: ["audit", "run", _toml(tmp, _GOOD_TOML), "--model", "diffkit-nobody/not-cached",
                      "--out", str(tmp / "o"), "--no-progress"]),
    Case("cli-out-file", "`diffkit audit run --out` an existing file", RunFolderError, "exists and is not a folder",
         lambda tmp: (tmp / "f").write_text("x") and ["audit", "run", _toml(tmp, _GOOD_TOML), "--out",
                                                      str(tmp / "f"), "--no-progress"]),
    Case("cli-report-missing", "`diffkit audit report` of a folder that does not exist", RunFolderError,
         "not an audit run folder", lambda tmp: ["audit", "report", str(tmp / "nope")]),
    Case("cli-report-garbage", "`diffkit audit report` of a garbage ledger", RunFolderError,
         "not a diffkit ledger", _cli_garbage_ledger),
    Case("cli-report-edited", "`diffkit audit report` after spec.json was edited", RunMismatchError,
         "differs from the spec", _cli_edited_spec),
    Case("cli-compare-missing", "`diffkit audit compare` of folders that do not exist", RunFolderError,
         "not an audit run folder", lambda tmp: ["audit", "compare", str(tmp / "a"), str(tmp / "b")]),
    Case("cli-demo-out-file", "`diffkit demo --out` an existing file", InputError, "cannot write the demo",
         lambda tmp: (tmp / "f").write_text("x") and ["demo", "--no-model", "--out", str(tmp / "f" / "d")]),
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
    assert len(err.splitlines()) == 1, err  # one line, no traceback
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
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unexpected ZeroDivisionError" in err and "--debug" in err


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
    ("ReverseChainExplorer", {"guidance_scale": float("nan")}, "out of range"),
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
]


def _kw(kw: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kw.items())


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
    if cls in ("ReverseChainExplorer", "ReverseChainCompare"):
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


# --------------------------------------------------------------------------- the docs table
ALL_CASES = {
    "Audit specs (`parse_spec`, keys of the TOML file)": SPEC_CASES,
    "Spec files (`load_spec`)": FILE_CASES,
    "Run folders (`diffkit audit run/report`, `prepare_run`, `load_run_spec`)": RUN_CASES,
    "The command line (exit status 2, one line on stderr)": CLI_CASES,
    "Explorer constructors (`diffkit.widgets`)": WIDGET_CASES,
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
        "All of diffkit's own errors derive from `diffkit.errors.DiffkitError`; `SpecError` and",
        "`InputError` are also `ValueError`s, `RunFolderError` a `FileNotFoundError`, and",
        "`ModelUnavailableError`, `RunBusyError` and `DiskFullError` `OSError`s.",
    ]
    for title, cases in ALL_CASES.items():
        out += ["", f"## {title}", "", "| input | error | the message says |", "| --- | --- | --- |"]
        for c in cases:
            shown = c.shown.replace("|", "\\|")
            says = c.says.replace("|", "\\|")
            out.append(f"| {shown} | `{c.error.__name__}` | {says} |")
    return "\n".join(out) + "\n"


def test_at_least_150_cases():
    assert sum(len(v) for v in ALL_CASES.values()) >= 150


def test_docs_table_is_current():
    text = render_table()
    if os.environ.get("DIFFKIT_WRITE_DOCS"):
        DOCS.write_text(text, encoding="utf-8")
    assert DOCS.is_file() and DOCS.read_text(encoding="utf-8") == text, (
        "docs/bad_inputs.md is out of date: run DIFFKIT_WRITE_DOCS=1 pytest tests/test_bad_inputs.py -k docs"
    )
