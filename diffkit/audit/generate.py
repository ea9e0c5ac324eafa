"""Generation at scale: batched, deterministic, resumable, shardable.

The run folder::

    spec.json                 the resolved spec (its sha256 is the run's fingerprint)
    ledger.sqlite             one row per image (SQLite in write-ahead-log mode)
    images/KKKK/IIII.png      image i of prompt k

How the guarantees are kept:

* **Deterministic.** Image i of prompt k starts from noise drawn by its own CPU generator
  seeded with :func:`~diffkit.audit.prompts.derive_seed` (spec seed, k, i). The (k, i) grid
  is cut into fixed batches of ``audit.batch_size``; a batch is always computed whole, so
  every image sees the same batch composition in a fresh run, a resumed run or a sharded run.
* **Crash-safe.** A PNG is encoded in memory, written to a temporary file, flushed, fsynced
  and renamed into place (atomic on POSIX). The ledger rows of a batch are committed in one
  transaction after its files. Killing the process at any moment loses at most the batch in
  flight; a rerun skips finished rows (``INSERT … ON CONFLICT DO UPDATE``: never a duplicate).
* **Verified.** On resume each finished row's file is re-hashed; a missing or corrupt PNG
  is marked ``missing``/``corrupt`` and its batch regenerated.
* **Full disk.** ``ENOSPC`` while writing removes the temporary file and raises
  :class:`DiskFullError`; the ledger keeps only whole batches.
* **Sharded.** Under ``accelerate launch`` (or ``torchrun``) batch b goes to process
  ``b % world_size``; all processes share the ledger. The result equals a one-process run
  (bit for bit when every process runs the same number of threads). Across machines the
  run folder must sit on a shared filesystem with POSIX locks (see :func:`journal_mode`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .prompts import build_prompts, derive_seed, image_grid
from .spec import AuditSpec, spec_from_dict

__all__ = [
    "DiskFullError",
    "DistState",
    "Ledger",
    "RunMismatchError",
    "dist_state",
    "generate_images",
    "load_pipeline_for",
    "load_run_spec",
    "prepare_run",
    "regenerate_image",
]

LEDGER_NAME = "ledger.sqlite"
SPEC_NAME = "spec.json"
STATUSES = ("pending", "done", "missing", "corrupt")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    prompt_id   INTEGER NOT NULL,
    image_index INTEGER NOT NULL,
    prompt      TEXT    NOT NULL,
    seed        INTEGER NOT NULL,
    path        TEXT    NOT NULL,
    batch       INTEGER NOT NULL,
    status      TEXT    NOT NULL DEFAULT 'pending',
    sha256      TEXT,
    seconds     REAL,
    rank        INTEGER,
    finished_at TEXT,
    PRIMARY KEY (prompt_id, image_index)
);
"""


class RunMismatchError(ValueError):
    """The output folder holds another spec's run; diffkit never mixes runs."""


class DiskFullError(OSError):
    """The disk filled up while writing an image; nothing half-written was kept."""


@dataclass(frozen=True)
class DistState:
    """Where this process sits among the processes of a sharded run."""

    rank: int = 0
    world_size: int = 1
    device: Any = None
    state: Any = None  # accelerate.PartialState when launched with several processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None and self.world_size > 1:
            self.state.wait_for_everyone()


def dist_state() -> DistState:
    """The rank and world size under ``accelerate launch`` / ``torchrun``, else a single process.

    On machines without CUDA the processes talk over gloo (``PartialState(cpu=True)``).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistState()
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return DistState(state.process_index, state.num_processes, state.device, state)


# --------------------------------------------------------------------------- ledger
def journal_mode() -> str:
    """``"WAL"``, unless the processes of a sharded run sit on several machines.

    SQLite's write-ahead log needs shared memory, so every process must be on one host;
    across machines (``WORLD_SIZE`` > ``LOCAL_WORLD_SIZE``) the ledger falls back to the
    rollback journal (``"DELETE"``), which needs a shared filesystem with working POSIX locks.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return "DELETE" if world > local else "WAL"


class Ledger:
    """The run's SQLite ledger (WAL mode; safe for several processes)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LEDGER_NAME
        self.conn = sqlite3.connect(self.path, timeout=120, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 120000")
        self.conn.execute(f"PRAGMA journal_mode = {journal_mode()}")
        self.conn.execute("PRAGMA synchronous = FULL")
        self.conn.executescript(_SCHEMA)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def frame(self) -> pd.DataFrame:
        """Every row, ordered by (prompt_id, image_index)."""
        return pd.read_sql_query("SELECT * FROM images ORDER BY prompt_id, image_index", self.conn)

    def mark(self, keys: list[tuple[int, int]], status: str) -> None:
        with self.transaction() as c:
            c.executemany(
                "UPDATE images SET status = ?, sha256 = NULL WHERE prompt_id = ? AND image_index = ?",
                [(status, k, i) for k, i in keys],
            )

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write *data* to *path* through a temporary file and a rename; on error nothing stays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                e.errno,
                f"disk full while writing {path}; nothing half-written was kept and the ledger holds "
                "only finished batches. Free some space and rerun the same command to resume",
            ) from e
        raise


@contextlib.contextmanager
def _disk_full_as_error(run_dir: Path) -> Iterator[None]:
    """SQLite's "database or disk is full" as a :class:`DiskFullError` (the transaction is rolled back)."""
    try:
        yield
    except sqlite3.OperationalError as e:
        if "full" in str(e).lower():
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while recording a batch in {run_dir / LEDGER_NAME}; the batch was rolled back and "
                "the ledger holds only finished batches. Free some space and rerun the same command to resume",
            ) from e
        raise


