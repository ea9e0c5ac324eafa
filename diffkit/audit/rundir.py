"""The run folder, in one place: its ledger, its spec, its files and who may write into it.

A run folder holds::

    spec.json        the resolved spec, a readable copy of the ledger's own
    ledger.sqlite    one row per image (SQLite, write-ahead log), and a ``meta`` table:
                     fingerprint (sha256 of the spec, stable across key renames), spec, weights, created_at, diffkit_version;
                     a ``safety`` table holds the pipeline's nsfw_content_detected flag per image where it gives one
                     (a side table: ledgers from before it open unchanged and read as "unknown")
    .diffkit.lock    held (``flock``) by the process that writes into the folder; it names that
                     process and what it does (``12345	scoring images	2026-…``)
    images/KKKK/IIII.png
    report/          index.html, summary.md, metadata.json, the CSVs

**One writer at a time.** Generating, scoring (which marks damaged PNGs in the ledger and fills
the embedding cache) and writing the report each hold the folder's lock (:func:`run_lock`);
``diffkit audit run`` holds it from generation to report. A second ``audit run``, ``audit
report`` or :func:`~diffkit.audit.score.score_images` on a folder in use is refused at once
with :class:`~diffkit.errors.RunBusyError`, naming the other process and what it is doing; it
never waits half-way, so nothing is generated twice and two report writers never interleave.
Reading a finished run (``audit compare`` of its report CSVs) takes no lock: every file is
replaced atomically.

The ledger is the source of truth, and it is input: run folders are passed between people.
Its rows are checked against the image grid the spec makes (:func:`check_ledger`) whenever
a run is reopened or scored: a row whose path, prompt, seed or batch was edited, or a row the
spec does not make, is refused naming the row (a path such as ``../../x.png`` never leads a
write outside the folder: :func:`inside` checks every path before use); a row deleted by hand
is restored as pending by ``audit run`` (a warning names it) and named by scoring.
``spec.json`` is checked against the ledger whenever a run is
reopened (an edited copy is refused, a deleted one restored), and the run's *weights* (a
sha256 of the pipeline's safetensors and configs, or the hub commit it resolved to) are
recorded beside the spec, so a resumed run never mixes two models.

Everything written into the folder goes through :func:`write_atomic`; a full disk becomes
:class:`DiskFullError` with nothing half-written left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from .._files import atomic_write_bytes, environment_error, is_disk_full
from ..errors import DiffkitError, DiskFullError, InputError, RunBusyError, RunFolderError
from .spec import AuditSpec, spec_from_dict, upgrade_spec_dict

__all__ = [
    "LEDGER_NAME",
    "LOCK_NAME",
    "SPEC_NAME",
    "DiskFullError",
    "Ledger",
    "LedgerRepairedWarning",
    "RunBusyError",
    "RunFolderError",
    "RunMismatchError",
    "check_ledger",
    "clean_orphans",
    "connect",
    "expected_rows",
    "first_difference",
    "inside",
    "journal_mode",
    "load_run_spec",
    "make_run_dir",
    "prepare_run",
    "read_verified",
    "run_lock",
    "sha256_file",
    "verify_files",
    "weights_identity",
    "write_atomic",
]

LEDGER_NAME = "ledger.sqlite"
SPEC_NAME = "spec.json"
LOCK_NAME = ".diffkit.lock"
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
CREATE TABLE IF NOT EXISTS safety (
    prompt_id   INTEGER NOT NULL,
    image_index INTEGER NOT NULL,
    nsfw        INTEGER NOT NULL,
    PRIMARY KEY (prompt_id, image_index)
);
"""


class RunMismatchError(DiffkitError, ValueError):
    """The output folder holds another spec's (or another model's) run, or a ledger edited by
    hand (rows added or changed); diffkit never mixes runs."""


class LedgerRepairedWarning(UserWarning):
    """Rows the spec makes were missing from a run's ledger (deleted by hand) and are restored as pending."""


