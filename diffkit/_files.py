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
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import uuid
from pathlib import Path

__all__ = [
    "FORMULA_PREFIXES",
    "atomic_write_bytes",
    "atomic_write_text",
    "is_disk_full",
    "read_csv",
    "safe_cell",
    "write_csv",
]

#: First characters that make a spreadsheet treat a cell as a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _tmp_name(path: Path) -> Path:
    tag = f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:8]}"
    return path.with_name(f".{path.name}.{tag}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write *data* to *path* through a unique temporary file and a rename.

    On any error the temporary file is removed and the old *path* (if any) is untouched.
    A full disk is raised as ``OSError`` with ``errno.ENOSPC``/``EDQUOT`` as the OS gave it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


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