def _spec_json(spec: AuditSpec) -> str:
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)


def load_run_spec(run_dir: str | Path) -> AuditSpec:
    """The spec a run folder was made with (from its ``spec.json``)."""
    p = Path(run_dir) / SPEC_NAME
    if not p.is_file():
        raise FileNotFoundError(f"{run_dir} is not an audit run folder (no {SPEC_NAME}); run `diffkit audit run` first")
    return spec_from_dict(json.loads(p.read_text()), source=str(p))


def prepare_run(spec: AuditSpec, run_dir: str | Path) -> Path:
    """Create (or reopen) a run folder for *spec*: write ``spec.json`` and the ledger's pending rows.

    Refuses (:class:`RunMismatchError`) a folder that holds another spec's run, or files that
    are not a diffkit run. Safe to call from several processes at once.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fp = spec.fingerprint()
    if not (run_dir / LEDGER_NAME).exists():
        foreign = [p.name for p in run_dir.iterdir() if not p.name.startswith(LEDGER_NAME)]
        if foreign:
            raise RunMismatchError(
                f"{run_dir} is not empty ({', '.join(sorted(foreign)[:3])}…) and holds no audit ledger; "
                "choose an empty or new output folder (--out)"
            )
    prompts = build_prompts(spec)
    grid = image_grid(spec, prompts)
    grid["batch"] = [j // spec.batch_size for j in range(len(grid))]
    with Ledger(run_dir) as led, led.transaction() as c:
        old = led.meta("fingerprint")
        if old is not None and old != fp:
            stored = json.loads(led.meta("spec") or "{}")
            diff = _first_difference(stored, spec.to_dict())
            raise RunMismatchError(
                f"{run_dir} holds a run of another spec ({stored.get('name', '?')!r}; first difference: {diff}). "
                "diffkit never mixes runs: pass a new --out folder, or delete this one to start over"
            )
        if old is None:
            from .. import __version__

            c.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("fingerprint", fp), ("spec", json.dumps(spec.to_dict(), sort_keys=True)),
                 ("created_at", _now()), ("diffkit_version", __version__)],
            )
            c.executemany(
                "INSERT OR IGNORE INTO images (prompt_id, image_index, prompt, seed, path, batch) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                grid[["prompt_id", "image_index", "prompt", "seed", "path", "batch"]].itertuples(index=False),
            )
            _atomic_write(run_dir / SPEC_NAME, _spec_json(spec).encode())
    return run_dir


def _first_difference(a: Any, b: Any, key: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
    return f"{key or '(spec)'}: {a!r} there, {b!r} now"


def _sha256_file(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _verify(led: Ledger, run_dir: Path, rows: pd.DataFrame) -> int:
    """Mark finished rows whose file is missing or altered; return how many were marked."""
    bad_missing, bad_corrupt = [], []
    for k, i, path, sha in rows[["prompt_id", "image_index", "path", "sha256"]].itertuples(index=False):
        p = run_dir / path
        if not p.is_file():
            bad_missing.append((int(k), int(i)))
        elif _sha256_file(p) != sha:
            bad_corrupt.append((int(k), int(i)))
    if bad_missing:
        led.mark(bad_missing, "missing")
    if bad_corrupt:
        led.mark(bad_corrupt, "corrupt")
    return len(bad_missing) + len(bad_corrupt)


def load_pipeline_for(spec: AuditSpec, *, device: Any = None) -> Any:
    """The spec's pipeline through :func:`diffkit.load_pipeline` (``"tiny"``, hub id or folder)."""
    from ..pipeline import load_pipeline

    return load_pipeline(
        spec.pipeline.model, device=device, dtype=spec.pipeline.dtype,
        scheduler=spec.pipeline.scheduler, revision=spec.pipeline.revision,
    )


