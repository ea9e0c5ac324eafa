"""Slider latency of the explorers, measured in-process by setting the widget's value.

Target (issue 5): median ≤ 50 ms per update for 512×512 frames. The baseline, measured in the
same run, is the library work alone (the same previews, no widgets), so the ratio shows what
the widget layer adds.

    .venv/bin/python benchmarks/bench_widgets.py
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


def main() -> None:
    print(f"torch threads: {torch.get_num_threads()}")
    # reverse chain: SD-sized latents (64×64×4) from a 128 px tiny pipeline, shown at 512×512
    pipe = tiny_random_pipeline("sd")
    e = ReverseChainExplorer(pipe, steps=20, size=128, display_size=512, capture_attention=False)
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


if __name__ == "__main__":
    main()
