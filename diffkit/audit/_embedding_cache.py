"""The embedding cache: image embeddings (and pixel flags) in SQLite, beside a run."""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .._files import environment_error
from ..errors import CacheDamagedError, DiskFullError
from .rundir import connect

__all__ = ["EmbeddingCache"]


class EmbeddingCache:
    """Image embeddings in SQLite, keyed by (model, pretrained, image sha256).

    A cache: deleting it loses nothing but time. A damaged file raises
    :class:`~diffkit.errors.CacheDamagedError` and a full disk
    :class:`~diffkit.errors.DiskFullError`, each saying that the run's images and ledger are
    fine and only the cache needs deleting (or space freeing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = connect(self.path, synchronous="NORMAL")  # a cache: losing the last commit only costs time
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, pretrained TEXT NOT NULL, "
                "sha256 TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (model, pretrained, sha256))"
            )
            # per image content, whatever the model: whether every pixel is black (a safety checker's output)
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS pixel_flags (sha256 TEXT PRIMARY KEY, blacked_out INTEGER NOT NULL)"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The cache's own errors, told apart from the ledger's: they never need the run thrown away."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            conn = getattr(self, "conn", None)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if "full" in str(e).lower():
                raise DiskFullError(
                    errno.ENOSPC,
                    f"the disk is full while caching image embeddings in {self.path}; the run's "
                    "images and ledger are fine; fix: free space on that disk, then rerun `diffkit audit report` "
                    "(or the same `audit run`)",
                ) from e
            raise CacheDamagedError(
                f"the embedding cache {self.path} is damaged ({e}); the run's images and ledger are fine: the "
                f"cache only saves time; fix: delete {self.path} and rerun (the images are scored again)"
            ) from e
        except OSError as e:
            env = environment_error(e, writing=self.path)
            if env is None:
                raise
            raise env from e

    def get(self, model: str, pretrained: str, hashes: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._errors():
            for j in range(0, len(hashes), 500):
                chunk = hashes[j : j + 500]
                q = ",".join("?" * len(chunk))
                for sha, vec in self.conn.execute(
                    f"SELECT sha256, vector FROM embeddings WHERE model = ? AND pretrained = ? AND sha256 IN ({q})",
                    [model, pretrained, *chunk],
                ):
                    out[sha] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put(self, model: str, pretrained: str, items: dict[str, np.ndarray]) -> None:
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                [
                    (model, pretrained, sha, int(v.size), np.asarray(v, np.float32).tobytes())
                    for sha, v in items.items()
                ],
            )
            self.conn.execute("COMMIT")

    def get_flags(self, hashes: list[str]) -> dict[str, bool]:
        """``{sha256: blacked_out}`` for the images whose pixels have been looked at."""
        out: dict[str, bool] = {}
        with self._errors():
            for j in range(0, len(hashes), 500):
                chunk = hashes[j : j + 500]
                q = ",".join("?" * len(chunk))
                for sha, flag in self.conn.execute(
                    f"SELECT sha256, blacked_out FROM pixel_flags WHERE sha256 IN ({q})", chunk
                ):
                    out[sha] = bool(flag)
        return out

    def put_flags(self, items: dict[str, bool]) -> None:
        if not items:
            return
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO pixel_flags VALUES (?, ?)", [(sha, int(bool(v))) for sha, v in items.items()]
            )
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