def now() -> str:
    """The time as an ISO string in UTC, to the second (what the ledger records)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- files
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
    found = [p for pattern in (".*.tmp", "images/*/.*.tmp", "report/.*.tmp") for p in run_dir.glob(pattern)
             if p.is_file()]
    for p in found:
        with contextlib.suppress(OSError):
            p.unlink()
    return found


# The run folders this process holds the lock of, per thread: (folder, thread) -> (descriptor,
# what it is doing, innermost last). run_audit holds a folder's lock around generate_images,
# score_images and write_report, which take it again: a nested take only relabels the holder.
_HELD: dict[tuple[str, int], tuple[int, list[str]]] = {}


def _label(fd: int, doing: str) -> None:
    data = f"{os.getpid()}\t{doing}\t{now()}".encode()
    os.pwrite(fd, data, 0)  # write, then cut: a reader never sees an empty label in between
    os.ftruncate(fd, len(data))


def _alive(pid: str) -> bool:
    try:
        n = int(pid)
        if n <= 0:  # os.kill(0, 0) would ask about our own process group
            return False
        os.kill(n, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(fd: int) -> str | None:
    """Who holds the lock, from the lock file: ``"pid 12345, scoring images since …"``; ``None``
    when the holder let go meanwhile and the lock is now ours (held on *fd*)."""
    import fcntl
    import time

    text = ""
    # A holder that has just taken the lock writes its label a moment later; until then the
    # file is empty (a holder clears its label when it lets go) or names a run that was
    # killed, whose pid is gone. A holder in another PID namespace (a container sharing the
    # folder) looks gone too: after a second its label is named anyway.
    for _ in range(100):
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if text.count("\t") == 2 and _alive(text.partition("\t")[0]):
            break
        try:  # an empty label may mean the holder is letting go right now
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        return None
    pid, _, rest = text.partition("\t")
    doing, _, since = rest.partition("\t")
    return f"pid {pid or '?'}" + (f", {doing}" if doing else "") + (f" since {since}" if since else "")


@contextlib.contextmanager
def run_lock(run_dir: str | Path, doing: str = "generating images", *, create: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (``flock`` on ``.diffkit.lock``) for the block.

    Every writer takes it: generation, scoring, report writing. A second process (or thread)
    that asks while another holds it gets :class:`RunBusyError` at once, naming the holder's pid
    and what it is *doing* (``"scoring images"``) since when: two writers never work in one
    folder. The same thread may take it again inside the block (``run_audit`` holds it around
    generation, scoring and the report). The lock goes with the process: a killed run leaves
    nothing to clean up. With ``create=False`` the folder must already be a run folder
    (:class:`RunFolderError` otherwise), as scoring and reporting need.
    """
    import fcntl

    if create:
        run_dir = make_run_dir(run_dir)
    else:
        run_dir = Path(run_dir)
        if not (run_dir / LEDGER_NAME).is_file():
            raise RunFolderError(
                f"{run_dir} is not an audit run folder (it has no {LEDGER_NAME}); fix: pass the folder "
                "`diffkit audit run` wrote (e.g. out/audit/tiny_default), or run `diffkit audit run` first"
            )
    key = (str(run_dir.resolve()), threading.get_ident())
    if key in _HELD:  # this thread holds it already: say what it does now, then what it did
        fd, doing_stack = _HELD[key]
        doing_stack.append(doing)
        _label(fd, doing)
        try:
            yield
        finally:
            doing_stack.pop()
            with contextlib.suppress(OSError):
                _label(fd, doing_stack[-1])
        return
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if holder is not None:
                raise RunBusyError(
                    errno.EWOULDBLOCK,
                    f"{run_dir} is in use by another diffkit run ({holder}); fix: wait for it to finish "
                    "and rerun the same command (a run resumes), or pass another --out folder",
                ) from None
        _label(fd, doing)
        _HELD[key] = (fd, [doing])
        try:
            yield
        finally:
            del _HELD[key]
            with contextlib.suppress(OSError):  # the next holder's waiters must not read ours
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


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
                raise DiskFullError(errno.ENOSPC, f"disk full while opening {self.path}; fix: free some space "
                                    "and rerun the same command") from e
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
            return {(int(k), int(i)): bool(f)
                    for k, i, f in self.conn.execute("SELECT prompt_id, image_index, nsfw FROM safety")}

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


