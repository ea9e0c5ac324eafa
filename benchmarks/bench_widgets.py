"""Slider latency of the explorers, measured in-process by setting the widget's value.

Target (issue 5): median ≤ 50 ms per update for 512×512 frames. The baseline, measured in the
same run, is the library work alone (the same previews, no widgets), so the ratio shows what
the widget layer adds.

Exact pictures (issue 25): on diffkit-tiny (128 px, 256 px panels; a tiny random pipeline where
its weights are missing), the reverse explorer's slider once the background decoder has decoded
every step (target ≤ 16 ms per move), against decoding one step's x_t and x̂_0 with the VAE (what
a move costs without the cache), both in the same run.

    .venv/bin/python benchmarks/bench_widgets.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_widgets.py   # one thread (a busy classroom machine)
"""

from __future__ import annotations

import statistics
import time

import torch

from diffkit import sample_image
from diffkit.testing import tiny_random_pipeline
from diffkit.widgets import ForwardChainExplorer, ReverseChainExplorer, ScheduleExplorer


def timed(fn, values) -> float:
    out = []
    for v in values:
        t0 = time.perf_counter()
        fn(v)
        out.append(time.perf_counter() - t0)
    return statistics.median(out) * 1e3


def exact_slider() -> None:
    """ms per move of the reverse explorer's slider with every step decoded, vs one step's two VAE decodes."""
    from diffkit.reverse import Trajectory

    try:
        from diffkit import load_pipeline

        pipe, name = load_pipeline("tiny"), "diffkit-tiny"
    except OSError:
        pipe, name = tiny_random_pipeline("sd"), "tiny random SD"
    e = ReverseChainExplorer(pipe, prompt="a woman pilot", steps=20, seed=3)
    e.run(wait=True)
    t0 = time.perf_counter()
    e.wait_decoded()
    every = time.perf_counter() - t0
    traj = e.trajectory
    n = len(traj)
    idx = [i % n for i in range(1, 41)]
    move = timed(lambda k: setattr(e.step, "value", k), idx)

    def decode(_):  # the library's exact decode of one step's two pictures, on an empty cache
        fresh = Trajectory(traj._pipe, traj.info, traj.tokens)
        fresh.add(traj[0])
        fresh.decode([0], "x_t")
        fresh.decode([0], "x0_hat")

    dec = timed(decode, range(10))
    print(
        f"ReverseChainExplorer on {name}, {traj.info['height']} px shown at {e._side(traj)} px, exact pictures: "
        f"median {move:.2f} ms per slider move with all {n} steps decoded (target ≤ 16 ms); one step's two "
        f"VAE decodes {dec:.1f} ms ({e._decoder.ms_per_step:.1f} ms in the explorer's decoder thread); ratio "
        f"{move / dec:.4f}x; all {n} steps decoded in the background in {every:.1f} s after the run"
    )
    e.close()


def main() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    # reverse chain: SD-sized latents (64×64×4) from a 128 px tiny pipeline, shown at 512×512
    pipe = tiny_random_pipeline("sd")
    e = ReverseChainExplorer(pipe, steps=20, size=128, display_size=512, capture_attention=False, exact=False)
    e.run(wait=True)
    traj = e.trajectory
    idx = [i % len(traj) for i in range(1, 41)]

    def library(k):
        for q in ("x_t", "x0_hat", "eps_uncond", "eps_text", "eps", "guidance"):
            traj.preview(k, q, "fast")

    def widget(k):
        e.step.value = k

    lib = timed(library, idx)
    wid = timed(widget, idx)
    print(
        f"ReverseChainExplorer step slider, 512×512 panels: median {wid:.1f} ms per update "
        f"(target ≤ 50 ms); library previews alone {lib:.1f} ms; ratio {wid / lib:.2f}x"
    )

    s = ScheduleExplorer(sample_image("astronaut", 512))
    ms = timed(lambda t: setattr(s.t, "value", t), range(10, 1000, 25))
    print(f"ScheduleExplorer t slider, 3 schedules × 512×512: median {ms:.1f} ms per update")

    f = ForwardChainExplorer(sample_image("astronaut", 512), pipe=None, image_size=512)
    ms = timed(lambda t: setattr(f.t, "value", t), range(10, 1000, 25))
    print(f"ForwardChainExplorer t slider, 512×512: median {ms:.1f} ms per update")

    exact_slider()


if __name__ == "__main__":
    main()
