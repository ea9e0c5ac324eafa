"""The course's notebooks run cold against the 3-minute bar (issue 12).

    python benchmarks/bench_notebooks.py [--only 00 02] [--cold-audit] [--sections]

Executes each notebook in a fresh kernel, as a classroom machine would, and prints its wall time
and the ratio to the bar (180 s; ratio ≤ 1 meets it). The tour's small audit is deleted first, so
the tour always runs cold; ``--cold-audit`` also deletes the embedded default audit that 04 reads
(04 then runs it: about 5 minutes on an idle 2-core machine, over the bar). ``--sections`` also
prints each ``## `` section's seconds as the Markdown table of ``diffkit course time``
(:mod:`diffkit.course.timing`, which times each cell from nbclient's recorded timestamps).
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BAR = 180.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="*", default=[], help="notebook number prefixes (default: all)")
    p.add_argument("--cold-audit", action="store_true", help="delete out/audit/tiny_default first")
    p.add_argument("--sections", action="store_true", help="print each section's seconds (Markdown table)")
    args = p.parse_args()

    from diffkit.course.timing import time_notebook, timings_table

    os.chdir(ROOT)
    shutil.rmtree(ROOT / "out" / "audit" / "tour_small", ignore_errors=True)
    if args.cold_audit:
        shutil.rmtree(ROOT / "out" / "audit" / "tiny_default", ignore_errors=True)
    paths = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [q for q in paths if any(q.name.startswith(o) for o in args.only)]
    print(f"(machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    worst = 0.0
    timings = []
    for path in paths:
        timings.append(time_notebook(path, cwd=ROOT, timeout=900))
        seconds = timings[-1].seconds
        worst = max(worst, seconds / BAR)
        print(f"{path.name:40s} {seconds:6.1f} s cold   ratio to the {BAR:.0f} s bar {seconds / BAR:.2f}", flush=True)
    print(f"worst ratio {worst:.2f} (≤ 1 meets the bar)")
    if args.sections:
        print()
        print(timings_table(timings))


if __name__ == "__main__":
    main()
