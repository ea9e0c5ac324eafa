"""The run folder: weights in the run's identity, the ledger's spec, the lock, orphans, restarts."""

from __future__ import annotations

import json
import shutil
import sqlite3
import warnings

import pytest
from audit_helpers import image_bytes, ledger_rows, spec_dict

from diffkit.audit import RunMismatchError, SpecError, generate_images, parse_spec
from diffkit.audit.generate import DistState
from diffkit.audit.rundir import (
    LOCK_NAME,
    clean_orphans,
    load_run_spec,
    run_lock,
    weights_identity,
)
from diffkit.errors import RunBusyError, RunFolderError
from diffkit.pipeline import PipelineNotAvailableError

ONE = DistState()


def _gen(spec, out, pipe=None, **kw):
    return generate_images(spec, out, pipe=pipe, progress=False, state=ONE, **kw)


@pytest.fixture
def small(make_spec):
    return make_spec(audit__images_per_prompt=1, controls__images_per_prompt=1, audit__batch_size=2)


@pytest.fixture
def small_run(small, pipe, tmp_path):
    out = tmp_path / "run"
    _gen(small, out, pipe)
    return out


def test_weights_identity_follows_the_files(pipe_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(pipe_dir, copy)
    assert weights_identity(str(copy)) == weights_identity(str(pipe_dir)) is not None
    (copy / "unet" / "config.json").write_text((copy / "unet" / "config.json").read_text() + " ")
    assert weights_identity(str(copy)) != weights_identity(str(pipe_dir))
    assert weights_identity("tiny").startswith("sha256:")
    assert weights_identity("nobody/not-cached-anywhere") is None  # a hub id resolves only once cached
    assert weights_identity("org/x", "0123456789abcdef0123456789abcdef01234567").endswith(
        "@0123456789abcdef0123456789abcdef01234567"
    )


def test_resume_refuses_weights_retrained_in_place(pipe_dir, clip_name, tmp_path):
    from diffkit.testing import save_tiny_random_pipeline

    model = tmp_path / "model"
    shutil.copytree(pipe_dir, model)
    spec = parse_spec(spec_dict(model, clip_name, audit__images_per_prompt=2, audit__batch_size=2), source="u.toml")
    out = tmp_path / "run"
    _gen(spec, out, max_batches=2)  # half the run, then the model is retrained in place
    before = weights_identity(str(model))
    shutil.rmtree(model)
    save_tiny_random_pipeline(model, seed=5)
    with pytest.raises(RunMismatchError, match=r"other weights.*" + before[:20] + r".*there.*now.*new --out"):
        _gen(spec, out)
    rows = ledger_rows(out)
    assert sum(r[6] == "done" for r in rows) == 4  # nothing generated with the new weights


def test_a_run_that_never_finished_an_image_starts_over(make_spec, pipe, tmp_path):
    out = tmp_path / "run"
    bad = make_spec(pipeline__model=str(tmp_path / "no-such-model"))
    with pytest.raises(PipelineNotAvailableError, match="no such folder"):
        _gen(bad, out)
    good = make_spec()
    led = _gen(good, out, pipe)  # the corrected rerun on the same folder is not refused
    assert (led["status"] == "done").all()
    assert load_run_spec(out).pipeline.model == good.pipeline.model


def test_report_uses_the_ledgers_spec_and_restores_spec_json(small, small_run):
    sj = small_run / "spec.json"
    sj.unlink()
    assert load_run_spec(small_run) == load_run_spec(small_run)
    assert json.loads(sj.read_text()) == small.to_dict()  # restored from the ledger
    edited = json.loads(sj.read_text())
    edited["prompts"]["attributes"]["occupation"].append("lawyer")
    sj.write_text(json.dumps(edited))
    with pytest.raises(
        RunMismatchError, match=r"differs from the spec this run was generated with.*occupation.*delete"
    ):
        load_run_spec(small_run)
    sj.write_text("{not json")
    with pytest.raises(RunMismatchError, match="not valid JSON.*delete"):
        load_run_spec(small_run)


def test_a_resumed_run_restores_an_edited_spec_json(small, small_run, pipe):
    sj = small_run / "spec.json"
    good = sj.read_text()
    sj.write_text(good.replace('"nurse"', '"lawyer"'))
    _gen(small, small_run, pipe)  # the same spec resumes; its ledger is the truth
    assert sj.read_text() == good and load_run_spec(small_run) == load_run_spec(small_run)


def test_report_audit_builds_from_the_ledger(small, small_run, clip_name):
    from diffkit.audit import report_audit

    sj = small_run / "spec.json"
    sj.unlink()
    result = report_audit(small_run, progress=False)
    assert result.spec.to_dict() == small.to_dict() and sj.is_file()


def test_damaged_run_folders_name_the_fix(small_run, tmp_path):
    not_run = tmp_path / "empty"
    not_run.mkdir()
    with pytest.raises(RunFolderError, match="not an audit run folder.*fix"):
        load_run_spec(not_run)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "ledger.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(RunFolderError, match="not a diffkit ledger.*fix"):
        load_run_spec(garbage)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = sqlite3.connect(foreign / "ledger.sqlite")
    con.execute("CREATE TABLE images (x INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(RunFolderError, match="lacks"):
        load_run_spec(foreign)


def test_orphaned_tmp_files_are_cleaned_on_resume(small, small_run, pipe, tmp_path):
    clean = image_bytes(small_run)
    orphan = small_run / "images" / "0000" / ".0000.png.12345.tmp"
    orphan.write_bytes(b"half a png")
    top = small_run / ".spec.json.999.tmp"
    top.write_bytes(b"{")
    _gen(small, small_run, pipe)
    assert not orphan.exists() and not top.exists()
    assert image_bytes(small_run) == clean
    assert clean_orphans(small_run) == []


def test_a_second_run_on_the_same_folder_is_refused(small, small_run, pipe):
    from audit_helpers import held_elsewhere

    before = ledger_rows(small_run)
    with (
        held_elsewhere(small_run, "scoring images"),
        pytest.raises(
            RunBusyError, match=r"in use by another diffkit run \(pid \d+, scoring images since 20\d\d-.*\); fix: wait"
        ),
    ):
        _gen(small, small_run, pipe)
    assert ledger_rows(small_run) == before
    with run_lock(small_run):  # released: the lock goes with its holder
        pass
    assert (small_run / LOCK_NAME).is_file()


def test_the_refusal_names_the_holder_not_a_label_left_before_it(small_run):
    """A lock file may hold the label of a run that was killed (its pid gone); the refusal waits
    for the new holder's label instead of naming the dead run (a flaky concurrency test
    once caught the old behaviour naming the previous holder)."""
    import os
    import subprocess
    import sys
    import threading
    import time

    from diffkit.audit._run_lock import _holder, _label

    with run_lock(small_run):
        pass
    assert (small_run / LOCK_NAME).read_text() == ""  # a holder clears its label when it lets go
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = f"{int(dead.stdout)}\tgenerating images\t2026-01-01T00:00:00"
    (small_run / LOCK_NAME).write_text(stale)
    import fcntl

    held = os.open(small_run / LOCK_NAME, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # the new holder has the lock, not yet its label
    fd = os.open(small_run / LOCK_NAME, os.O_RDWR)
    try:
        writer = threading.Timer(0.1, _label, (held, "writing the report"))
        writer.start()
        t0 = time.perf_counter()
        said = _holder(fd)
        writer.join()
    finally:
        os.close(fd)
        os.close(held)
    assert said.startswith(f"pid {os.getpid()}, writing the report since "), said
    assert time.perf_counter() - t0 >= 0.05  # it waited for the live label


def test_a_holder_letting_go_while_asked_hands_over_the_lock(small_run):
    """A holder clears its label just before it lets go; one that asks in that moment waits
    out the release and takes the folder instead of refusing a folder that is free."""
    import fcntl
    import os
    import threading

    fd = os.open(small_run / LOCK_NAME, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held elsewhere, its label already cleared
    os.ftruncate(fd, 0)
    threading.Timer(0.1, os.close, (fd,)).start()  # ... and let go a moment later
    with run_lock(small_run, "scoring images"):
        assert (small_run / LOCK_NAME).read_text().split("\t")[:2] == [str(os.getpid()), "scoring images"]


def test_templates_past_the_token_limit_are_refused(make_spec, pipe, tmp_path):
    long = "a photo of " + "very " * 80 + "{a_occupation}"
    spec = make_spec(prompts__templates=[long])
    with pytest.raises(
        SpecError, match=r"prompts\.templates\[0\].*tokens, over the text encoder's limit of 77.*shorten"
    ):
        _gen(spec, tmp_path / "run", pipe)
    ok = make_spec(prompts__templates=["a photo of " + "very " * 60 + "{a_occupation}"])
    _gen(ok, tmp_path / "run", pipe, max_batches=0)  # fits: accepted (and the refused run started over)


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_ctrl_c_is_one_line_and_the_rerun_resumes(pipe_dir, clip_name, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from audit_helpers import to_toml

    d = spec_dict(pipe_dir, clip_name)
    d["audit"].update(
        images_per_prompt=40, batch_size=1
    )  # 160 batches: the interrupt lands mid-generation even on an idle machine
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(to_toml(d))
    out = tmp_path / "run"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "DIFFKIT_QUIET": "1",
    }
    cmd = [sys.executable, "-m", "diffkit", "audit", "run", str(spec_file), "--out", str(out), "--no-progress"]
    # a shell that starts a job in the background (as CI may) leaves SIGINT ignored, and Python keeps an
    # ignored SIGINT ignored: give the child the default disposition a terminal's Ctrl-C meets
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (out / "images").is_dir() and any((out / "images").rglob("*.png")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == (
        "diffkit audit run: interrupted; finished work is kept, rerun the same command to resume"
    )
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = ledger_rows(out)
    assert all(row[6] == "done" for row in rows) and len(rows) == len({(row[0], row[1]) for row in rows})


def test_an_unpinned_hub_id_is_pinned_to_the_commit_it_resolved_to(make_spec, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from diffkit.audit.rundir import prepare_run

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    repo = cache / "models--someone--model"

    def publish(commit: str) -> None:  # what `hf download` leaves: refs/main and a snapshot
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text("{}")
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    assert weights_identity("someone/model") is None  # not cached yet
    old, new = "a" * 40, "b" * 40
    publish(old)
    assert weights_identity("someone/model") == f"someone/model@{old}"
    spec = make_spec(pipeline__model="someone/model")
    run = tmp_path / "run"
    prepare_run(spec, run, weights=weights_identity("someone/model"))
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute("UPDATE images SET status = 'done' WHERE prompt_id = 0 AND image_index = 0")
    con.commit()
    con.close()
    publish(new)  # the hub's main moved on: the same name is now other weights
    with pytest.raises(RunMismatchError, match=f"{old}.*there.*{new}.*now"):
        prepare_run(spec, run, weights=weights_identity("someone/model"))


def test_no_progress_hides_the_loading_bars_too(small, tmp_path, capfd):
    from diffusers.utils import logging as dlog

    capfd.readouterr()
    led = generate_images(small, tmp_path / "run", progress=False, state=ONE, max_batches=1)
    err = capfd.readouterr().err
    assert (led["status"] == "done").any()
    assert "Loading pipeline components" not in err and "Loading weights" not in err, err
    assert dlog.is_progress_bar_enabled()  # the global setting is restored


def _as_written_by_diffkit_0_1(run) -> None:
    """Rewrite a run folder the way diffkit 0.1 left it: its spec under the old key names
    (``pipeline.guidance``, ``report.random_state``) in the ledger's meta and in spec.json, and the
    fingerprint 0.1 computed from that dict (sha256 of its sorted JSON)."""
    import hashlib

    from diffkit.audit._spec_compat import drop_absent

    con = sqlite3.connect(run / "ledger.sqlite")
    # diffkit 0.1 had none of the keys added since (audit.seeds, classifier.kind, …, issue 23)
    spec = drop_absent(json.loads(con.execute("SELECT value FROM meta WHERE key = 'spec'").fetchone()[0]))
    spec["pipeline"]["guidance"] = spec["pipeline"].pop("guidance_scale")
    spec["report"]["random_state"] = spec["report"].pop("seed")
    text = json.dumps(spec, sort_keys=True)
    con.executemany(
        "UPDATE meta SET value = ? WHERE key = ?",
        [(text, "spec"), (hashlib.sha256(text.encode()).hexdigest(), "fingerprint"), ("0.1.0", "diffkit_version")],
    )
    con.commit()
    con.close()
    (run / "spec.json").write_text(json.dumps(spec, indent=2, sort_keys=True))


def test_a_run_folder_from_before_the_key_renames_resumes_and_reports(make_spec, pipe, tmp_path):
    from diffkit.audit import report_audit

    spec = make_spec(audit__images_per_prompt=2, controls__images_per_prompt=1, audit__batch_size=2)
    clean = tmp_path / "clean"
    _gen(spec, clean, pipe)
    old = tmp_path / "old"
    _gen(spec, old, pipe, max_batches=2)  # interrupted after 2 of 4 batches ...
    _as_written_by_diffkit_0_1(old)  # ... by diffkit 0.1
    finished = [r for r in ledger_rows(old) if r[6] == "done"]
    stamps = (
        sqlite3.connect(old / "ledger.sqlite")
        .execute("SELECT prompt_id, image_index, finished_at || seconds FROM images WHERE status = 'done'")
        .fetchall()
    )
    assert len(finished) == 4
    assert load_run_spec(old).to_dict() == spec.to_dict()  # read under the new names
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stored spec is read without a deprecation warning
        _gen(spec, old, pipe)  # resumes: not "another spec"
    assert ledger_rows(old) == ledger_rows(clean) and image_bytes(old) == image_bytes(clean)
    con = sqlite3.connect(old / "ledger.sqlite")
    after = {(k, i): t for k, i, t in con.execute("SELECT prompt_id, image_index, finished_at || seconds FROM images")}
    con.close()
    assert all(after[(k, i)] == t for k, i, t in stamps)  # the finished rows were not generated again
    result = report_audit(old, progress=False)
    assert result.spec.to_dict() == spec.to_dict() and result.spec.pipeline.guidance_scale == 5.0
    assert (old / "report" / "index.html").is_file()
    assert json.loads((old / "spec.json").read_text())["pipeline"]["guidance_scale"] == 5.0


def test_a_run_folder_from_before_the_renames_resumes_from_a_spec_file_with_the_new_names(
    make_spec, pipe, pipe_dir, clip_name, tmp_path
):
    """The old key names are refused in a TOML spec (renamed before the first release); the same spec
    written with the new names resumes a folder written under the old ones."""
    from audit_helpers import to_toml

    from diffkit.audit import SpecError, load_spec

    spec = make_spec(audit__images_per_prompt=1, controls__images_per_prompt=1, audit__batch_size=2)
    run = tmp_path / "run"
    _gen(spec, run, pipe, max_batches=1)
    _as_written_by_diffkit_0_1(run)
    d = spec_dict(pipe_dir, clip_name, audit__images_per_prompt=1, controls__images_per_prompt=1, audit__batch_size=2)
    (tmp_path / "unit.toml").write_text(to_toml(d))
    new_file = load_spec(tmp_path / "unit.toml")
    assert new_file.fingerprint() == spec.fingerprint()
    d["pipeline"]["guidance"] = d["pipeline"].pop("guidance_scale")
    (tmp_path / "old.toml").write_text(to_toml(d))
    with pytest.raises(SpecError, match=r"pipeline\.guidance: unknown key; fix: use one of .*'guidance_scale'"):
        load_spec(tmp_path / "old.toml")
    led = _gen(new_file, run, pipe)
    assert (led["status"] == "done").all()


def test_one_hash_check_and_one_sqlite_setup(small_run, tmp_path):
    import hashlib

    from diffkit.audit import score
    from diffkit.audit.rundir import connect, read_verified

    png = next((small_run / "images").rglob("*.png"))
    data = png.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert read_verified(png, sha) == data
    assert read_verified(png, "0" * 64) is None and read_verified(png, None) is None
    assert read_verified(tmp_path / "nope.png", sha) is None
    assert score.read_verified is read_verified  # scoring checks files through the run-folder module
    con = connect(tmp_path / "x.sqlite", synchronous="NORMAL")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert con.execute("PRAGMA busy_timeout").fetchone()[0] == 120000
    con.close()
    cache = score.EmbeddingCache(tmp_path / "cache.sqlite")
    assert cache.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()
