"""Reading a TOML spec strictly: :class:`SpecReader` types, bounds and names every value, and
every error is a :class:`~diffkit.audit.spec.SpecError` naming the file, the key and the fix."""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from ..i18n import gettext as _
from ._spec_schema import (
    AUDITS_DIR,
    BOUNDS,
    TABLES,
    AuditSpec,
    SpecError,
    template_fields,
    toml_keys,
)

__all__ = [
    "CURRENT_KEYS",
    "KNOWN_KEYS",
    "SpecReader",
    "check_entry_point",
    "check_templates",
    "find_csv",
    "load_csv",
    "num_at",
    "one_line",
]

#: The keys each TOML table accepts, read off the dataclasses, and ("occupations", the old
#: spelling of attributes.occupation) the other keys a table may hold.
CURRENT_KEYS = {"audit": toml_keys(AuditSpec), **{k: toml_keys(c) for k, c in TABLES.items()}}
KNOWN_KEYS = {k: set(v) for k, v in CURRENT_KEYS.items()}
KNOWN_KEYS["prompts"] |= {"occupations"}


def one_line(e: BaseException) -> str:
    """An exception's message on one line (its type's name if it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


class SpecReader:
    """Reads the tables of one parsed TOML spec (*data*, from *source*), refusing what does not fit."""

    def __init__(self, data: dict, source: str):
        self.data, self.source = data, source

    def err(self, key: str, problem: str, fix: str) -> SpecError:
        return SpecError(self.source, key, problem, fix)

    def table(self, name: str, required: bool = False) -> dict:
        t = self.data.get(name)
        if t is None:
            if required:
                raise self.err(
                    f"[{name}]",
                    _("missing table"),
                    _("add a [{name}] table (see audits/tiny_default.toml)").format(name=name),
                )
            return {}
        if not isinstance(t, dict):
            raise self.err(
                name,
                _("expected a table, got {type}").format(type=type(t).__name__),
                _("write it as [{name}]").format(name=name),
            )
        unknown = sorted(set(t) - KNOWN_KEYS[name])
        if unknown:
            raise self.err(
                f"{name}.{unknown[0]}",
                _("unknown key"),
                _("use one of {names}").format(names=sorted(CURRENT_KEYS[name])),
            )
        return t

    def get(self, t: dict, section: str, key: str, typ, default=None, *, required=False, lo=None, hi=None):
        full = f"{section}.{key}"
        if key not in t:
            if required:
                raise self.err(full, _("missing"), _("set {key}").format(key=full))
            return default
        v = t[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            names = _(" or ").join(x.__name__ for x in types)
            raise self.err(
                full,
                _("expected {types}, got {type} {value!r}").format(types=names, type=type(v).__name__, value=v),
                _("give {key} a {types} value").format(key=full, types=names),
            )
        if isinstance(v, float) and not math.isfinite(v):  # TOML's nan and inf pass every comparison below
            if lo is None:
                fix = _("write a number")
            elif hi is None:
                fix = _("write a number of at least {lo}").format(lo=lo)
            else:
                fix = _("write a number between {lo} and {hi}").format(lo=lo, hi=hi)
            raise self.err(full, _("{value!r} is not a finite number").format(value=v), fix)
        if lo is not None and v < lo or hi is not None and v > hi:
            if hi is None:
                fix = _("use a value at least {lo}").format(lo=lo)
            else:
                fix = _("use a value between {lo} and {hi}").format(lo=lo, hi=hi)
            raise self.err(full, _("{value!r} is out of range").format(value=v), fix)
        return v

    def num(self, t: dict, section: str, key: str, default=None):
        """A numeric key, typed and bounded by :data:`BOUNDS`."""
        typ, lo, hi = BOUNDS[f"{section}.{key}"]
        return self.get(t, section, key, typ, default, lo=lo, hi=hi)

    def strings(self, t: dict, section: str, key: str, default=None, *, required=False, nonempty=True):
        full = f"{section}.{key}"
        v = t.get(key, default)
        if v is None:
            if required:
                raise self.err(full, _("missing"), _("set {key} to a list of strings").format(key=full))
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
            raise self.err(
                full,
                _("expected a list of strings, got {value!r}").format(value=v),
                _('write {key} = ["…", "…"]').format(key=full),
            )
        v = [s.strip() for s in v]
        for i, s in enumerate(v):
            if not s:
                raise self.err(f"{full}[{i}]", _("empty string"), _("remove it or write the text"))
        if nonempty and not v:
            raise self.err(full, _("empty list"), _("give {key} at least one entry").format(key=full))
        if len(set(v)) != len(v):
            dup = next(s for s in v if v.count(s) > 1)
            raise self.err(full, _("duplicate entry {entry!r}").format(entry=dup), _("list each entry once"))
        return tuple(v)


def find_csv(r: SpecReader, key: str, ref: str, base_dir: Path | None, example: str) -> Path:
    """The CSV *ref* names: an absolute path, or relative to the spec's folder, or bundled."""
    p = Path(ref)
    candidates = [p] if p.is_absolute() else [(base_dir or Path.cwd()) / p, AUDITS_DIR / p]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise r.err(
            key,
            _("no such file {ref!r}").format(ref=ref),
            _("give a CSV path relative to the spec file, e.g. {example}").format(example=example),
        )
    return found


