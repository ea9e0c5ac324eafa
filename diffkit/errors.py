"""The errors diffkit raises on purpose: each one says what went wrong and how to fix it.

Every deliberate failure is a :class:`DiffkitError` (it may also be a ``ValueError`` or an
``OSError``, so older ``except`` clauses keep working). The command line prints such an error as
one line, ``diffkit <command>: error: <message>``, and exits with status 2; ``--debug`` shows the
traceback instead.

Examples
--------
>>> try:
...     raise RunBusyError("out/audit/x is busy; fix: wait for the other run to finish")
... except DiffkitError as e:
...     print(e)
out/audit/x is busy; fix: wait for the other run to finish
"""

from __future__ import annotations

__all__ = [
    "DiffkitError",
    "InputError",
    "ModelUnavailableError",
    "RunBusyError",
    "RunFolderError",
]


class DiffkitError(Exception):
    """Base of the errors diffkit raises on purpose; the message names the fix."""


class InputError(DiffkitError, ValueError):
    """An argument that cannot be used as given (a widget's steps, size, pixels, …)."""


class RunFolderError(DiffkitError, FileNotFoundError):
    """A folder that is not a usable audit run folder (no ledger, a damaged ledger or spec)."""


class RunBusyError(DiffkitError, BlockingIOError):
    """Another process is generating into the same run folder right now."""


class ModelUnavailableError(DiffkitError, OSError):
    """A model (pipeline or classifier) cannot be loaded here: not cached and not reachable."""
