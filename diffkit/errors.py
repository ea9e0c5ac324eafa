"""The errors diffkit raises on purpose: each one says what went wrong and how to fix it.

Every deliberate failure is a :class:`DiffkitError`. Each class also derives from the builtin
exception it stands for (:class:`InputError` is a ``ValueError``, :class:`DiskFullError` an
``OSError``, …), so ``except ValueError`` clauses written before keep working. The command line
prints a ``DiffkitError`` as one line, ``diffkit <command>: error: <message>``, and exits with
status 2; anything else is a bug in diffkit and is printed with its traceback and a request to
report it. ``--debug`` shows the traceback of any error.

============================  ==========================  ===============================================
class                         also a                      raised when
============================  ==========================  ===============================================
:class:`InputError`           ``ValueError``              an argument or a value cannot be used as given
:class:`InputTypeError`       ``TypeError``               an argument has a type diffkit cannot use
:class:`StateError`           ``RuntimeError``            a call the object's state does not allow now
:class:`ChainClosedError`     ``RuntimeError``            a step asked of a closed reverse chain
:class:`NonFiniteLatentsError` ``ValueError``             the latents became NaN or inf
:class:`StepIndexError`       ``IndexError``              a step that was not recorded
:class:`MissingPackageError`  ``RuntimeError``            an optional package is not installed
:class:`ModelUnavailableError` ``OSError``                a model can be neither loaded nor fetched
:class:`GatedModelError`      ``OSError``                 a gated hub model (FLUX.1-dev) whose licence is not yet accepted
:class:`WeightsMissingError`  ``FileNotFoundError``       diffkit-tiny's shipped weights are missing
:class:`RunFolderError`       ``FileNotFoundError``       a folder that is not a usable audit run folder
:class:`RunBusyError`         ``BlockingIOError``         another process writes into the run folder
:class:`CacheDamagedError`    ``sqlite3.DatabaseError``   a damaged cache (safe to delete; the run is fine)
:class:`DiskFullError`        ``OSError``                 the disk filled up while writing
:class:`ReadOnlyError`        ``PermissionError``         a folder diffkit must write into is read-only
:class:`OutputExistsError`    ``FileExistsError``         an output path is taken by something else
============================  ==========================  ===============================================

``SpecError`` (``diffkit.audit``, a ``ValueError``), ``RunMismatchError`` (a ``ValueError``),
``PipelineNotAvailableError`` and ``PickledWeightsError`` (``diffkit.pipeline``) and
``NothingInCommonError`` (``diffkit.audit.metrics``) are DiffkitErrors too.

Examples
--------
>>> try:
...     raise RunBusyError("out/audit/x is busy; fix: wait for the other run to finish")
... except DiffkitError as e:
...     print(e)
out/audit/x is busy; fix: wait for the other run to finish
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "CacheDamagedError",
    "ChainClosedError",
    "DiffkitError",
    "DiskFullError",
    "GatedModelError",
    "InputError",
    "InputTypeError",
    "MissingPackageError",
    "ModelUnavailableError",
    "NonFiniteLatentsError",
    "OutputExistsError",
    "ReadOnlyError",
    "RunBusyError",
    "RunFolderError",
    "StateError",
    "StepIndexError",
    "WeightsMissingError",
]


class DiffkitError(Exception):
    """Base of the errors diffkit raises on purpose; the message names the fix."""


class InputError(DiffkitError, ValueError):
    """An argument or value that cannot be used as given (a widget's steps, a NaN, a size, …)."""


class InputTypeError(DiffkitError, TypeError):
    """An argument of a type diffkit cannot use (a float image where uint8 is needed, …)."""


class StateError(DiffkitError, RuntimeError):
    """A call the object's state does not allow now (a chain that has run all its steps, …)."""


class ChainClosedError(StateError):
    """A step was asked of a reverse chain that was closed (by ``close()``, or at interpreter exit)."""


class NonFiniteLatentsError(DiffkitError, ValueError):
    """The latents became NaN or inf during the reverse chain."""


class StepIndexError(DiffkitError, IndexError):
    """A step index that the trajectory did not record."""


class MissingPackageError(DiffkitError, RuntimeError):
    """An optional package a call needs is not installed; the message names the ``pip install``."""


class ModelUnavailableError(DiffkitError, OSError):
    """A model (pipeline or classifier) cannot be loaded here: not cached and not reachable."""


class GatedModelError(ModelUnavailableError):
    """A gated model on the Hugging Face hub (FLUX.1-dev, SD 3) is neither cached nor allowed yet;
    the message names the licence step, the login and the download."""


class WeightsMissingError(ModelUnavailableError, FileNotFoundError):
    """A file of diffkit-tiny's shipped weights is missing or damaged; the message names the rebuild."""


class RunFolderError(DiffkitError, FileNotFoundError):
    """A folder that is not a usable audit run folder (no ledger, a damaged ledger or spec)."""


class RunBusyError(DiffkitError, BlockingIOError):
    """Another process is generating into the same run folder right now."""


class CacheDamagedError(DiffkitError, sqlite3.DatabaseError):
    """A cache file (the embeddings of scored images) is damaged: deleting it loses nothing."""


class DiskFullError(DiffkitError, OSError):
    """The disk (or the user's quota) filled up while diffkit wrote a file; nothing half-written is kept."""


class ReadOnlyError(DiffkitError, PermissionError):
    """A folder diffkit must write into is read-only or not writable by this user."""


class OutputExistsError(DiffkitError, FileExistsError):
    """An output path is already taken by something diffkit will not overwrite."""