def load_csv(r: SpecReader, key: str, found: Path, header: str):
    """A CSV table read strictly (every row as wide as the header), errors as :class:`SpecError`."""
    import pandas as pd

    try:
        with open(found, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
        widths = {len(row) for row in rows if row}
        if len(widths) > 1:
            bad = next(i for i, row in enumerate(rows, 1) if row and len(row) != len(rows[0]))
            raise csv.Error(f"line {bad} has {len(rows[bad - 1])} fields where the header has {len(rows[0])}")
        return pd.read_csv(found, index_col=False, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise r.err(
            key,
            _("{path} is not a readable CSV table ({error})").format(path=found, error=one_line(e)),
            _("the CSV needs a header row {header} and one row per entry").format(header=header),
        ) from None
    except OSError as e:
        raise r.err(
            key,
            _("{path} cannot be read ({error})").format(path=found, error=e.strerror or e),
            _("check the file's permissions"),
        ) from None


def num_at(r: SpecReader, t: dict, section: str, key: str, at: str, default=None):
    """:meth:`SpecReader.num` for one element of a list (*at* = ``"[i]"`` names it in the error)."""
    try:
        return r.num(t, section, key, default)
    except SpecError as e:
        if not at:
            raise
        raise SpecError(e.source, f"{e.key}{at}", e.problem, e.fix) from None


_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def check_entry_point(r: SpecReader, key: str, value: str, what: str, example: str) -> None:
    """Refuse a *value* that is not a ``module:callable`` name."""
    if not _ENTRY.fullmatch(value):
        raise r.err(
            key,
            _("{value!r} is not a 'module:callable' name of {what}").format(value=value, what=what),
            _("name an importable factory, e.g. {example!r} (see docs/howto/audit.md)").format(example=example),
        )


def check_templates(r: SpecReader, key: str, templates: tuple[str, ...], allowed: set[str]) -> None:
    """Refuse a template with a malformed placeholder or one not in *allowed*."""
    for i, t in enumerate(templates):
        try:
            names = template_fields(t)
        except ValueError as e:
            raise r.err(
                f"{key}[{i}]",
                _("malformed {what} in {template!r}").format(what=e, template=t),
                _("placeholders are plain names in braces, e.g. {occupation}; write {{ }} for literal braces"),
            ) from None
        bad = [n for n in names if n not in allowed]
        if bad:
            raise r.err(
                f"{key}[{i}]",
                _("unknown placeholder {{{name}}} in {template!r}").format(name=bad[0], template=t),
                _("use one of {names}").format(names=", ".join("{" + a + "}" for a in sorted(allowed))),
            )