def _call_pipeline(pipe: Any, spec: AuditSpec, prompts: list[str], seeds: list[int]) -> list:
    import torch

    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    kw: dict[str, Any] = dict(
        prompt=prompts,
        num_inference_steps=spec.pipeline.steps,
        guidance_scale=spec.pipeline.guidance,
        generator=gens,
        output_type="pil",
    )
    if spec.pipeline.height:
        kw["height"] = spec.pipeline.height
    if spec.pipeline.width:
        kw["width"] = spec.pipeline.width
    if spec.pipeline.negative_prompt:
        kw["negative_prompt"] = [spec.pipeline.negative_prompt] * len(prompts)
    with torch.inference_mode():
        return pipe(**kw).images


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def regenerate_image(spec: AuditSpec, prompt_id: int, image_index: int, *, pipe: Any = None) -> Any:
    """Regenerate image *image_index* of prompt *prompt_id* on its own (a PIL image).

    Same seed and settings as in the run; pixel-identical to the run's PNG when
    ``audit.batch_size`` is 1, else equal up to the float effects of batching.
    """
    prompts = build_prompts(spec)
    row = prompts.loc[prompts["prompt_id"] == prompt_id]
    if row.empty:
        raise ValueError(f"no prompt {prompt_id}; the spec has prompts 0..{len(prompts) - 1}")
    pipe = pipe if pipe is not None else load_pipeline_for(spec)
    seed = derive_seed(spec.seed, prompt_id, image_index)
    return _call_pipeline(pipe, spec, [row["prompt"].iloc[0]], [seed])[0]


def generate_images(
    spec: AuditSpec,
    run_dir: str | Path,
    *,
    pipe: Any = None,
    progress: bool = True,
    verify: bool = True,
    state: DistState | None = None,
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Generate every image of *spec* into *run_dir* that is not there yet; return the ledger.

    Parameters
    ----------
    spec
        The audit spec (see :func:`~diffkit.audit.load_spec`).
    run_dir
        The run folder; created if needed, resumed if it holds this spec's run, refused
        (:class:`RunMismatchError`) if it holds another's.
    pipe
        A loaded pipeline; default :func:`load_pipeline_for` (*spec*'s model, on this process's device).
    progress
        Show a ``tqdm.auto`` bar with ETA (renders in notebooks).
    verify
        Re-hash finished images first and regenerate missing or corrupt ones.
    state
        Rank and world size; default :func:`dist_state` (sharded under ``accelerate launch``).
    max_batches
        Stop after this many batches (for tests and benchmarks).

    Returns
    -------
    pandas.DataFrame
        The ledger, one row per image (``prompt_id, image_index, prompt, seed, path, batch,
        status, sha256, seconds, rank, finished_at``).
    """
    from tqdm.auto import tqdm

    state = state if state is not None else dist_state()
    run_dir = Path(run_dir)
    # The main process creates the folder first; the others then reopen it.
    if state.is_main:
        prepare_run(spec, run_dir)
    state.barrier()
    if not state.is_main:
        prepare_run(spec, run_dir)
    with Ledger(run_dir) as led:
        rows = led.frame()
        mine = rows[rows["batch"] % state.world_size == state.rank]
        if verify:
            done = mine[mine["status"] == "done"]
            if _verify(led, run_dir, done):
                rows = led.frame()
                mine = rows[rows["batch"] % state.world_size == state.rank]
        todo_batches = sorted(mine.loc[mine["status"] != "done", "batch"].unique())
        if max_batches is not None:
            todo_batches = todo_batches[:max_batches]
        n_done = int((mine["status"] == "done").sum())
        if todo_batches:
            if pipe is None:
                pipe = load_pipeline_for(spec, device=state.device)
            bar = tqdm(
                total=len(mine), initial=n_done, unit="img", disable=not progress,
                desc="generating" + (f" [{state.rank + 1}/{state.world_size}]" if state.world_size > 1 else ""),
                position=state.rank if state.world_size > 1 else None, dynamic_ncols=True,
            )
            by_batch = {b: g for b, g in mine.groupby("batch")}
            try:
                for b in todo_batches:
                    batch = by_batch[b]
                    t0 = time.perf_counter()
                    images = _call_pipeline(pipe, spec, batch["prompt"].tolist(), batch["seed"].tolist())
                    per_image = (time.perf_counter() - t0) / len(batch)
                    updates = []
                    for img, (k, i, path, status) in zip(
                        images, batch[["prompt_id", "image_index", "path", "status"]].itertuples(index=False)
                    ):
                        if status == "done":  # recomputed only to keep the batch whole
                            continue
                        data = _png_bytes(img)
                        _atomic_write(run_dir / path, data)
                        updates.append((hashlib.sha256(data).hexdigest(), per_image, state.rank, _now(),
                                        int(k), int(i)))
                    with _disk_full_as_error(run_dir), led.transaction() as c:
                        c.executemany(
                            "UPDATE images SET status = 'done', sha256 = ?, seconds = ?, rank = ?, "
                            "finished_at = ? WHERE prompt_id = ? AND image_index = ?",
                            updates,
                        )
                    bar.update(len(updates))
            finally:
                bar.close()
    state.barrier()
    with Ledger(run_dir) as led:
        return led.frame()