_GRID_COLUMNS = ("prompt", "seed", "path", "batch")


def expected_rows(spec: AuditSpec) -> pd.DataFrame:
    """The ledger rows *spec* makes: ``prompt_id, image_index, prompt, seed, path, batch``."""
    from .prompts import build_prompts, image_grid

    grid = image_grid(spec, build_prompts(spec))
    grid["batch"] = [j // spec.batch_size for j in range(len(grid))]
    return grid


def check_ledger(rows: pd.DataFrame, spec: AuditSpec, run_dir: str | Path) -> pd.DataFrame:
    """Check a run's ledger *rows* against the rows *spec* makes; return the expected rows missing from it.

    A row the spec does not make (added by hand) or one whose prompt, seed, path or batch
    differs from the spec's (edited by hand: a path outside the folder, another seed) raises
    :class:`RunMismatchError` naming the first such row and how many there are. Rows deleted by
    hand are returned for the caller to restore (``audit run``) or name (scoring).
    """
    run_dir = Path(run_dir)
    want = expected_rows(spec)
    key = ["prompt_id", "image_index"]
    have = rows[key + list(_GRID_COLUMNS)].copy()
    have[key] = have[key].astype("int64")
    # three plain merges, never an outer one: a row missing on one side would turn the other's
    # integers into floats (NaN), and every seed would then look edited
    added = have.merge(want[key], on=key, how="left", indicator=True)
    added = added[added["_merge"] == "left_only"]
    if len(added):
        k, i = (int(x) for x in added.iloc[0][key])
        raise RunMismatchError(
            f"{run_dir / LEDGER_NAME}: {len(added)} row(s) the spec does not make, e.g. (prompt {k}, image {i}) "
            f"{added.iloc[0]['path']!r}: the ledger was edited by hand; diffkit reports only the spec's own images; "
            "fix: delete those rows from the ledger's images table, or run the spec into a new --out folder"
        )
    both = have.merge(want, on=key, how="inner", suffixes=("", "_spec"))
    for col in _GRID_COLUMNS:
        diff = both[both[col].astype(str) != both[f"{col}_spec"].astype(str)]
        if len(diff):
            r = diff.iloc[0]
            k, i = int(r["prompt_id"]), int(r["image_index"])
            if col == "path":
                inside(run_dir, str(r["path"]), row=(k, i))  # the clearer message for a path that escapes
            raise RunMismatchError(
                f"{run_dir / LEDGER_NAME}: {len(diff)} row(s) whose {col} is not the spec's, e.g. (prompt {k}, "
                f"image {i}): {r[col]!r} where the spec makes {r[f'{col}_spec']!r}; the ledger was edited by hand; "
                "fix: restore that value, or run the spec into a new --out folder"
            )
    missing = want.merge(have[key], on=key, how="left", indicator=True)
    return missing[missing["_merge"] == "left_only"].drop(columns="_merge").reset_index(drop=True)


# --------------------------------------------------------------------------- weights
_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def _hash_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(path) or "unreadable"
    return _HASH_CACHE[key]


def _folder_digest(folder: Path) -> str:
    """sha256 over (relative path, sha256) of every safetensors and JSON file under *folder*."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".safetensors", ".json"))
    for p in files:
        h.update(f"{p.relative_to(folder).as_posix()}\0{_hash_cached(p)}\n".encode())
    return h.hexdigest()


def _hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit *revision* of *repo_id* resolves to in the local Hugging Face cache, if cached."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "model_index.json", revision=revision or "main")
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        return None
    if isinstance(hit, str):
        return Path(hit).parent.name  # …/snapshots/<commit>/model_index.json
    return None


def weights_identity(model: str, revision: str | None = None) -> str | None:
    """What pins the weights of *model*: a digest of its files, or the hub commit it resolves to.

    ``"tiny"`` and local folders give ``"sha256:<digest of the safetensors and JSON files>"``; a
    hub id gives ``"<id>@<commit>"`` from the local cache, or ``None`` when it is not cached yet.
    """
    if str(model) == "tiny":
        from ..tiny import pipeline_path

        return "sha256:" + _folder_digest(pipeline_path(verify=False))
    p = Path(str(model)).expanduser()
    if p.is_dir():
        return "sha256:" + _folder_digest(p)
    commit = _hub_commit(str(model), revision)
    return f"{model}@{commit}" if commit else None


# --------------------------------------------------------------------------- the run's spec
def spec_json(spec: AuditSpec) -> str:
    """``spec.json``'s text: the resolved spec, indented, keys sorted."""
    return json.dumps(spec.to_dict(), indent=2, sort_keys=True)


def first_difference(a: Any, b: Any, key: str = "") -> str:
    """The first key where two nested dicts differ, as ``"key: a there, b now"``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else k)
    return f"{key or '(spec)'}: {a!r} there, {b!r} now"


def load_run_spec(run_dir: str | Path) -> AuditSpec:
    """The spec a run folder was made with: the ledger's own copy.

    ``spec.json`` is checked against it: a missing ``spec.json`` is restored, an edited one is
    refused (:class:`RunMismatchError` naming the first difference). A folder that is not a
    run raises :class:`RunFolderError`.
    """
    run_dir = Path(run_dir)
    sj = run_dir / SPEC_NAME
    if not (run_dir / LEDGER_NAME).is_file():
        what = f"has {SPEC_NAME} but no {LEDGER_NAME}" if sj.is_file() else f"has no {LEDGER_NAME}"
        raise RunFolderError(
            f"{run_dir} is not an audit run folder (it {what}); fix: pass the folder `diffkit audit run` wrote "
            "(e.g. out/audit/tiny_default), or run `diffkit audit run` first"
        )
    with Ledger(run_dir) as led:
        stored = led.meta("spec")
    if stored is None:
        raise RunFolderError(
            f"{run_dir / LEDGER_NAME} holds no spec (the run never started); fix: rerun `diffkit audit run` "
            "with this --out folder"
        )
    try:
        data = json.loads(stored)
        spec = spec_from_dict(data, source=str(sj))
    except (ValueError, KeyError, TypeError) as e:
        raise RunFolderError(
            f"{run_dir / LEDGER_NAME}: the stored spec is damaged ({type(e).__name__}: {e}); fix: rerun the audit "
            "into a new --out folder"
        ) from e
    if not sj.is_file():
        write_atomic(sj, spec_json(spec).encode())
        return spec
    try:
        on_disk = json.loads(sj.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunMismatchError(
            f"{sj} is not valid JSON ({e}); the run's spec is in its ledger; fix: delete {sj} "
            "(the next `diffkit audit report` restores it)"
        ) from None
    data, on_disk = upgrade_spec_dict(data), upgrade_spec_dict(on_disk)  # a folder from before a key rename
    if on_disk != data:
        raise RunMismatchError(
            f"{sj} differs from the spec this run was generated with ({first_difference(data, on_disk)}). "
            f"A report always uses the run's own spec; fix: delete {sj} (it is restored from the ledger), or "
            "run the edited spec into a new folder with `diffkit audit run SPEC --out NEW`"
        )
    return spec


def prepare_run(spec: AuditSpec, run_dir: str | Path, *, weights: str | None = None) -> Path:
    """Create (or reopen) a run folder for *spec*: write ``spec.json`` and the ledger's pending rows.

    Refuses (:class:`RunMismatchError`) a folder that holds another spec's run or a run of
    other *weights* (see :func:`weights_identity`), and files that are not a diffkit run.
    A run that never finished an image (a model that failed to load, a template that was
    too long) is started over with the new spec. Safe to call from several processes at once.
    """
    run_dir = make_run_dir(run_dir)
    fp = spec.fingerprint()
    if not (run_dir / LEDGER_NAME).exists():
        foreign = [p.name for p in run_dir.iterdir() if not p.name.startswith((LEDGER_NAME, LOCK_NAME))]
        if foreign:
            raise RunMismatchError(
                f"{run_dir} is not empty ({', '.join(sorted(foreign)[:3])}…) and holds no audit ledger; "
                "fix: choose an empty or new output folder (--out)"
            )
    grid = expected_rows(spec)
    restored = None
    with Ledger(run_dir) as led, led.transaction() as c:
        old = led.meta("fingerprint")
        n_done = c.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
        if old is not None and old != fp:
            if n_done:
                stored = upgrade_spec_dict(json.loads(led.meta("spec") or "{}"))
                diff = first_difference(stored, upgrade_spec_dict(spec.to_dict()))
                raise RunMismatchError(
                    f"{run_dir} holds a run of another spec ({stored.get('name', '?')!r}; first difference: {diff}). "
                    "diffkit never mixes runs: fix: pass a new --out folder, or delete this one to start over"
                )
            c.execute("DELETE FROM images")  # nothing was finished: start over with this spec
            c.execute("DELETE FROM meta")
            old = None
        old_weights = led.meta("weights")
        if weights is not None and old_weights is not None and old_weights != weights:
            if n_done:
                raise RunMismatchError(
                    f"{run_dir} was generated with other weights of {spec.pipeline.model!r} ({old_weights} there, "
                    f"{weights} now; the model changed since). diffkit never mixes models in one run: fix: pass a "
                    "new --out folder, or restore the old weights (pin pipeline.revision for a hub model)"
                )
            c.execute("DELETE FROM meta WHERE key = 'weights'")
            old_weights = None
        if weights is not None and old_weights is None:
            c.execute("INSERT INTO meta (key, value) VALUES ('weights', ?)", (weights,))
        if old is None:
            from .. import __version__

            c.executemany(
                "INSERT INTO meta (key, value) VALUES (?, ?)",
                [("fingerprint", fp), ("spec", json.dumps(spec.to_dict(), sort_keys=True)),
                 ("created_at", now()), ("diffkit_version", __version__)],
            )
            # Fresh ledger: the rows are new (IGNORE only guards a second process racing here).
            c.executemany(
                "INSERT OR IGNORE INTO images (prompt_id, image_index, prompt, seed, path, batch) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                grid[["prompt_id", "image_index", "prompt", "seed", "path", "batch"]].itertuples(index=False),
            )
        else:  # a reopened run: its ledger is input (rows added, edited or deleted by hand)
            restored = check_ledger(led.frame(), spec, run_dir)
            if len(restored):
                c.executemany(
                    "INSERT INTO images (prompt_id, image_index, prompt, seed, path, batch) VALUES (?, ?, ?, ?, ?, ?)",
                    restored[["prompt_id", "image_index", "prompt", "seed", "path", "batch"]].itertuples(index=False),
                )
    if restored is not None and len(restored):
        import warnings

        k, i = int(restored.iloc[0]["prompt_id"]), int(restored.iloc[0]["image_index"])
        warnings.warn(LedgerRepairedWarning(
            f"{run_dir / LEDGER_NAME} lacked {len(restored)} row(s) the spec makes (deleted by hand?), e.g. (prompt "
            f"{k}, image {i}); they are restored as pending and will be generated"), stacklevel=2)
    text = spec_json(spec)  # the ledger's spec (the fingerprints match): restore a missing or edited copy
    try:
        current = (run_dir / SPEC_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        current = None
    if current != text:
        write_atomic(run_dir / SPEC_NAME, text.encode())
    return run_dir


def record_weights(run_dir: str | Path, spec: AuditSpec, weights: str | None) -> None:
    """Check *weights* against the ledger's and record them when it has none (see :func:`prepare_run`)."""
    if weights is None:
        return
    with Ledger(run_dir) as led, led.transaction() as c:
        old = led.meta("weights")
        if old is None:
            c.execute("INSERT INTO meta (key, value) VALUES ('weights', ?)", (weights,))
        elif old != weights:
            n_done = c.execute("SELECT COUNT(*) FROM images WHERE status = 'done'").fetchone()[0]
            if n_done:
                raise RunMismatchError(
                    f"{run_dir} was generated with other weights of {spec.pipeline.model!r} ({old} there, "
                    f"{weights} now). diffkit never mixes models in one run: fix: pass a new --out folder, or pin "
                    "pipeline.revision to the old commit"
                )
            c.execute("UPDATE meta SET value = ? WHERE key = 'weights'", (weights,))
