"""Helpers shared by the audit tests (a module, so test files can import it)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path

from diffkit.audit._testing import to_toml  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[2]


def spec_dict(pipe_dir, clip_name, **over) -> dict:
    """A small spec: 2 occupations × 1 template × 3 images + 2 × 2 × 2 controls = 14 images, 32×32, 2 steps."""
    d = {
        "audit": {"name": "unit", "seed": 7, "images_per_prompt": 3, "batch_size": 4},
        "prompts": {
            "templates": ["a photo of {a_occupation}"],
            "attributes": {"occupation": ["nurse", "pilot"]},
            "reference": str(REPO / "audits" / "bls_cps_2021_women_share.csv"),
        },
        "controls": {"templates": ["a {gender} {occupation}"], "images_per_prompt": 2},
        "pipeline": {"model": str(pipe_dir), "steps": 2, "height": 32, "width": 32, "guidance_scale": 5.0},
        "classifier": {"model": clip_name, "person_threshold": 0.0, "abstain_below": 0.5, "batch_size": 8},
        "report": {"n_boot": 200, "thumbnails_per_prompt": 2},
    }
    d = copy.deepcopy(d)
    for key, value in over.items():
        section, _, name = key.partition("__")
        d.setdefault(section, {})[name] = value
    return d


def ledger_rows(run_dir) -> list[tuple]:
    """The ledger without timings: what must match between runs."""
    import sqlite3

    con = sqlite3.connect(Path(run_dir) / "ledger.sqlite")
    try:
        return con.execute(
            "SELECT prompt_id, image_index, prompt, seed, path, batch, status, sha256 FROM images "
            "ORDER BY prompt_id, image_index"
        ).fetchall()
    finally:
        con.close()


def image_bytes(run_dir) -> dict[str, bytes]:
    root = Path(run_dir) / "images"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@contextlib.contextmanager
def held_elsewhere(run_dir, doing: str = "generating images"):
    """*run_dir*'s lock held by another thread for the block, as another process would hold it
    (a thread's own nested :func:`~diffkit.audit.rundir.run_lock` passes through)."""
    import threading

    from diffkit.audit.rundir import run_lock

    taken, release = threading.Event(), threading.Event()

    def hold():
        with run_lock(run_dir, doing):
            taken.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    assert taken.wait(60)
    try:
        yield
    finally:
        release.set()
        t.join()


def write_as_run(spec, run_dir, images) -> None:
    """Put *images* (PIL, one list per prompt in prompt order) into a run folder of *spec* as if
    they had been generated: the spec's ledger, each PNG at its row's path, rows marked done."""
    import hashlib
    import io

    from diffkit.audit.rundir import Ledger, inside, now, prepare_run, write_atomic

    prepare_run(spec, run_dir)
    with Ledger(run_dir) as led:
        rows = led.frame()
        updates = []
        for (k, i, path), img in zip(
            rows[["prompt_id", "image_index", "path"]].itertuples(index=False),
            [im for per_prompt in images for im in per_prompt],
        ):
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            data = buf.getvalue()
            write_atomic(inside(run_dir, path), data)
            updates.append((hashlib.sha256(data).hexdigest(), now(), int(k), int(i)))
        with led.transaction() as c:
            c.executemany(
                "UPDATE images SET status = 'done', sha256 = ?, seconds = 0, rank = 0, finished_at = ? "
                "WHERE prompt_id = ? AND image_index = ?",
                updates,
            )
