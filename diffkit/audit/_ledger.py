"""The run's SQLite ledger (one row per image; write-ahead log) and the one way diffkit opens a
run folder's databases (see :mod:`diffkit.audit.rundir`)."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from ..errors import DiskFullError, InputError, RunFolderError
from ._run_files import LEDGER_NAME, STATUSES, inside, read_verified

__all__ = ["Ledger", "connect", "journal_mode", "verify_files"]

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
CREATE TABLE IF NOT EXISTS safety (
    prompt_id   INTEGER NOT NULL,
    image_index INTEGER NOT NULL,
    nsfw        INTEGER NOT NULL,
    PRIMARY KEY (prompt_id, image_index)
);
"""


def journal_mode() -> str:
    """``"WAL"``, unless the processes of a sharded run sit on several machines.

    SQLite's write-ahead log needs shared memory, so every process must be on one host;
    across machines (``WORLD_SIZE`` > ``LOCAL_WORLD_SIZE``) the ledger falls back to the
    rollback journal (``"DELETE"``), which needs a shared filesystem with working POSIX locks.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return "DELETE" if world > local else "WAL"


def _open(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=120, isolation_level=None)


def _configure(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA busy_timeout = 120000")
    conn.execute(f"PRAGMA journal_mode = {journal_mode()}")
    conn.execute(f"PRAGMA synchronous = {synchronous}")


def connect(path: str | Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open a SQLite database of a run folder the one way diffkit does (the ledger, the embedding cache).

    Autocommit (transactions are explicit, ``BEGIN IMMEDIATE``), waits up to 120 s for another
    process's lock, write-ahead log unless :func:`journal_mode` says otherwise, and *synchronous*
    ``FULL`` (the ledger) or ``NORMAL`` (a cache, where losing the last commit only costs time).
    """
    conn = _open(Path(path))
    try:
        _configure(conn, synchronous)
    except BaseException:
        conn.close()
        raise
    return conn


class Ledger:
    """The run's SQLite ledger (WAL mode; safe for several processes).

    A file that is not a diffkit ledger raises :class:`RunFolderError` naming the fix.
    """

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LEDGER_NAME
        try:
            self.conn = _open(self.path)
        except sqlite3.Error as e:
            raise RunFolderError(f"cannot open {self.path} ({e}); fix: check the folder exists and is writable") from e
        try:
            _configure(self.conn, "FULL")
            self.conn.executescript(_SCHEMA)
            cols = {r[1] for r in self.conn.execute("PRAGMA table_info(images)")}
        except sqlite3.DatabaseError as e:
            self.conn.close()
            if "full" in str(e).lower():
                raise DiskFullError(
                    errno.ENOSPC,
                    f"disk full while opening {self.path}; fix: free some space and rerun the same command",
                ) from e
            raise RunFolderError(
                f"{self.path} is not a diffkit ledger ({e}); fix: pass a new --out folder, or move this "
                "folder aside and rerun to start the run over"
            ) from e
        missing = {"prompt_id", "image_index", "path", "status", "sha256", "batch"} - cols
        if missing:
            self.conn.close()
            raise RunFolderError(
                f"{self.path} is not a diffkit ledger (its images table lacks {sorted(missing)}); fix: pass a "
                "new --out folder, or move this folder aside and rerun to start the run over"
            )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back on any error. A full disk is :class:`DiskFullError`."""
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite's errors as the ledger's: a full disk, or a damaged file (named, with the fix)."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if "full" in str(e).lower():
                raise DiskFullError(
                    errno.ENOSPC,
                    f"disk full while recording in {self.path}; the batch was rolled back and the ledger "
                    "holds only finished batches; fix: free some space and rerun the same command to resume",
                ) from e
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e).lower():
                raise  # another process holds it past the 120 s timeout: not damage
            raise RunFolderError(
                f"the ledger {self.path} is damaged ({e}); it is the run's record of which images are finished; "
                "fix: move this folder aside and rerun the spec into a new --out folder"
            ) from e

    def meta(self, key: str) -> str | None:
        """The ``meta`` table's value for *key* (``fingerprint``, ``spec``, ``weights``, …)."""
        with self._errors():
            row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def frame(self) -> pd.DataFrame:
        """Every row, ordered by (prompt_id, image_index)."""
        with self._errors():
            return pd.read_sql_query("SELECT * FROM images ORDER BY prompt_id, image_index", self.conn)

    def safety_flags(self) -> dict[tuple[int, int], bool]:
        """``{(prompt_id, image_index): nsfw}``: the pipeline's own ``nsfw_content_detected`` flag per
        finished image, where it gave one (the ``safety`` table; a run folder from before diffkit
        kept it has none, and reads as unknown)."""
        with self._errors():
            return {
                (int(k), int(i)): bool(f)
                for k, i, f in self.conn.execute("SELECT prompt_id, image_index, nsfw FROM safety")
            }

    def mark(self, keys: list[tuple[int, int]], status: str) -> None:
        """Set *status* (``missing``/``corrupt``/``pending``) on the rows *keys* and forget their hashes."""
        if status not in STATUSES:
            raise InputError(f"unknown status {status!r}; use one of {STATUSES}")
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


def verify_files(led: Ledger, run_dir: str | Path, rows: pd.DataFrame) -> int:
    """Re-hash the files of finished *rows* (:func:`read_verified`); mark missing or altered ones;
    return how many were marked."""
    run_dir = Path(run_dir)
    bad_missing, bad_corrupt = [], []
    for k, i, path, sha in rows[["prompt_id", "image_index", "path", "sha256"]].itertuples(index=False):
        p = inside(run_dir, path, row=(int(k), int(i)))
        if not p.is_file():
            bad_missing.append((int(k), int(i)))
        elif read_verified(p, sha) is None:
            bad_corrupt.append((int(k), int(i)))
    if bad_missing:
        led.mark(bad_missing, "missing")
    if bad_corrupt:
        led.mark(bad_corrupt, "corrupt")
    return len(bad_missing) + len(bad_corrupt)
