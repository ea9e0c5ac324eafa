"""Every notebook of the course runs top to bottom, offline, and the docs build strictly."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXECUTED = ROOT / "out" / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    seconds = time.perf_counter() - t0
    # every lesson draws figures; they must reach the page as pictures, not as "<Figure size …>"
    kinds = {k for c in nb.cells for o in c.get("outputs", []) for k in o.get("data", {})}
    assert "image/png" in kinds, f"{path.name} displayed no picture"
    EXECUTED.mkdir(parents=True, exist_ok=True)
    # the saved widget state would make the docs site load the widget renderer from a CDN; the
    # explorers need a kernel anyway, so the site shows the figures and not the widgets
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, EXECUTED / path.name)
    (EXECUTED / f"{path.stem}.seconds").write_text(f"{seconds:.1f}\n")
    print(f"{path.name}: {seconds:.1f} s")


@pytest.mark.slow
def test_docs_build_strictly(tmp_path):
    """mkdocs build --strict, with the executed notebooks (from the tests above) rendered in."""
    pytest.importorskip("mkdocs")
    site_src = tmp_path / "src"
    shutil.copytree(ROOT / "docs", site_src / "docs")
    shutil.copy(ROOT / "mkdocs.yml", site_src / "mkdocs.yml")
    (site_src / "docs" / "notebooks").mkdir(exist_ok=True)
    for nb in NOTEBOOKS:
        executed = EXECUTED / nb.name
        shutil.copy(executed if executed.exists() else nb, site_src / "docs" / "notebooks" / nb.name)
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(site_src / "mkdocs.yml"),
         "-d", str(tmp_path / "site")],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # offline classrooms and school networks: the site loads nothing from elsewhere
    external = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]+\.(?:js|css|woff2?|ttf)""", re.I)
    found = {}
    for page in (tmp_path / "site").rglob("*.html"):
        hits = external.findall(page.read_text(errors="replace"))
        hits += re.findall(r"fonts\.(?:googleapis|gstatic)\.com", page.read_text(errors="replace"))
        if hits:
            found[str(page.relative_to(tmp_path / "site"))] = sorted(set(hits))[:3]
    assert not found, found
