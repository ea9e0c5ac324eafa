"""``diffkit course warm``: fill the caches the notebooks read, so each runs fast in class.

Every part writes under :func:`~diffkit.shared_out` (a checkout's ``out/``), where ``make demo``
writes its audit and where the notebooks read, whatever folder Jupyter was started from:

- ``audit/tiny_default``: the embedded audit (``make demo``'s; notebook 05 reads it);
- ``audit/tour_small``: the tour's small audit (:func:`diffkit.audit.tour_spec`, notebook 00);
- the weak judge's reading of ``tiny_default`` (``rescore_audit(…, judge="tiny-weak")``, notebook
  05): its embeddings go to the run's embedding cache;
- ``audit/guidance_lesson``: notebook 05's guidance sweep (:func:`diffkit.audit.guidance_lesson_spec`);
- ``audit/tiny_guidance_sweep``: the whole guidance sweep, only when a notebook's code names it;
- ``course_cache/``: the pictures notebooks 02 and 04 draw by the dozen
  (:data:`~diffkit.course.pictures.LESSON_IMAGES`, through :func:`~diffkit.course.chain_images`).

Each part resumes: an audit run picks up from its ledger, a rescore from its embedding cache,
so a finished part takes seconds and an interrupted warm continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._files import shared_out
from .pictures import LESSON_IMAGES, chain_images

__all__ = ["WEAK_JUDGE", "warm_course"]

#: The weak judge and its own threshold, as notebook 05 reads the run with it.
WEAK_JUDGE = {"judge": "tiny-weak", "abstain_below": 0.5}


def _named_in_notebooks(word: str, notebooks: list[Path]) -> bool:
    """Whether a code cell of one of *notebooks* names *word* (prose that mentions it runs nothing)."""
    import json

    for path in notebooks:
        cells = json.loads(path.read_text(encoding="utf-8")).get("cells", [])
        for cell in cells:
            source = cell.get("source", "")
            if cell.get("cell_type") == "code" and word in (source if isinstance(source, str) else "".join(source)):
                return True
    return False


def _draw_lesson_images(pipe: Any, cache: Path) -> None:
    for prompt, seeds, options in LESSON_IMAGES:
        chain_images(pipe, prompt, seeds, cache=cache, **options)


def _parts(notebooks: list[Path], out: Path) -> list[tuple[str, Callable[[Any], Any]]]:
    """(what, how) for each cache to fill; *how* takes the pipeline, loaded once."""
    from ..audit import guidance_lesson_spec, load_spec, rescore_audit, run_audit, tour_spec

    default = out / "audit" / "tiny_default"
    parts = [
        (
            f"embedded audit tiny_default → {default}",
            lambda pipe: run_audit("tiny_default", out=default, progress=False, pipe=pipe),
        ),
        (
            f"tour's audit tour_small → {out / 'audit' / 'tour_small'}",
            lambda pipe: run_audit(tour_spec(), out=out / "audit" / "tour_small", progress=False, pipe=pipe),
        ),
        (
            f"weak judge's reading of tiny_default ({WEAK_JUDGE['judge']}) → {default}",
            lambda pipe: rescore_audit(default, **WEAK_JUDGE),
        ),
        (
            f"guidance lesson guidance_lesson → {out / 'audit' / 'guidance_lesson'}",
            lambda pipe: run_audit(
                guidance_lesson_spec(), out=out / "audit" / "guidance_lesson", progress=False, pipe=pipe
            ),
        ),
    ]
    parts.append(
        (
            f"the lessons' pictures ({len(LESSON_IMAGES)} sets) → {out / 'course_cache'}",
            lambda pipe: _draw_lesson_images(pipe, out / "course_cache"),
        )
    )
    if _named_in_notebooks("tiny_guidance_sweep", notebooks):
        sweep = out / "audit" / "tiny_guidance_sweep"
        parts.append(
            (
                f"guidance sweep tiny_guidance_sweep → {sweep}",
                lambda pipe: run_audit(load_spec("tiny_guidance_sweep"), out=sweep, progress=False, pipe=pipe),
            )
        )
    return parts


def warm_course(
    out: str | Path | None = None, *, notebooks: list[Path] | None = None, log: Callable[[str], None] = print
) -> dict[str, float]:
    """Fill every cache the notebooks use (see the module's doc) under *out* (default:
    :func:`~diffkit.shared_out`); returns the seconds each part took, and logs them as it goes.

    *notebooks* (default: the checkout's, none when diffkit is installed) decide the optional parts.
    """
    from ..errors import InputError
    from ..pipeline import load_pipeline
    from .editions import course_notebooks

    out = Path(out) if out is not None else shared_out()
    if notebooks is None:
        try:
            notebooks = course_notebooks()
        except InputError:  # an installed diffkit has no notebooks: the fixed parts only
            notebooks = []
    t0 = time.perf_counter()
    pipe = load_pipeline("tiny")
    seconds = {"load diffkit-tiny": time.perf_counter() - t0}
    log(f"loaded diffkit-tiny in {seconds['load diffkit-tiny']:.1f} s")
    for what, how in _parts(notebooks, out):
        log(f"{what} …")
        t = time.perf_counter()
        how(pipe)
        seconds[what] = time.perf_counter() - t
        log(f"  done in {seconds[what]:.1f} s")
    total = sum(seconds.values())
    log(
        f"warm: {len(seconds) - 1} parts in {total:.1f} s with loading diffkit-tiny; the notebooks read them from {out}"
    )
    return seconds
