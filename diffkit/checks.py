"""One validation helper for what users pass: counts, finite numbers, probabilities, seeds, choices.

Each check returns the value in its plain Python type or raises :class:`~diffkit.errors.InputError`
(a ``ValueError``) that says which argument, what was wrong and what to pass instead: never a
silent clamp (an ipywidgets slider clamps ``steps=10000`` to 100 without a word), never a
silent coercion (``1.5`` is not an integer, ``True`` is not a number, NaN and inf are not
finite). The explorers, :class:`~diffkit.ReverseChain`, the forward chain and the audit's spec
reader all check through here, so a seed means the same everywhere: a whole number in
``[0, 2**63 − 1]`` (:data:`MAX_SEED`), what a torch generator and the audit ledger's SQLite
integers both hold.

Examples
--------
>>> check_int("steps", 25, lo=1, hi=1000)
25
>>> check_int("steps", 0, lo=1, hi=1000)
Traceback (most recent call last):
...
diffkit.errors.InputError: steps=0 is out of range; fix: pass an integer between 1 and 1000
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from .errors import InputError
from .i18n import N_
from .i18n import gettext as _

__all__ = ["MAX_SEED", "check_choice", "check_float", "check_int", "check_probability", "check_seed", "wait_or_cancel"]

#: Seeds are 64-bit signed integers (torch generators, SQLite): 0 ≤ seed ≤ MAX_SEED.
MAX_SEED = 2**63 - 1


def _extra(hint: str) -> str:
    """The hint in brackets, in the language diffkit speaks (a hint marked with ``N_`` is translated here)."""
    return f" ({_(hint)})" if hint else ""


def check_int(name: str, value: Any, *, lo: int, hi: int, hint: str = "") -> int:
    """*value* as an ``int`` in ``[lo, hi]``; a bool, a float or anything else is refused.

    *hint* (and the other checks' hints) may be marked with :func:`diffkit.i18n.N_`: it is
    translated when the error is raised.
    """
    fields = dict(name=name, value=value, lo=lo, hi=hi, extra=_extra(hint))
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(
            _("{name}={value!r} is not an integer; fix: pass an integer between {lo} and {hi}{extra}").format(**fields)
        )
    if not lo <= int(value) <= hi:
        raise InputError(
            _("{name}={value!r} is out of range; fix: pass an integer between {lo} and {hi}{extra}").format(**fields)
        )
    return int(value)


def check_float(name: str, value: Any, *, lo: float, hi: float, hint: str = "") -> float:
    """*value* as a finite ``float`` in ``[lo, hi]`` (NaN and ±inf are refused, whatever the range)."""
    fields = dict(name=name, value=value, lo=lo, hi=hi, extra=_extra(hint))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            _("{name}={value!r} is not a number; fix: pass a number between {lo:g} and {hi:g}{extra}").format(**fields)
        )
    v = float(value)
    if not math.isfinite(v):
        raise InputError(
            _("{name}={value!r} is not a finite number; fix: pass a number between {lo:g} and {hi:g}{extra}").format(
                **fields
            )
        )
    if not lo <= v <= hi:
        raise InputError(
            _("{name}={value!r} is out of range; fix: pass a number between {lo:g} and {hi:g}{extra}").format(**fields)
        )
    return v


def check_probability(name: str, value: Any, *, open_ends: bool = False, hint: str = "") -> float:
    """*value* as a ``float`` in ``[0, 1]`` (``(0, 1)`` with *open_ends*)."""
    v = check_float(name, value, lo=0.0, hi=1.0, hint=hint)
    if open_ends and v in (0.0, 1.0):
        raise InputError(
            _("{name}={value!r} is out of range; fix: pass a number strictly between 0 and 1{extra}").format(
                name=name, value=value, extra=_extra(hint)
            )
        )
    return v


def check_choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    """*value* if it is one of *options*, else an error listing them."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise InputError(
            _("{name}={value!r} is not one of the choices; fix: pass one of {options}").format(
                name=name, value=value, options=options
            )
        )
    return value


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed: an integer in ``[0, 2**63 − 1]`` (:data:`MAX_SEED`)."""
    return check_int(name, seed, lo=0, hi=MAX_SEED, hint=N_("any whole number works; 0 is the default"))


def wait_or_cancel(
    wait: Callable[[float | None], bool], cancel: Callable[[], None], timeout: float | None = None
) -> bool:
    """``wait(timeout)``; on Ctrl-C, ``cancel()``, wait for the work in flight to end, then re-raise.

    What every background run of diffkit (a chain, an explorer) does when its caller is
    interrupted while waiting: no step runs on unseen after the interrupt has reached the caller.
    """
    try:
        return wait(timeout)
    except KeyboardInterrupt:
        cancel()
        wait(None)
        raise
