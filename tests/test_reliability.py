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
    return subprocess.run(
        [sys.executable, str(HERE / "reliability_worker.py"), *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


def _lines(p: subprocess.CompletedProcess) -> list[str]:
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stderr[-3000:]}"
    return p.stdout.splitlines()


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_chains_in_threads_leave_the_next_audit_bit_identical(tmp_path):
    """A ReverseChainCompare run in the background and two chains in two threads, then an audit
    (batches of 16 U-Net samples, oneDNN's side of the rule): the same PNG bytes as a clean process."""
    clean = _lines(_worker("audit", str(tmp_path / "clean")))
    after = _lines(_worker("threads", str(tmp_path / "threads")))
    assert len([x for x in clean if x.endswith(".png") or ".png " in x]) == 16
    assert clean[-1] == "mkldnn True"
    assert after == clean


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_ctrl_c_in_run_wait_stops_the_worker_first():
    out = _lines(_worker("ctrl-c"))
    first, second = out[0].split(), out[1]
    assert first[0] == "interrupted", out
    assert first[1:3] == ["running", "False"] and first[5:7] == ["chain-running", "False"], out
    assert first[-2:] == ["threads", "diffkit-reverse-chain"], out  # the paused chain's worker, nothing else
    assert 0 < int(first[4]) < 401, out  # stopped part-way, after the U-Net call in flight
    assert second == "second 4 True error ''", out  # PNDM: 3 steps, 4 U-Net calls


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
@pytest.mark.parametrize("mode", ["exit-background", "exit-stepped", "exit-closed", "exit-decoding"])
def test_an_unfinished_chain_never_aborts_the_interpreter(mode):
    p = _worker(mode)
    assert p.returncode == 0, f"exit {p.returncode}: {p.stderr[-2000:]}"
    assert "terminate called" not in p.stderr
    assert p.stdout.splitlines()[-1] == "exiting"
    if mode == "exit-decoding":
        assert "decoding True" in p.stdout, p.stdout  # it was still decoding when the interpreter exited
    if mode == "exit-closed":
        assert "closed: the chain was closed" in p.stdout or "closed: this chain was closed" in p.stdout


def _process_state() -> dict:
    """What a call must never change behind the user's back: process-wide switches."""
    import logging
    import warnings

    import matplotlib
    import torch
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    return {
        "mkldnn": torch.backends.mkldnn.enabled,
        "threads": torch.get_num_threads(),
        "grad": torch.is_grad_enabled(),
        "rng": torch.random.get_rng_state().clone(),
        "root_log_level": logging.getLogger().level,
        "diffusers_bars": dlog.is_progress_bar_enabled(),
        "transformers_bars": tlog.is_progress_bar_enabled(),
        "diffusers_verbosity": dlog.get_verbosity(),
        "warning_filters": list(warnings.filters),
        "rc": dict(matplotlib.rcParams),
    }


def test_no_call_changes_process_wide_state(tmp_path):
    """Loading, a chain, an explorer run, the test builders and an audit's generation leave every
    process-wide switch as they found it (torch flags, threads, the global random stream, log
    levels, loading bars, warning filters, matplotlib's rcParams)."""
    import torch

    import diffkit as dk
    from diffkit.audit._testing import save_test_clip
    from diffkit.audit.generate import generate_images
    from diffkit.audit.spec import parse_spec
    from diffkit.testing import save_tiny_random_pipeline, tiny_random_pipeline
    from diffkit.widgets import ReverseChainExplorer, TwoPixelExplorer

    def calls(run: Path) -> None:
        pipe = dk.load_pipeline("tiny")
        dk.ReverseChain(pipe, "a woman pilot", steps=3, seed=0, capture_attention=True).run()
        ex = ReverseChainExplorer(pipe, steps=3)
        ex.run(wait=True)
        ex.close()
        TwoPixelExplorer(n_chains=5).close()
        tiny_random_pipeline("sd")
        folder = save_tiny_random_pipeline(run / "pipe")
        save_test_clip(run / "clip")
        spec = parse_spec(
            {
                "audit": {"name": "state", "seed": 1, "images_per_prompt": 2, "batch_size": 2},
                "prompts": {"templates": ["a photo of {a_occupation}"], "attributes": {"occupation": ["nurse"]}},
                "pipeline": {"model": str(folder), "steps": 2, "height": 32, "width": 32},
            },
            source="state.toml",
        )
        generate_images(spec, run / "run", progress=False)

    calls(tmp_path / "first")  # first imports add their libraries' own warning filters: not a call's doing
    torch.manual_seed(1234)
    before = _process_state()
    calls(tmp_path / "second")
    after = _process_state()
    for key in before:
        if key == "rng":
            assert torch.equal(before[key], after[key]), "the global random stream moved"
        else:
            assert before[key] == after[key], key
