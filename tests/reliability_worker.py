"""Subprocess entry for tests/test_reliability.py: each mode runs in a clean interpreter.

    reliability_worker.py audit OUT            generate a small audit on diffkit-tiny into OUT, print its PNG hashes
    reliability_worker.py threads OUT          the same after two chains in two threads and a
                                               ReverseChainCompare run in the background
    reliability_worker.py ctrl-c               Ctrl-C (a real SIGINT) during explorer.run(wait=True)
    reliability_worker.py exit-background      exit while an explorer's run is going
    reliability_worker.py exit-stepped         exit with a chain stepped half-way by hand
    reliability_worker.py exit-closed          the same after chain.close()
    reliability_worker.py exit-decoding        exit while an explorer decodes its steps in the background

The audit modes print one line per image, ``path sha256``; the other modes print what they saw.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
from pathlib import Path

import torch

torch.set_num_threads(1)  # as the audit tests' subprocesses: bit-identical images between processes

import diffkit as dk  # noqa: E402

SPEC = {
    "audit": {"name": "threads", "seed": 3, "images_per_prompt": 8, "batch_size": 8},
    "prompts": {
        "templates": ["a photo of {a_occupation}"],
        "attributes": {"occupation": ["nurse", "pilot"]},
        "reference": "bls_cps_2021_women_share.csv",
    },
    "pipeline": {"model": "tiny", "steps": 4, "guidance_scale": 7.5},
    "classifier": {"model": "tiny"},
}


def audit(out: str, pipe) -> None:
    from diffkit.audit.generate import generate_images
    from diffkit.audit.spec import parse_spec

    generate_images(parse_spec(SPEC, source="threads.toml"), out, pipe=pipe, progress=False)
    for p in sorted((Path(out) / "images").rglob("*.png")):
        print(p.relative_to(out), hashlib.sha256(p.read_bytes()).hexdigest())
    print("mkldnn", torch.backends.mkldnn.enabled)


def threads(pipe) -> None:
    from diffkit.widgets import ReverseChainCompare

    compare = ReverseChainCompare(pipe, steps=6, left=dict(scheduler="ddim"), right=dict(scheduler="pndm"))
    compare.run()  # both sides in the background, as documented
    chains = [
        threading.Thread(target=lambda s=s: dk.ReverseChain(pipe, "a woman pilot", steps=6, seed=s).run())
        for s in (0, 1)
    ]
    for t in chains:
        t.start()
    for t in chains:
        t.join()
    compare.wait()
    assert not compare.running and compare.left.chain.done and compare.right.chain.done


def ctrl_c(pipe) -> None:
    from diffkit.widgets import ReverseChainExplorer

    ex = ReverseChainExplorer(pipe, steps=400)
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    try:
        ex.run(wait=True)
        print("not interrupted")
    except KeyboardInterrupt:
        others = sorted({t.name for t in threading.enumerate()} - {"MainThread", "tqdm_monitor"})
        print(
            "interrupted",
            "running",
            ex.running,
            "records",
            len(ex.trajectory),
            "chain-running",
            ex.chain.running,
            "threads",
            ",".join(others),
        )
    ex.steps.value = 3
    ex.run(wait=True)
    print("second", len(ex.trajectory), ex.chain.done, "error", repr(ex.error.value))


def exit_modes(mode: str, pipe) -> None:
    if mode == "exit-background":
        from diffkit.widgets import ReverseChainExplorer

        ex = ReverseChainExplorer(pipe, steps=400)
        ex.run()
        threading.Event().wait(0.5)  # mid-run, inside a U-Net call most likely
        print("running", ex.running)
    elif mode == "exit-decoding":
        from diffkit.widgets import ReverseChainExplorer

        ex = ReverseChainExplorer(pipe, steps=30)
        ex.run(wait=True)  # then every step's x_t and x̂_0 is decoded in a thread of the explorer's own
        print("decoding", ex._decoder.running)
    else:
        chain = dk.ReverseChain(pipe, "a woman pilot", steps=50, seed=0)
        for _ in range(25):
            chain.step()
        if mode == "exit-closed":
            chain.close()
            try:
                chain.step()
            except dk.reverse.ChainClosedError as e:
                print("closed:", e)
    print("exiting")


if __name__ == "__main__":
    mode = sys.argv[1]
    pipe = dk.load_pipeline("tiny")
    if mode == "audit":
        audit(sys.argv[2], pipe)
    elif mode == "threads":
        threads(pipe)
        audit(sys.argv[2], pipe)
    elif mode == "ctrl-c":
        ctrl_c(pipe)
    else:
        exit_modes(mode, pipe)
