"""``diffkit course time``: each notebook's run time, and each section's, as a Markdown table.

A notebook runs in a fresh kernel (as in class) from its own folder, as JupyterLab runs it; each code cell's time is
read from the timestamps nbclient records (``iopub.status.busy`` to ``shell.execute_reply``) and
summed per section, a section being the cells from one ``## `` heading to the next. What the cells
do not account for (starting the kernel, sending the cells) is its own row. The lesson plans'
timings in ``docs/howto/classroom.md`` come from this command.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["NotebookTiming", "read_executed", "sections_of", "time_course", "time_notebook", "timings_table"]

OPENING = "(opening cells)"
OVERHEAD = "(kernel start and between cells)"
_SECTION = re.compile(r"^## +(.+?)\s*$", re.M)


@dataclass
class NotebookTiming:
    """One notebook's wall time and its sections' (title → seconds, in notebook order)."""

    name: str
    seconds: float
    sections: dict[str, float] = field(default_factory=dict)


def _stamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _cell_seconds(cell) -> float:
    ex = cell.get("metadata", {}).get("execution", {})
    start = ex.get("iopub.status.busy") or ex.get("iopub.execute_input")
    end = ex.get("shell.execute_reply")
    return (_stamp(end) - _stamp(start)).total_seconds() if start and end else 0.0


def sections_of(nb) -> dict[str, float]:
    """Seconds per ``## `` section of an executed notebook (the code cells' recorded times), named
    by the English headings (the Spanish counterparts, tagged ``lang-es``, name the same sections)."""
    out: dict[str, float] = {}
    current = OPENING
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "lang-es" not in cell.get("metadata", {}).get("tags", []):
            src = cell.source if isinstance(cell.source, str) else "".join(cell.source)
            heads = _SECTION.findall(src)
            if heads:
                current = heads[-1]
        elif cell.cell_type == "code":
            out[current] = out.get(current, 0.0) + _cell_seconds(cell)
    return out


def _timing(name: str, nb: Any, total: float | None) -> NotebookTiming:
    """The executed notebook *nb*'s sections, and what they leave of *total* (the whole run's
    seconds; None: their sum) as the overhead row."""
    sections = sections_of(nb)
    if total is None:
        total = sum(sections.values())
    sections[OVERHEAD] = max(0.0, total - sum(sections.values()))
    return NotebookTiming(name, total, sections)


def time_notebook(path: str | Path, *, cwd: str | Path | None = None, timeout: int = 900) -> NotebookTiming:
    """Run the notebook *path* in a fresh kernel with *cwd* as its working folder (default: the
    notebook's own folder, as JupyterLab runs it) and time it."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    cwd = Path(cwd) if cwd is not None else path.resolve().parent
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return _timing(path.stem, nb, time.perf_counter() - t0)


def read_executed(path: str | Path) -> NotebookTiming:
    """The timing of an executed copy *path* (as ``make test-all``'s notebook tests write them to
    ``out/notebooks/``, with ``<name>.seconds`` beside it for the whole run), without running it."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    stamp = path.with_suffix(".seconds")
    return _timing(path.stem, nb, float(stamp.read_text()) if stamp.is_file() else None)


def timings_table(timings: list[NotebookTiming]) -> str:
    """The timings as a Markdown table: one row per section, then the notebook's total in bold."""
    rows = ["| notebook | section | seconds |", "|---|---|---:|"]
    for t in timings:
        for title, s in t.sections.items():
            rows.append(f"| {t.name} | {title.replace('|', '/')} | {s:.1f} |")
        rows.append(f"| **{t.name}** | **whole notebook** | **{t.seconds:.1f}** |")
    return "\n".join(rows)


def time_course(
    only: list[str] | None = None,
    *,
    notebooks: str | Path | None = None,
    executed: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> list[NotebookTiming]:
    """Time the course's notebooks (those whose names start with one of *only*, default all) one
    after another, logging each as it finishes, then the Markdown table. With *executed* (a folder
    of executed copies, e.g. ``out/notebooks``), read the times they recorded instead of running."""
    from .editions import course_notebooks

    paths = course_notebooks(notebooks)
    if only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in only)]
    if executed is not None:
        found = [Path(executed) / p.name for p in paths if (Path(executed) / p.name).is_file()]
        timings = [read_executed(p) for p in found]
        log(f"(read from {len(found)} executed copies in {executed})")
        log(timings_table(timings))
        return timings
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    log(f"(machine: {os.cpu_count()} CPUs, load average {load:.1f} before the first notebook)")
    timings = []
    for p in paths:
        timings.append(time_notebook(p))
        log(f"{p.name}: {timings[-1].seconds:.1f} s")
    log("")
    log(timings_table(timings))
    return timings
