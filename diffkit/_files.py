"""Files that are never half-written, and CSVs that are safe to open in a spreadsheet.

Every file diffkit publishes (reports, tables, run folders) goes through :func:`atomic_write_bytes`:
the data is written to a temporary file with a name unique to this process and thread, flushed,
fsynced and renamed into place (atomic on POSIX), so a reader sees the old file or the new one,
never a mix, and two writers never share a temporary file.

:func:`write_csv` also neutralises spreadsheet formulas. A cell that starts with ``=``, ``+``,
``-``, ``@``, a tab or a carriage return is prefixed with a single quote, as OWASP's "CSV
Injection" page recommends, so ``=HYPERLINK(...)`` is shown as text rather than run. Numbers
are written as numbers (a negative number is not a formula). :func:`read_csv` reads such a file
back to the values that were written.

:func:`shared_out` is the one folder for what the course and ``diffkit demo`` share (audit runs,
executed notebooks), whatever the working directory: a checkout's ``out/``, else a user cache.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .i18n import gettext as _

__all__ = [
    "FORMULA_PREFIXES",
    "atomic_write_bytes",
    "atomic_write_text",
    "ensure_folder",
    "environment_error",
    "removed_on_failure",
    "save_figure",
    "save_pil",
    "is_disk_full",
    "read_csv",
    "safe_cell",
    "checkout_root",
    "shared_out",
    "write_csv",
]

#: First characters that make a spreadsheet treat a cell as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def checkout_root() -> Path | None:
    """The repository's root when diffkit is imported from a checkout (editable install or
    ``PYTHONPATH``), else ``None`` (an installed wheel). A checkout is the package folder's parent
    holding ``notebooks/`` and a ``pyproject.toml`` whose project is named diffkit."""
    root = Path(__file__).resolve().parent.parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    named = re.search(r'^name\s*=\s*["\']diffkit["\']', text, re.M)
    return root if named and (root / "notebooks").is_dir() else None


def shared_out(*parts: str) -> Path:
    """The folder the course, ``make demo`` and ``diffkit course warm`` share, joined with *parts*.

    Independent of the working directory, so a notebook run from ``notebooks/`` finds the audit
    ``make demo`` ran from the repository's root. In order: ``$DIFFKIT_OUT`` when set; the
    checkout's ``out/`` when diffkit runs from a checkout (:func:`checkout_root`); else the user
    cache, ``$XDG_CACHE_HOME/diffkit`` (``~/.cache/diffkit``). Nothing is created.

    >>> run_dir = shared_out("audit", "tiny_default")   # doctest: +SKIP
    """
    env = os.environ.get("DIFFKIT_OUT", "").strip()
    if env:
        base = Path(env).expanduser()
    elif (root := checkout_root()) is not None:
        base = root / "out"
    else:
        cache = os.environ.get("XDG_CACHE_HOME", "").strip()
        base = (Path(cache).expanduser() if cache else Path.home() / ".cache") / "diffkit"
    return base.joinpath(*parts).absolute()


def _tmp_name(path: Path) -> Path:
    tag = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{tag}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write *data* to *path* through a unique temporary file and a rename.

    On any error the temporary file is removed and the old *path* (if any) is untouched. What
    the environment causes is raised as diffkit's own error naming the path and the fix
    (:func:`environment_error`): a full disk as :class:`~diffkit.errors.DiskFullError` (an
    ``OSError`` whose ``errno`` is the OS's ``ENOSPC``/``EDQUOT``), a read-only folder as
    :class:`~diffkit.errors.ReadOnlyError`, a file in the way as
    :class:`~diffkit.errors.OutputExistsError`.
    """
    path = Path(path)
    tmp = _tmp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        env = environment_error(e, writing=path) if isinstance(e, OSError) else None
        if env is not None:
            raise env from e
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create the folder *path* (and its parents) and check it can be written into, before any work.

    A command that would fail only when saving (a read-only folder, a file in the way, a full
    disk) fails here instead, with diffkit's own error naming the path and the fix.
    """
    p = Path(path)
    probe = _tmp_name(p / "write-test")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with open(probe, "wb"):
            pass
        probe.unlink()
    except OSError as e:
        env = environment_error(e, writing=p)
        if env is None:
            raise
        raise env from e
    return p


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110, **savefig_kwargs: Any) -> Path:
    """Render a matplotlib figure and write it atomically (:func:`atomic_write_bytes`); the
    format is the path's suffix (``.png``, ``.svg``, ``.pdf``)."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=(path.suffix[1:] or "png").lower(), dpi=dpi, **savefig_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def save_pil(image: Any, path: str | os.PathLike, **save_kwargs: Any) -> Path:
    """Encode a PIL image (the format from the path's suffix) and write it atomically."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    return atomic_write_bytes(path, buf.getvalue())


@contextlib.contextmanager
def removed_on_failure() -> Iterator[list[Path]]:
    """A list to append the paths a command writes to; if the block fails (an error, Ctrl-C),
    the files written so far are removed, so no partial output is left to be mistaken for a
    whole one."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for p in written:
            with contextlib.suppress(OSError):
                Path(p).unlink()
        raise


