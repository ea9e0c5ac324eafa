"""Generation: determinism, the ledger, resume after SIGKILL, bad input, sharding."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from audit_helpers import image_bytes, ledger_rows, to_toml
from PIL import Image

from diffkit.audit import DiskFullError, RunMismatchError, generate_images, regenerate_image
from diffkit.audit.generate import DistState

HERE = Path(__file__).resolve().parent
ONE = DistState()


def _gen(spec, out, pipe, **kw):
    return generate_images(spec, out, pipe=pipe, progress=False, state=ONE, **kw)


@pytest.fixture(scope="module")
def kill_spec(pipe_dir, clip_name):
    from audit_helpers import spec_dict

    from diffkit.audit import parse_spec

    # 2 × 6 audit + 8 control images in 10 batches of 2: slow enough to be killed mid-run
    d = spec_dict(pipe_dir, clip_name)
    d["audit"].update(images_per_prompt=6, batch_size=2)
    return parse_spec(d, source="unit.toml")


@pytest.fixture(scope="module")
def clean_run(kill_spec, pipe, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    _gen(kill_spec, out, pipe)
    return out


def test_generate_ledger(kill_spec, clean_run, pipe):
    import hashlib

    led = _gen(kill_spec, clean_run, pipe)  # a rerun: generates nothing, duplicates nothing
    assert len(led) == 20 and (led["status"] == "done").all()
    assert led[["prompt_id", "image_index"]].duplicated().sum() == 0
    assert list(led["batch"]) == [j // 2 for j in range(20)]
    for _, r in led.iterrows():
        assert hashlib.sha256((clean_run / r["path"]).read_bytes()).hexdigest() == r["sha256"]
        assert r["seconds"] > 0 and r["finished_at"]
    assert not list(clean_run.rglob("*.tmp"))
    assert json.loads((clean_run / "spec.json").read_text())["seed"] == kill_spec.seed


def test_regenerate_single_image(make_spec, pipe, tmp_path):
    spec = make_spec(audit__batch_size=1, audit__images_per_prompt=1, controls__templates=[])
    _gen(spec, tmp_path, pipe)
    img = regenerate_image(spec, 1, 0, pipe=pipe)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(tmp_path / "images/0001/0000.png")))


def test_refuses_another_specs_run_and_foreign_folders(kill_spec, make_spec, clean_run, pipe, tmp_path):
    with pytest.raises(RunMismatchError, match=r"another spec.*first difference: seed: 7 there, 99 now"):
        _gen(make_spec(audit__seed=99, audit__images_per_prompt=6, audit__batch_size=2), clean_run, pipe)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(RunMismatchError, match="holds no audit ledger"):
        _gen(kill_spec, foreign, pipe)


def test_corrupt_and_missing_pngs_are_marked_and_regenerated(kill_spec, clean_run, pipe, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    (run / "images/0000/0001.png").write_bytes(b"\x89PNG truncated")
    (run / "images/0003/0000.png").unlink()
    con = sqlite3.connect(run / "ledger.sqlite")
    _gen(kill_spec, run, pipe, max_batches=0)  # verify only: marks, regenerates nothing
    status = {(k, i): s for k, i, s in con.execute("SELECT prompt_id, image_index, status FROM images")}
    assert status[(0, 1)] == "corrupt" and status[(3, 0)] == "missing"
    assert sum(s != "done" for s in status.values()) == 2
    _gen(kill_spec, run, pipe)
    con.close()
    assert ledger_rows(run) == ledger_rows(clean_run)
    assert image_bytes(run) == image_bytes(clean_run)


def test_full_disk_stops_cleanly_and_resumes(kill_spec, clean_run, pipe, tmp_path, monkeypatch):
    import builtins

    run = tmp_path / "run"
    real_open = builtins.open
    calls = {"n": 0}

    class FullFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])  # half a file reaches the disk, then ENOSPC
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.f.close()

    def fake_open(file, mode="r", *a, **k):
        f = real_open(file, mode, *a, **k)
        if "w" in mode and str(file).endswith(".tmp") and "images" in str(file):
            calls["n"] += 1
            if calls["n"] > 5:  # the disk fills up inside the third batch
                return FullFile(f)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(DiskFullError, match="disk full.*nothing half-written.*rerun"):
        _gen(kill_spec, run, pipe)
    monkeypatch.setattr(builtins, "open", real_open)
    assert not list(run.rglob("*.tmp"))  # no half-written file anywhere
    done = [r for r in ledger_rows(run) if r[6] == "done"]
    assert len(done) == 4 and {r[5] for r in done} == {0, 1}  # exactly the two whole batches
    for r in done:
        Image.open(run / r[4]).load()  # every recorded file is whole
    _gen(kill_spec, run, pipe)
    assert ledger_rows(run) == ledger_rows(clean_run)
    assert image_bytes(run) == image_bytes(clean_run)


def test_sigkill_mid_run_then_resume_matches_a_clean_run(kill_spec, clean_run, pipe, tmp_path):
    sj = tmp_path / "spec.json"
    sj.write_text(json.dumps(kill_spec.to_dict()))
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "audit_worker.py"), str(sj), str(run)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    n_done, deadline = 0, time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if (run / "ledger.sqlite").exists():
                try:
                    con = sqlite3.connect(run / "ledger.sqlite", timeout=1)
                    n_done = con.execute("SELECT count(*) FROM images WHERE status = 'done'").fetchone()[0]
                    con.close()
                except sqlite3.Error:
                    pass
                if n_done >= 4:
                    break
            time.sleep(0.02)
        assert proc.poll() is None, "the worker finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    rows = ledger_rows(run)
    assert 4 <= sum(r[6] == "done" for r in rows) < len(rows) == 20
    _gen(kill_spec, run, pipe)  # resume (same thread count, same batches)
    assert ledger_rows(run) == ledger_rows(clean_run)
    assert image_bytes(run) == image_bytes(clean_run)
    assert not list(run.rglob("*.tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_accelerate_run_equals_single_process(tmp_path, pipe_dir, clip_name):
    from audit_helpers import spec_dict

    d = spec_dict(pipe_dir, clip_name)
    d["audit"]["batch_size"] = 2
    spec_file = tmp_path / "spec.toml"
    spec_file.write_text(to_toml(d))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parents[1]), "DIFFKIT_QUIET": "1"}
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    r1 = subprocess.run(
        [sys.executable, "-m", "diffkit", "audit", "run", str(spec_file), "--out", str(single), "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r1.returncode == 0, r1.stderr[-3000:]
    accelerate = Path(sys.executable).with_name("accelerate")
    r2 = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(_free_port()),
            "-m",
            "diffkit",
            "audit",
            "run",
            str(spec_file),
            "--out",
            str(sharded),
            "--no-progress",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count("report:") == 1  # only the main process reports
    con = sqlite3.connect(sharded / "ledger.sqlite")
    ranks = {r for (r,) in con.execute("SELECT DISTINCT rank FROM images")}
    con.close()
    assert ranks == {0, 1}  # both processes generated
    assert ledger_rows(sharded) == ledger_rows(single)
    assert image_bytes(sharded) == image_bytes(single)
    import pandas as pd

    cols = ["prompt_id", "image_index", "sha256", "label", "p_female", "p_person"]
    a = pd.read_csv(single / "report" / "images.csv")[cols]
    b = pd.read_csv(sharded / "report" / "images.csv")[cols]
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6)


def test_a_ledger_row_deleted_by_hand_is_restored_and_generated(kill_spec, clean_run, pipe, tmp_path):
    """A received run folder whose ledger lost a row: `audit run` names it, restores it and makes the
    image, so the run is whole again (it was silently 15/16 before)."""
    from diffkit.audit.rundir import LedgerRepairedWarning

    run = tmp_path / "run"
    shutil.copytree(clean_run, run)
    (run / "images/0001/0002.png").unlink()
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute("DELETE FROM images WHERE prompt_id = 1 AND image_index = 2")
    con.commit()
    con.close()
    with pytest.warns(LedgerRepairedWarning, match=r"lacked 1 row\(s\) the spec makes.*\(prompt 1, image 2\)"):
        led = _gen(kill_spec, run, pipe)
    assert len(led) == 20 and (led["status"] == "done").all()
    assert ledger_rows(run) == ledger_rows(clean_run)
    assert image_bytes(run) == image_bytes(clean_run)


def test_a_ledger_path_outside_the_folder_writes_nothing_anywhere(kill_spec, clean_run, pipe, tmp_path):
    run = tmp_path / "a" / "b" / "run"
    shutil.copytree(clean_run, run)
    con = sqlite3.connect(run / "ledger.sqlite")
    con.execute(
        "UPDATE images SET path = '../../x.png', status = 'pending', sha256 = NULL "
        "WHERE prompt_id = 0 AND image_index = 0"
    )
    con.commit()
    con.close()
    with pytest.raises(RunMismatchError, match=r"\(prompt 0, image 0\) names the path '../../x.png', outside the run"):
        _gen(kill_spec, run, pipe)
    assert not (tmp_path / "a" / "x.png").exists() and not list(tmp_path.rglob("x.png"))


def test_steps_past_the_models_timesteps_are_refused_before_the_first_image(make_spec, pipe, tmp_path):
    """PNDM (the default sampler of SD and diffkit-tiny) ran every U-Net call at t = 1 past 1,000 steps."""
    from diffkit.audit import SpecError

    spec = make_spec(pipeline__steps=1001)
    with pytest.raises(
        SpecError,
        match=r"pipeline\.steps: pipeline\.steps=1001 is more than the 1000 timesteps.*"
        r"DDIMScheduler.*fix: use at most 1000 steps",
    ):
        _gen(spec, tmp_path / "run", pipe)
    led = sqlite3.connect(tmp_path / "run" / "ledger.sqlite")
    assert led.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0] == 0
    led.close()


def test_a_negative_prompt_past_the_token_limit_is_refused(make_spec, pipe, tmp_path):
    from diffkit.audit import SpecError

    spec = make_spec(pipeline__negative_prompt=" ".join(["blurry"] * 10_000))
    with pytest.raises(
        SpecError, match=r"pipeline\.negative_prompt: 10002 tokens, over the text encoder's limit of 77"
    ):
        _gen(spec, tmp_path / "run", pipe)
