"""``diffkit demo``: the tour on the embedded defaults, written to a folder.

Writes the noise-schedule figures, a forward-chain strip of a bundled photograph, the
two-pixel toy and its tidy schedule table; later stages add to the same folder. Prints
where everything is.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_commands", "run_demo"]


def _save_figure(fig, path: Path) -> Path:
    """Write atomically: a half-written PNG never replaces a good one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=path.suffix)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def run_demo(out: str | Path = "out/demo", *, log: Callable[[str], None] = print) -> list[Path]:
    """Write the demo's figures and tables into *out*; returns the paths written."""
    from .forward import two_pixel_chains
    from .plots import plot_forward_strip, plot_schedules, plot_two_pixel
    from .samples import sample_image
    from .schedules import schedules_frame

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    names = ["linear", "scaled_linear", "cosine", "sigmoid", "karras"]
    written.append(_save_figure(plot_schedules(names), out / "schedules.png"))
    table = out / "schedules.csv"
    tmp = table.with_suffix(".csv.tmp")
    schedules_frame(names).to_csv(tmp, index=False)
    os.replace(tmp, table)
    written.append(table)
    written.append(
        _save_figure(plot_forward_strip(sample_image("astronaut", 128), "linear"), out / "forward_strip_linear.png")
    )
    written.append(
        _save_figure(plot_forward_strip(sample_image("astronaut", 128), "cosine"), out / "forward_strip_cosine.png")
    )
    written.append(_save_figure(plot_two_pixel(two_pixel_chains(n_chains=300)), out / "two_pixel.png"))
    for p in written:
        log(f"wrote {p}")
    return written


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="write the tour's figures for the embedded defaults to a folder")
    p.add_argument("--out", default="out/demo", help="folder to write into (default: out/demo)")
    p.set_defaults(func=lambda a: (run_demo(a.out), print(f"demo written to {Path(a.out).resolve()}"))[-1] and 0)