def safe_cell(value):
    """*value* with a leading ``'`` when it is a string a spreadsheet would run as a formula.

    A string that already starts with ``'`` gets one more, so :func:`read_csv` can undo the
    escaping exactly (it strips one leading ``'`` from every text cell that has one).
    """
    if isinstance(value, str) and value.startswith((*FORMULA_PREFIXES, "'")):
        return "'" + value
    return value


def _unescape(value):
    return value[1:] if isinstance(value, str) and value.startswith("'") else value


def read_csv(path: str | os.PathLike, **read_csv_kwargs):
    """Read a CSV written by :func:`write_csv` back to the values it was given (the escaping undone)."""
    import pandas as pd

    frame = pd.read_csv(path, **read_csv_kwargs)
    for col in frame.columns:
        if pd.api.types.is_object_dtype(frame[col]) or pd.api.types.is_string_dtype(frame[col]):
            frame[col] = frame[col].map(_unescape)
    frame.columns = [_unescape(c) for c in frame.columns]
    return frame


def write_csv(frame, path: str | os.PathLike, **to_csv_kwargs) -> Path:
    """Write a pandas DataFrame as CSV, atomically and spreadsheet-safe (see module doc).

    Only text cells (object/string columns and the column names) are neutralised; numeric
    columns are written unchanged. ``index=False`` unless given.
    """
    import pandas as pd

    to_csv_kwargs.setdefault("index", False)
    safe = frame.copy()
    for col in safe.columns:
        if pd.api.types.is_object_dtype(safe[col]) or pd.api.types.is_string_dtype(safe[col]):
            safe[col] = safe[col].map(safe_cell)
    safe.columns = [safe_cell(c) if isinstance(c, str) else c for c in safe.columns]
    return atomic_write_text(path, safe.to_csv(**to_csv_kwargs))


def is_disk_full(error: BaseException) -> bool:
    """Whether *error* is the OS saying the disk (or quota) is full."""
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


_READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)


def environment_error(error: OSError, *, writing: str | os.PathLike, fix_full: str = "") -> Exception | None:
    """diffkit's error for an ``OSError`` the environment caused while writing *writing*, or None.

    A full disk becomes :class:`~diffkit.errors.DiskFullError`, a read-only or forbidden folder
    :class:`~diffkit.errors.ReadOnlyError`, a file or folder in the way
    :class:`~diffkit.errors.OutputExistsError`; each message names the path and the fix
    (*fix_full* adds what else to try when the disk is full). An error that already is diffkit's,
    or any other ``OSError``, gives None (the caller re-raises it as it is).
    """
    from .errors import DiffkitError, DiskFullError, OutputExistsError, ReadOnlyError

    if isinstance(error, DiffkitError):
        return None
    where = os.fspath(writing)
    if is_disk_full(error):
        extra = f"; {fix_full}" if fix_full else ""
        return DiskFullError(
            error.errno,
            _(
                "the disk is full: cannot write {path}; nothing half-written was kept; "
                "fix: free space on that disk or write to another one{extra}, then "
                "rerun the same command"
            ).format(path=where, extra=extra),
        )
    if error.errno in _READ_ONLY:
        return ReadOnlyError(
            error.errno,
            _(
                "cannot write {path}: {reason} (a read-only "
                "or someone else's folder); fix: pass an output folder you can write "
                "to (e.g. --out ~/diffkit-out), or change that folder's permissions"
            ).format(path=where, reason=os.strerror(error.errno).lower()),
        )
    if isinstance(error, (FileExistsError, NotADirectoryError, IsADirectoryError)):
        what = _("a folder is in the way") if isinstance(error, IsADirectoryError) else _("a file is in the way")
        return OutputExistsError(
            error.errno,
            _(
                "cannot write {path}: {what} ({name}); fix: choose another output path, or move that file or folder aside"
            ).format(path=where, what=what, name=error.filename or where),
        )
    return None
