"""A run folder's names and files: atomic writes, paths kept inside the folder, hashes checked
against the ledger, the folder made and tidied (see :mod:`diffkit.audit.rundir`)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import datetime, timezone
from pathlib import Path

from .._files import atomic_write_bytes, environment_error, is_disk_full
from ..errors import DiffkitError, DiskFullError, RunFolderError

__all__ = [
    "LEDGER_NAME",
    "LOCK_NAME",
    "SPEC_NAME",
    "STATUSES",
    "LedgerRepairedWarning",
    "RunMismatchError",
    "clean_orphans",
    "inside",
    "make_run_dir",
    "now",
    "read_verified",
    "sha256_file",
    "write_atomic",
]

LEDGER_NAME = "ledger.sqlite"
SPEC_NAME = "spec.json"
LOCK_NAME = ".diffkit.lock"
STATUSES = ("pending", "done", "missing", "corrupt")


class RunMismatchError(DiffkitError, ValueError):
    """The output folder holds another spec's (or another model's) run, or a ledger edited by
    hand (rows added or changed); diffkit never mixes runs."""


class LedgerRepairedWarning(UserWarning):
    """Rows the spec makes were missing from a run's ledger (deleted by hand) and are restored as pending."""


def now() -> str:
    """The time as an ISO string in UTC, to the second (what the ledger records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: Path, data: bytes) -> None:
    """Write *data* to *path* through a unique temporary file and a rename (see :mod:`diffkit._files`).

    A full disk raises :class:`DiskFullError`; the temporary file is gone and *path* untouched.
    """
    try:
        atomic_write_bytes(path, data)
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(
                e.errno,
                f"disk full while writing {path}; nothing half-written was kept and the ledger holds "
                "only finished batches; fix: free some space and rerun the same command to resume",
            ) from e
        raise


def inside(run_dir: str | Path, rel: str, *, row: tuple[int, int] | None = None) -> Path:
    """``run_dir / rel``, refused (:class:`RunMismatchError`, naming the ledger *row*) unless it
    resolves inside *run_dir*: a ledger is input, and its paths never lead a read or a write
    outside the folder (``../../x.png``, an absolute path, a symlink out)."""
    run_dir = Path(run_dir)
    p = run_dir / rel
    root = run_dir.resolve()
    target = p.resolve()
    if Path(rel).is_absolute() or (target != root and root not in target.parents):
        where = f"ledger row (prompt {row[0]}, image {row[1]})" if row else "the ledger"
        raise RunMismatchError(
            f"{run_dir / LEDGER_NAME}: {where} names the path {rel!r}, outside the run folder; the ledger was "
            "edited by hand or comes from elsewhere; fix: restore the row's path (images/KKKK/IIII.png), or "
            "run the spec into a new --out folder"
        )
    return p


def read_verified(path: str | Path, sha256: str | None) -> bytes | None:
    """The bytes of *path* when their sha256 is *sha256* (its ledger row's); ``None`` when the
    file is missing, unreadable or altered.

    The one check of a finished image against the ledger: on resume (:func:`verify_files`) and
    at scoring (:func:`~diffkit.audit.score.score_images`, which reuses the bytes it read).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return data if sha256 is not None and hashlib.sha256(data).hexdigest() == sha256 else None


def sha256_file(path: Path) -> str | None:
    """The sha256 of *path*'s bytes, or ``None`` when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def make_run_dir(run_dir: str | Path) -> Path:
    """Create *run_dir* (and its parents); a path that cannot be a folder is :class:`RunFolderError`."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunFolderError(f"{run_dir} exists and is not a folder; fix: pass a folder path to --out") from None
    except NotADirectoryError:
        raise RunFolderError(
            f"{run_dir} cannot be created: part of its path is a file; fix: pass a folder path to --out"
        ) from None
    except OSError as e:  # read-only, not ours, disk full: diffkit's own error, naming the fix
        env = environment_error(e, writing=run_dir)
        if env is None:
            raise
        raise env from None
    return run_dir


def clean_orphans(run_dir: str | Path) -> list[Path]:
    """Remove the temporary files (``.*.tmp``) a killed writer left in *run_dir* (its top, its
    image folders and ``report/``); return them.

    Call it only while holding :func:`run_lock` (no live writer then owns a temporary file).
    """
    run_dir = Path(run_dir)
    found = [
        p for pattern in (".*.tmp", "images/*/.*.tmp", "report/.*.tmp") for p in run_dir.glob(pattern) if p.is_file()
    ]
    for p in found:
        with contextlib.suppress(OSError):
            p.unlink()
    return found
