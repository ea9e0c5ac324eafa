"""Threads, interrupts and exits, each in a clean interpreter (tests/reliability_worker.py).

Two chains at once once left oneDNN off for the whole process and changed the next audit's
images; Ctrl-C in ``explorer.run(wait=True)`` left a worker running that the explorer said had
stopped; an unfinished chain aborted the interpreter at exit (exit 134).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}


def _worker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "reliability_worker.py"), *args], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


def _lines(p: subprocess.CompletedProcess) -> list[str]:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr[-3000:]}"
    return p.stdout.splitlines()


def test_chains_in_threads_leave_the_next_audit_bit_identical(tmp_path):
    """A ReverseChainCompare run in the background and two chains in two threads, then an audit
    (batches of 16 U-Net samples, oneDNN's side of the rule): the same PNG bytes as a clean process."""
    clean = _lines(_worker("audit", str(tmp_path / "clean")))
    after = _lines(_worker("threads", str(tmp_path / "threads")))
    assert len([x for x in clean if x.endswith(".png") or ".png " in x]) == 16
    assert clean[-1] == "mkldnn True"
    assert after == clean


def test_ctrl_c_in_run_wait_stops_the_worker_first():
    out = _lines(_worker("ctrl-c"))
    first, second = out[0].split(), out[1]
    assert first[0] == "interrupted", out
    assert first[1:3] == ["running", "False"] and first[-2:] == ["explorer-thread", "False"], out
    assert 0 < int(first[4]) < 401, out  # stopped part-way, after the U-Net call in flight
    assert second == "second 4 True error ''", out  # PNDM: 3 steps, 4 U-Net calls


@pytest.mark.parametrize("mode", ["exit-background", "exit-stepped", "exit-closed"])
def test_an_unfinished_chain_never_aborts_the_interpreter(mode):
    p = _worker(mode)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert "terminate called" not in p.stderr
    assert p.stdout.splitlines()[-1] == "exiting"
    if mode == "exit-closed":
        assert "closed: the chain was closed" in p.stdout or "closed: this chain was closed" in p.stdout
