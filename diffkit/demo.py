"""``diffkit demo``: the tour on the embedded defaults, written to a folder.

Writes the noise-schedule figures, a forward-chain strip of a bundled photograph, the
two-pixel toy and its tidy schedule table; later stages add to the same folder. Prints
where everything is.

The default folder is :func:`default_demo_out`: in a checkout the repository's ``out/demo``
whatever the working directory, so the audit it runs (``out/audit/tiny_default``) is the one the
notebooks and ``diffkit course warm`` use (:func:`~diffkit.shared_out`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ._files import checkout_root, ensure_folder, save_figure, shared_out, write_csv

__all__ = ["default_demo_out", "run_demo"]


def default_demo_out() -> Path:
    """Where ``diffkit demo`` writes when given no folder: ``shared_out("demo")`` in a checkout or
    with ``$DIFFKIT_OUT`` set (the course's cache then holds the demo's audit), else ``out/demo``
    under the working directory (an installed diffkit's figures go where its user looks, not into
    a cache folder)."""
    import os

    if checkout_root() is not None or os.environ.get("DIFFKIT_OUT", "").strip():
        return shared_out("demo")
    return Path("out") / "demo"


def _save_figure(fig, path: Path) -> Path:
    """Write atomically: a half-written PNG never replaces a good one."""
    return save_figure(fig, path, dpi=110)


def run_demo(
    out: str | Path | None = None, *, with_model: bool = True, log: Callable[[str], None] = print
) -> list[Path]:
    """Write the demo's figures and tables into *out* (default: :func:`default_demo_out`); returns the paths written.

    With *with_model*, also the diffkit-tiny tour: a grid of generated images, a reverse-chain
    strip of predicted x̂_0, and the embedded bias audit (its report under ``out/../audit``).
    """
    from .plots import plot_forward_strip, plot_schedules, plot_two_pixel
    from .samples import sample_image
    from .schedules import schedules_frame
    from .toy import two_pixel_chains

    out = ensure_folder(
        out if out is not None else default_demo_out()
    )  # a read-only or blocked --out fails here, before any work
    written: list[Path] = []

    names = ["linear", "scaled_linear", "cosine", "sigmoid", "karras"]
    written.append(_save_figure(plot_schedules(names), out / "schedules.png"))
    written.append(write_csv(schedules_frame(names), out / "schedules.csv"))
    written.append(
        _save_figure(plot_forward_strip(sample_image("astronaut", 128), "linear"), out / "forward_strip_linear.png")
    )
    written.append(
        _save_figure(plot_forward_strip(sample_image("astronaut", 128), "cosine"), out / "forward_strip_cosine.png")
    )
    written.append(_save_figure(plot_two_pixel(two_pixel_chains(n_chains=300)), out / "two_pixel.png"))
    for p in written:
        log(f"wrote {p}")
    if with_model:
        from .tiny import pipeline_path

        try:
            pipeline_path()
        except FileNotFoundError as e:  # a checkout without the shipped weights
            log(f"skipping the diffkit-tiny tour and the audit: {e}")
        else:
            written += _model_tour(out, log=log)
    return written


TINY_PROMPTS = (
    "a red circle",
    "a blue square",
    "a green triangle",
    "a yellow cross",
    "a man nurse",
    "a woman pilot",
    "a nurse",
    "a firefighter",
)


def _model_tour(out: Path, *, log: Callable[[str], None]) -> list[Path]:
    """diffkit-tiny: a grid of generated images, one reverse chain as a strip, and the audit."""
    from .audit import run_audit
    from .pipeline import load_pipeline
    from .plots import image_grid
    from .reverse import ReverseChain

    pipe = load_pipeline("tiny")
    trajs = [ReverseChain(pipe, p, steps=25, seed=i).run() for i, p in enumerate(TINY_PROMPTS)]
    grid = image_grid(
        [(t.image * 255).round().astype("uint8") for t in trajs], titles=list(TINY_PROMPTS), ncols=4, panel_size=1.8
    )
    written = [_save_figure(grid, out / "tiny_grid.png")]
    written.append(trajs[0].save_strip(out / "reverse_chain_strip.png", quantity="x0_hat"))
    log(f"wrote {written[0]}")
    log(f"wrote {written[1]}")
    result = run_audit("tiny_default", out=out.parent / "audit" / "tiny_default", progress=True)
    log(f"audit report: {result.report}")
    written.append(Path(result.report))
    return written
