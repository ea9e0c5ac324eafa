"""Renamed arguments, attributes and spec keys: the old name keeps working for one release.

diffkit uses one name per concept across its public API (``guidance_scale`` as in diffusers,
``seed`` for every random seed, ``batch_size``). A name that changes keeps its old spelling as a
deprecated alias for one release: using it works and warns with a :class:`FutureWarning`
(shown by default, also outside tests) that names the new spelling.

Examples
--------
>>> @renamed_kwargs(random_state="seed")
... def draw(*, seed=None):
...     return seed
>>> import warnings
>>> with warnings.catch_warnings(record=True) as w:
...     warnings.simplefilter("always")
...     draw(random_state=3)
3
>>> str(w[0].message)
'draw(random_state=...) is deprecated; use seed=... instead (random_state is removed in diffkit 0.3)'
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import InputTypeError

__all__ = ["REMOVED_IN", "renamed_attribute", "renamed_kwargs", "warn_renamed"]

#: The release that removes the old names renamed in the coming one (0.2).
REMOVED_IN = "0.3"

T = TypeVar("T")


def warn_renamed(old: str, new: str, *, where: str = "", stacklevel: int = 3) -> None:
    """Warn (:class:`FutureWarning`) that *old* is deprecated in favour of *new*.

    *where* prefixes the message (``"audit_metrics("``, ``"audits/x.toml: "``); *stacklevel*
    is passed to :func:`warnings.warn` (3: the caller of the function that calls this one).
    """
    bare = re.findall(r"[A-Za-z_]\w*", old.split("=")[0])[-1]
    warnings.warn(
        f"{where}{old} is deprecated; use {new} instead ({bare} is removed in diffkit {REMOVED_IN})",
        FutureWarning,
        stacklevel=stacklevel,
    )


def _rename(kwargs: dict[str, Any], renames: dict[str, str], where: str) -> dict[str, Any]:
    for old, new in renames.items():
        if old in kwargs:
            if new in kwargs:
                raise InputTypeError(
                    f"{where}() got both {old}= and {new}=; fix: pass only {new}= ({old} is its deprecated old name)"
                )
            warn_renamed(f"{where}({old}=...)", f"{new}=...", stacklevel=4)
            kwargs[new] = kwargs.pop(old)
    return kwargs


def renamed_kwargs(**renames: str) -> Callable[[T], T]:
    """Decorator: accept the keyword arguments renamed ``old="new"`` under their old names too.

    Works on functions and on classes (their ``__init__``, e.g. a dataclass). Passing an old
    name warns (:class:`FutureWarning`, naming the new one) and passes the value on under the
    new name; passing both raises :class:`TypeError`. The signature seen by ``help()`` and the
    docs is the new one.
    """

    def deco(obj):
        if isinstance(obj, type):
            init = obj.__init__

            @functools.wraps(init)
            def __init__(self, *args, **kwargs):
                init(self, *args, **_rename(kwargs, renames, obj.__name__))

            obj.__init__ = __init__
            return obj

        @functools.wraps(obj)
        def wrapper(*args, **kwargs):
            return obj(*args, **_rename(kwargs, renames, obj.__name__))

        return wrapper

    return deco


class renamed_attribute:  # noqa: N801 - used like property
    """A read-only attribute under an old name that reads the new one, with a :class:`FutureWarning`.

    >>> class Spec:
    ...     guidance = renamed_attribute("guidance_scale")
    ...     guidance_scale = 7.5
    """

    def __init__(self, new: str):
        self.new = new
        self.old = "?"
        self.owner = "?"

    def __set_name__(self, owner: type, name: str) -> None:
        self.old, self.owner = name, owner.__name__

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        warn_renamed(f"{self.owner}.{self.old}", f"{self.owner}.{self.new}", stacklevel=3)
        return getattr(obj, self.new)
