"""Writers meeting on one run folder: two runs, two report writers. One works, the other is
refused at once naming it; nothing is generated twice and the result equals a single run."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from audit_helpers import held_elsewhere, image_bytes, ledger_rows, spec_dict

from diffkit.audit import generate_images, parse_spec, report_audit, run_audit, score_images
from diffkit.audit.generate import DistState
from diffkit.errors import RunBusyError

HERE = Path(__file__).resolve().parent
ONE = DistState()


@pytest.fixture(scope="module")
def race_spec(pipe_dir, clip_name):
    # 2 × 6 audit + 8 control images, one per batch: the winner holds the folder for 20 batches
    d = spec_dict(pipe_dir, clip_name)
    d["audit"].update(images_per_prompt=6, batch_size=1)
    return parse_spec(d, source="unit.toml")


def _race(tmp: Path, *argvs: list[str]) -> list[subprocess.CompletedProcess]:
    """Start one worker per argv, wait until each has imported everything, release them together."""
    go = tmp / "go"
    env = {
        **os.environ,
        "PYTHONPATH": str(HERE.parents[1]),
        "OMP_NUM_THREADS": "1",
        "DIFFKIT_QUIET": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "audit_worker.py"), "--after", str(go), *a]
            if a[0] != "--report"
            else [
                sys.executable,
                str(HERE / "audit_worker.py"),
                "--report",
                "--after",
                str(go),
                *a[1:],
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in argvs
    ]
    pids = []
    for p in procs:
        line = p.stdout.readline()
        assert line.startswith("ready "), p.communicate(timeout=60)
        pids.append(int(line.split()[1]))
    go.write_text("")
    out = []
    for p, pid in zip(procs, pids):
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess([pid], p.returncode, stdout, stderr))
    return out


def _stamps(run: Path) -> dict:
    con = sqlite3.connect(run / "ledger.sqlite")
    try:
        return {
            (k, i): t
            for k, i, t in con.execute(
                "SELECT prompt_id, image_index, finished_at || seconds || rank FROM images WHERE status = 'done'"
            )
        }
    finally:
        con.close()


def _debris(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*.tmp"))


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_two_runs_on_one_folder_one_is_refused_none_generates_twice(race_spec, pipe, tmp_path):
    clean = tmp_path / "clean"
    generate_images(race_spec, clean, pipe=pipe, progress=False, state=ONE)
    sj = tmp_path / "spec.json"
    sj.write_text(json.dumps(race_spec.to_dict()))
    run = tmp_path / "run"
    a, b = _race(tmp_path, [str(sj), str(run)], [str(sj), str(run)])
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    assert winner.returncode == 0, winner.stderr[-2000:]
    assert loser.returncode == 3, loser.stderr[-2000:]
    assert f"in use by another diffkit run (pid {winner.args[0]}, generating images since" in loser.stderr
    assert "fix: wait for it to finish" in loser.stderr
    stamps = _stamps(run)
    assert len(stamps) == 20  # the winner finished the run alone
    generate_images(race_spec, run, pipe=pipe, progress=False, state=ONE)  # the loser's rerun: nothing left to do
    assert _stamps(run) == stamps  # no image was generated twice
    assert ledger_rows(run) == ledger_rows(clean) and image_bytes(run) == image_bytes(clean)
    assert _debris(run) == []


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_two_report_writers_one_complete_report_no_debris(make_spec, pipe, tmp_path):
    spec = make_spec()
    run = tmp_path / "run"
    first = run_audit(spec, out=run, pipe=pipe, progress=False)
    report = run / "report"
    before = {p.name: p.read_bytes() for p in report.iterdir()}
    for p in report.iterdir():
        p.unlink()
    a, b = _race(tmp_path, ["--report", str(run)], ["--report", str(run)])
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    assert winner.returncode == 0, winner.stderr[-2000:]
    assert loser.returncode == 3, loser.stderr[-2000:]
    assert f"in use by another diffkit run (pid {winner.args[0]}, " in loser.stderr
    after = {p.name: p.read_bytes() for p in report.iterdir()}
    assert set(after) == set(before)  # one complete report ...
    for name in before:
        if name.endswith(".csv"):
            assert after[name] == before[name], name  # ... equal to the single run's
    assert after["index.html"].rstrip().endswith(b"</html>")
    assert _debris(run) == []
    assert first.report == report / "index.html"


def test_scoring_and_reporting_take_the_same_lock(make_spec, pipe, tmp_path):
    spec = make_spec(audit__images_per_prompt=1, controls__images_per_prompt=1)
    run = tmp_path / "run"
    result = run_audit(spec, out=run, pipe=pipe, progress=False)
    html = result.report.read_bytes()
    with held_elsewhere(run, "generating images"):
        with pytest.raises(RunBusyError, match=r"pid \d+, generating images since .*fix: wait"):
            score_images(spec, run, progress=False, state=ONE)
        with pytest.raises(RunBusyError, match="generating images"):
            report_audit(run, progress=False)
        with pytest.raises(RunBusyError, match="generating images"):
            run_audit(spec, out=run, pipe=pipe, progress=False)
    assert result.report.read_bytes() == html  # nothing was written while the folder was busy
    orphan = run / "report" / ".index.html.4242.1.deadbeef.tmp"
    orphan.write_text("half a report")  # a report writer killed mid-write
    report_audit(run, progress=False)  # holds the lock: no live writer owns a temporary file
    assert not orphan.exists() and _debris(run) == []


def test_the_command_line_shows_a_busy_folder_as_one_line(make_spec, tmp_path, capsys):
    from diffkit.audit.rundir import prepare_run
    from diffkit.cli import main

    run = tmp_path / "run"
    prepare_run(make_spec(), run)
    with held_elsewhere(run, "generating images"):
        assert main(["audit", "report", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"diffkit audit report: error: {run} is in use by another diffkit run (pid {os.getpid()}, "
        "generating images since "
    ), err
    assert "[Errno" not in err and len(err.splitlines()) == 1
