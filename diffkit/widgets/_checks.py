"""Checks for the explorers' constructor arguments: a clear error naming the fix, never a silent clamp.

ipywidgets sliders clamp a value outside their range without a word (``steps=10000`` becomes
100), and a dropdown answers a bad option with "Invalid selection". The explorers check their
arguments first, with these helpers, and raise :class:`~diffkit.errors.InputError` (a
``ValueError``) that says which argument, what was wrong and what to pass instead.

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
from collections.abc import Iterable
from typing import Any

from ..errors import InputError

__all__ = ["MAX_SEED", "check_choice", "check_float", "check_int", "check_seed"]

#: Seeds are 64-bit signed integers for torch generators: 0 ≤ seed ≤ MAX_SEED.
MAX_SEED = 2**63 - 1


def check_int(name: str, value: Any, *, lo: int, hi: int, hint: str = "") -> int:
    """*value* as an ``int`` in ``[lo, hi]``; a bool, a float or anything else is refused."""
    extra = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name}={value!r} is not an integer; fix: pass an integer between {lo} and {hi}{extra}")
    if not lo <= int(value) <= hi:
        raise InputError(f"{name}={value!r} is out of range; fix: pass an integer between {lo} and {hi}{extra}")
    return int(value)


def check_float(name: str, value: Any, *, lo: float, hi: float, hint: str = "") -> float:
    """*value* as a finite ``float`` in ``[lo, hi]``."""
    extra = f" ({hint})" if hint else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}={value!r} is not a number; fix: pass a number between {lo:g} and {hi:g}{extra}")
    v = float(value)
    if not math.isfinite(v) or not lo <= v <= hi:
        raise InputError(f"{name}={value!r} is out of range; fix: pass a number between {lo:g} and {hi:g}{extra}")
    return v


def check_choice(name: str, value: Any, options: Iterable[Any]) -> Any:
    """*value* if it is one of *options*, else an error listing them."""
    options = list(options)
    if not isinstance(value, str) or value not in options:
        raise InputError(f"{name}={value!r} is not one of the choices; fix: pass one of {options}")
    return value


def check_seed(seed: Any) -> int:
    """A seed torch accepts: an integer in ``[0, 2**63 − 1]``."""
    return check_int("seed", seed, lo=0, hi=MAX_SEED, hint="any whole number works; 0 is the default")
