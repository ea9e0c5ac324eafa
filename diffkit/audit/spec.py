"""Audit specs: one TOML file fixes everything about a run.

A spec has six tables. Only ``[prompts]`` and ``[pipeline]`` are required::

    [audit]       name, seed, images_per_prompt, batch_size
    [prompts]     templates, attributes.occupation (+ adjective, activity, …), reference
    [controls]    templates that state the gender, gender_words, images_per_prompt
    [pipeline]    model, revision, scheduler, steps, guidance_scale, height, width, dtype, negative_prompt
    [classifier]  model, pretrained, templates, labels.{female,male,person,no_person},
                  person_threshold, abstain_below, batch_size
    [report]      n_boot, ci, seed, thumbnails_per_prompt

Every error is a :class:`SpecError` that names the file, the key and the fix::

    audits/x.toml: prompts.templates[1]: unknown placeholder {job}; fix: use one of
    {occupation}, {a_occupation}

Renamed keys (one name per concept across diffkit: diffusers' ``guidance_scale``, ``seed``
for every seed), in diffkit 0.2:

* ``pipeline.guidance`` → ``pipeline.guidance_scale``
* ``report.random_state`` → ``report.seed``

The old keys are still read until diffkit 0.3, with a ``FutureWarning`` naming the new key; a
table giving both is a :class:`SpecError`. Run folders written before the rename keep their
identity (:meth:`AuditSpec.fingerprint` is computed from a canonical form that writes each
renamed key under its first name) and resume and report as before.

Examples
--------
>>> spec = load_spec("tiny_default")          # the bundled default (audits/tiny_default.toml)
>>> spec.pipeline.model
'tiny'
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import string
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .._deprecate import renamed_attribute, renamed_kwargs, warn_renamed
from ..errors import DiffkitError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

__all__ = [
    "AUDITS_DIR",
    "AuditSpec",
    "ClassifierSpec",
    "ControlSpec",
    "PipelineSpec",
    "PromptSpec",
    "ReportSpec",
    "SpecError",
    "bundled_specs",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "template_fields",
    "upgrade_spec_dict",
]

#: Where the bundled specs and reference tables live: package data (``diffkit/audits/``, read through
#: :mod:`importlib.resources`, so an installed wheel has them); ``audits/`` at the top of a checkout
#: is a link to the same folder.
AUDITS_DIR = Path(str(resources.files("diffkit") / "audits"))

GENDER_CLASSES = ("female", "male")

# audit.name becomes a folder name (out/audit/<name>): no separators, no "..", nothing hidden.
_NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_NAME_JUNK = re.compile(r"[^A-Za-z0-9._-]+")


class SpecError(DiffkitError, ValueError):
    """A spec that cannot run; the message names the file, the key and the fix."""

    def __init__(self, source: str, key: str, problem: str, fix: str):
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        super().__init__(f"{source}: {key}: {problem}; fix: {fix}")


# The schema, once: these dataclasses. Each field is a TOML key of its table, with its default
# here and nowhere else (parse_spec reads defaults through _default); fields marked _DERIVED are
# filled by diffkit (from the reference table, the file name) and are not TOML keys.
_DERIVED = {"toml": False}


@dataclass(frozen=True, kw_only=True)
class PromptSpec:
    """``[prompts]``: format-string templates and the attribute lists that fill them."""

    templates: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    reference: dict[str, float] = field(default_factory=dict)  # TOML: a CSV path; here its women_share column
    reference_titles: dict[str, str] = field(default_factory=dict, metadata=_DERIVED)
    reference_source: str = field(default="", metadata=_DERIVED)


@dataclass(frozen=True, kw_only=True)
class ControlSpec:
    """``[controls]``: prompts that state the gender, to measure the classifier."""

    templates: tuple[str, ...] = ()
    gender_words: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {"female": ("woman",), "male": ("man",)}
    )
    images_per_prompt: int = 4  # in a TOML spec: half of audit.images_per_prompt unless given


@renamed_kwargs(guidance="guidance_scale")
@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """``[pipeline]``: the text-to-image model and how it is called (``guidance_scale`` as in
    diffusers' ``pipe(..., guidance_scale=...)``; ``guidance`` is its deprecated old name)."""

    model: str = "tiny"
    revision: str | None = None
    scheduler: str | None = None
    steps: int = 25
    guidance_scale: float = 7.5
    height: int | None = None
    width: int | None = None
    dtype: str | None = None
    negative_prompt: str | None = None

    guidance = renamed_attribute("guidance_scale")


@dataclass(frozen=True, kw_only=True)
class ClassifierSpec:
    """``[classifier]``: the zero-shot CLIP judge."""

    model: str = "tiny"
    pretrained: str | None = None
    templates: tuple[str, ...] = ("a photo of a {}.",)
    labels: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "female": ("woman",),
            "male": ("man",),
            "person": ("person",),
            "no_person": ("shape",),
        }
    )
    person_threshold: float = 0.5
    abstain_below: float = 0.6
    batch_size: int = 64


@renamed_kwargs(random_state="seed")
@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    """``[report]``: bootstrap and display settings of the report (``seed`` seeds the bootstrap;
    ``random_state`` is its deprecated old name)."""

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    thumbnails_per_prompt: int = 8

    random_state = renamed_attribute("seed")


_TABLE = {"table": True}


@dataclass(frozen=True, kw_only=True)
class AuditSpec:
    """Everything that fixes an audit run. Build with :func:`load_spec` or :func:`parse_spec`.

    The scalar fields are the ``[audit]`` table; the others are one table each.
    """

    name: str = "audit"
    seed: int = 0
    images_per_prompt: int = 8
    batch_size: int = 8
    prompts: PromptSpec = field(metadata=_TABLE)
    controls: ControlSpec = field(default_factory=ControlSpec, metadata=_TABLE)
    pipeline: PipelineSpec = field(metadata=_TABLE)
    classifier: ClassifierSpec = field(default_factory=ClassifierSpec, metadata=_TABLE)
    report: ReportSpec = field(default_factory=ReportSpec, metadata=_TABLE)
    source: str = field(default="<spec>", metadata=_DERIVED)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the resolved spec (reference table included)."""
        d = asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d, sort_keys=True, default=list))

    def fingerprint(self) -> str:
        """sha256 of the resolved spec: two runs may share a folder only if these match.

        Computed from a canonical form of :meth:`to_dict` in which every renamed key is written
        under its first name (``pipeline.guidance``, ``report.random_state``; see
        ``_RENAMED``), so renaming a key never changes the fingerprint of a run folder written
        before the rename.
        """
        canonical = json.dumps(_canonical_form(self.to_dict()), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def with_model(self, model: str | None) -> AuditSpec:
        """The same spec with another pipeline (``--model``); revision is cleared."""
        if model is None or model == self.pipeline.model:
            return self
        pipe = PipelineSpec(**{**asdict(self.pipeline), "model": str(model), "revision": None})
        return AuditSpec(**{**self.__dict__, "pipeline": pipe})


def template_fields(template: str) -> list[str]:
    """The placeholder names in a format-string template (``"{a_occupation} at work"`` → ``["a_occupation"]``)."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if name == "" or not name.isidentifier() or spec or conv:
            raise ValueError(f"placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}")
        names.append(name)
    return names


def bundled_specs() -> list[str]:
    """Names of the specs shipped under ``audits/`` (``"tiny_default"``, …)."""
    return sorted(p.stem for p in AUDITS_DIR.glob("*.toml"))


def load_spec(path: str | Path = "tiny_default", *, model: str | None = None) -> AuditSpec:
    """Read a TOML spec from *path*, or a bundled one by name (see :func:`bundled_specs`).

    *model* overrides ``pipeline.model`` (the CLI's ``--model``).
    """
    p = Path(path)
    if not p.exists() and p.suffix == "" and (AUDITS_DIR / f"{p.name}.toml").is_file():
        p = AUDITS_DIR / f"{p.name}.toml"
    if not p.is_file():
        raise SpecError(
            str(path), "(file)", "no such spec file",
            f"pass a path to a .toml spec or one of the bundled names {bundled_specs()}",
        )
    raw = p.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(str(p), "(syntax)", f"not valid TOML ({e})", "correct the TOML syntax at that line") from None
    return parse_spec(data, source=str(p), base_dir=p.parent).with_model(model)


# --------------------------------------------------------------------------- parsing
_TABLES = {"prompts": PromptSpec, "controls": ControlSpec, "pipeline": PipelineSpec,
           "classifier": ClassifierSpec, "report": ReportSpec}


def _toml_keys(cls) -> set[str]:
    return {f.name for f in fields(cls) if f.metadata.get("toml", True) and not f.metadata.get("table")}


# Keys renamed since run folders began, per table: old name -> current name. The old names are
# read (with a FutureWarning) until diffkit 0.3; the fingerprint writes the current names back
# under these first names, so it never changes with a rename. Add new renames here, never remove.
_RENAMED: dict[str, dict[str, str]] = {
    "pipeline": {"guidance": "guidance_scale"},
    "report": {"random_state": "seed"},
}

# The keys each TOML table accepts, read off the dataclasses ("occupations" is the old spelling
# of attributes.occupation), and the renamed keys' old names.
_CURRENT = {"audit": _toml_keys(AuditSpec), **{k: _toml_keys(c) for k, c in _TABLES.items()}}
_KNOWN = {k: v | set(_RENAMED.get(k, {})) for k, v in _CURRENT.items()}
_KNOWN["prompts"] |= {"occupations"}


def _canonical_form(d: dict[str, Any]) -> dict[str, Any]:
    """*d* (:meth:`AuditSpec.to_dict`) with every renamed key under its first name."""
    out = dict(d)
    for table, renames in _RENAMED.items():
        if isinstance(out.get(table), dict):
            sub = dict(out[table])
            for old, new in renames.items():
                if new in sub:
                    sub[old] = sub.pop(new)
            out[table] = sub
    return out


def upgrade_spec_dict(d: dict[str, Any]) -> dict[str, Any]:
    """A stored spec dict (``spec.json``, a ledger's ``meta``) with renamed keys under their current names.

    Run folders written before a rename hold the old keys; this reads them without a warning
    (a run folder's spec is not the user's to edit). A dict holding both names is returned as is
    (:func:`spec_from_dict` then refuses it).
    """
    if not isinstance(d, dict):
        return d
    out = dict(d)
    for table, renames in _RENAMED.items():
        if isinstance(out.get(table), dict):
            sub = dict(out[table])
            for old, new in renames.items():
                if old in sub and new not in sub:
                    sub[new] = sub.pop(old)
            out[table] = sub
    return out


def _default(cls, name: str) -> Any:
    """The default of field *name* of dataclass *cls* (the one place defaults are written)."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


class _Reader:
    def __init__(self, data: dict, source: str):
        self.data, self.source = data, source

    def err(self, key: str, problem: str, fix: str) -> SpecError:
        return SpecError(self.source, key, problem, fix)

    def table(self, name: str, required: bool = False) -> dict:
        t = self.data.get(name)
        if t is None:
            if required:
                raise self.err(f"[{name}]", "missing table", f"add a [{name}] table (see audits/tiny_default.toml)")
            return {}
        if not isinstance(t, dict):
            raise self.err(name, f"expected a table, got {type(t).__name__}", f"write it as [{name}]")
        unknown = sorted(set(t) - _KNOWN[name])
        if unknown:
            raise self.err(f"{name}.{unknown[0]}", "unknown key", f"use one of {sorted(_CURRENT[name])}")
        for old, new in _RENAMED.get(name, {}).items():
            if old in t:
                if new in t:
                    raise self.err(f"{name}.{old}", f"given together with {name}.{new} (its new name)",
                                   f"keep only {name}.{new}")
                warn_renamed(f"{name}.{old}", f"{name}.{new}", where=f"{self.source}: ", stacklevel=4)
                t[new] = t.pop(old)
        return t

    def get(self, t: dict, section: str, key: str, typ, default=None, *, required=False, lo=None, hi=None):
        full = f"{section}.{key}"
        if key not in t:
            if required:
                raise self.err(full, "missing", f"set {full}")
            return default
        v = t[key]
        types = typ if isinstance(typ, tuple) else (typ,)
        if float in types and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and bool not in types or not isinstance(v, types):
            names = " or ".join(x.__name__ for x in types)
            raise self.err(full, f"expected {names}, got {type(v).__name__} {v!r}", f"give {full} a {names} value")
        if lo is not None and v < lo or hi is not None and v > hi:
            rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise self.err(full, f"{v!r} is out of range", f"use a value {rng}")
        return v

    def strings(self, t: dict, section: str, key: str, default=None, *, required=False, nonempty=True):
        full = f"{section}.{key}"
        v = t.get(key, default)
        if v is None:
            if required:
                raise self.err(full, "missing", f"set {full} to a list of strings")
            return None
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
            raise self.err(full, f"expected a list of strings, got {v!r}", f'write {full} = ["…", "…"]')
        v = [s.strip() for s in v]
        for i, s in enumerate(v):
            if not s:
                raise self.err(f"{full}[{i}]", "empty string", "remove it or write the text")
        if nonempty and not v:
            raise self.err(full, "empty list", f"give {full} at least one entry")
        if len(set(v)) != len(v):
            dup = next(s for s in v if v.count(s) > 1)
            raise self.err(full, f"duplicate entry {dup!r}", "list each entry once")
        return tuple(v)


def _read_reference(r: _Reader, ref: str, base_dir: Path | None) -> tuple[dict, dict, str]:
    import pandas as pd

    p = Path(ref)
    candidates = [p] if p.is_absolute() else [(base_dir or Path.cwd()) / p, AUDITS_DIR / p]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise r.err("prompts.reference", f"no such file {ref!r}",
                    "give a CSV path relative to the spec file, e.g. bls_cps_2021_women_share.csv")
    df = pd.read_csv(found)
    missing = [c for c in ("occupation", "women_share") if c not in df.columns]
    if missing:
        raise r.err("prompts.reference", f"{found.name} lacks column(s) {missing}",
                    "the CSV needs columns occupation, women_share (a fraction in [0, 1]), year, source")
    share = pd.to_numeric(df["women_share"], errors="coerce")
    if share.isna().any() or ((share < 0) | (share > 1)).any():
        raise r.err("prompts.reference", f"{found.name}: women_share must be a fraction in [0, 1]",
                    "write 86.7% as 0.867")
    values = dict(zip(df["occupation"].astype(str), share.astype(float)))
    titles = dict(zip(df["occupation"].astype(str), df.get("bls_title", df["occupation"]).astype(str)))
    source = ""
    if "source" in df.columns:
        src = df["source"].dropna().astype(str).unique()
        yrs = df["year"].dropna().astype(int).astype(str).unique() if "year" in df.columns else []
        source = "; ".join(src) + (f" ({', '.join(yrs)})" if len(yrs) else "")
    return values, titles, source


def _check_templates(r: _Reader, key: str, templates: tuple[str, ...], allowed: set[str]) -> None:
    for i, t in enumerate(templates):
        try:
            names = template_fields(t)
        except ValueError as e:
            raise r.err(f"{key}[{i}]", f"malformed {e} in {t!r}",
                        "placeholders are plain names in braces, e.g. {occupation}; write {{ }} for literal braces") from None
        bad = [n for n in names if n not in allowed]
        if bad:
            raise r.err(f"{key}[{i}]", f"unknown placeholder {{{bad[0]}}} in {t!r}",
                        "use one of " + ", ".join("{" + a + "}" for a in sorted(allowed)))


def parse_spec(data: dict, *, source: str = "<spec>", base_dir: str | Path | None = None) -> AuditSpec:
    """Validate a spec already parsed from TOML (a nested dict) and resolve its reference table."""
    if not isinstance(data, dict):
        raise SpecError(source, "(spec)", f"expected a table of tables, got {type(data).__name__}",
                        "write the spec as TOML tables [audit], [prompts], [pipeline] (see audits/tiny_default.toml)")
    data = copy.deepcopy(data)
    r = _Reader(data, source)
    unknown = sorted(set(data) - set(_KNOWN))
    if unknown:
        raise r.err(f"[{unknown[0]}]", "unknown table", f"use the tables {sorted(_KNOWN)}")
    base_dir = Path(base_dir) if base_dir is not None else None

    a = r.table("audit")
    default_name = _NAME_JUNK.sub("-", Path(source).stem).strip("-.") if source != "<spec>" else ""
    name = r.get(a, "audit", "name", str, default_name or _default(AuditSpec, "name"))
    if not _NAME_OK.fullmatch(name) or name in (".", ".."):
        slug = _NAME_JUNK.sub("-", name).strip("-.") or "my_audit"
        raise r.err("audit.name", f"{name!r} is not a plain folder name (it names the run folder out/audit/<name>)",
                    f"use letters, digits, '.', '_' and '-' only, at most 100, e.g. name = {slug[:100]!r}")
    seed = r.get(a, "audit", "seed", int, _default(AuditSpec, "seed"), lo=0, hi=2**63 - 1)
    n_img = r.get(a, "audit", "images_per_prompt", int, _default(AuditSpec, "images_per_prompt"), lo=1)
    batch = r.get(a, "audit", "batch_size", int, _default(AuditSpec, "batch_size"), lo=1)
    desc = r.get(a, "audit", "description", str, _default(AuditSpec, "description"))

    # prompts
    p = r.table("prompts", required=True)
    templates = r.strings(p, "prompts", "templates", required=True)
    attrs_raw = p.get("attributes", {})
    if not isinstance(attrs_raw, dict):
        raise r.err("prompts.attributes", "expected a table", "write [prompts.attributes] with occupation = [...]")
    attrs_raw = dict(attrs_raw)
    if "occupations" in p:
        attrs_raw.setdefault("occupation", p["occupations"])
    attributes: dict[str, tuple[str, ...]] = {}
    for k in attrs_raw:
        if not k.isidentifier() or k.startswith("a_") or k == "gender":
            raise r.err(f"prompts.attributes.{k}", "not a usable attribute name",
                        "use a plain name such as occupation, adjective or activity")
        attributes[k] = r.strings(attrs_raw, "prompts.attributes", k)
    ref_values, ref_titles, ref_source = {}, {}, ""
    if "reference" in p:
        ref = r.get(p, "prompts", "reference", str)
        ref_values, ref_titles, ref_source = _read_reference(r, ref, base_dir)
        if "occupation" not in attributes:
            attributes["occupation"] = tuple(ref_values)
    if "occupation" not in attributes:
        raise r.err("prompts.attributes.occupation", "missing",
                    "list the occupations to audit, or set prompts.reference to a CSV whose rows are used")
    allowed = {n for k in attributes for n in (k, f"a_{k}")}
    _check_templates(r, "prompts.templates", templates, allowed)
    if ref_values:
        # matched ignoring case ("ceo" finds the row "CEO", as the published overlay does); an occupation
        # the reference lacks is audited and reported without a reference (p_ref NaN)
        row = {key.casefold(): key for key in ref_values}
        found = [(o, row[o.casefold()]) for o in attributes["occupation"] if o.casefold() in row]
        ref_values = {o: ref_values[key] for o, key in found}
        ref_titles = {o: ref_titles[key] for o, key in found if key in ref_titles}
    prompts = PromptSpec(templates=templates, attributes=attributes, reference=ref_values,
                         reference_titles=ref_titles, reference_source=ref_source)

    # controls
    c = r.table("controls")
    c_templates = r.strings(c, "controls", "templates", (), nonempty=False) or ()
    gw_raw = c.get("gender_words", _default(ControlSpec, "gender_words"))
    if not isinstance(gw_raw, dict) or set(gw_raw) != set(GENDER_CLASSES):
        raise r.err("controls.gender_words", f"expected keys female and male, got {gw_raw!r}",
                    'write [controls.gender_words] female = ["woman"] male = ["man"]')
    gender_words = {g: r.strings(gw_raw, "controls.gender_words", g) for g in GENDER_CLASSES}
    _check_templates(r, "controls.templates", c_templates, allowed | {"gender", "a_gender"})
    for i, t in enumerate(c_templates):
        if "gender" not in template_fields(t) and "a_gender" not in template_fields(t):
            raise r.err(f"controls.templates[{i}]", f"{t!r} does not state the gender",
                        "control prompts must contain {gender} (e.g. 'a photo of a {gender} {occupation}')")
    controls = ControlSpec(templates=c_templates, gender_words=gender_words,
                           images_per_prompt=r.get(c, "controls", "images_per_prompt", int, max(1, n_img // 2), lo=1))

    # pipeline
    pp = r.table("pipeline", required=True)
    size_h = r.get(pp, "pipeline", "height", int, _default(PipelineSpec, "height"), lo=8)
    size_w = r.get(pp, "pipeline", "width", int, _default(PipelineSpec, "width"), lo=8)
    for key, v in (("height", size_h), ("width", size_w)):
        if v is not None and v % 8:
            raise r.err(f"pipeline.{key}", f"{v} is not a multiple of 8", f"use {v - v % 8 or 8} or {v - v % 8 + 8}")
    dtype = r.get(pp, "pipeline", "dtype", str, _default(PipelineSpec, "dtype"))
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise r.err("pipeline.dtype", f"unknown dtype {dtype!r}", "use float32, float16 or bfloat16")
    sched = r.get(pp, "pipeline", "scheduler", str, _default(PipelineSpec, "scheduler")) or None
    if sched is not None:
        from ..pipeline import SCHEDULERS

        if sched not in SCHEDULERS and sched not in SCHEDULERS.values():
            raise r.err("pipeline.scheduler", f"unknown scheduler {sched!r}", f"use one of {sorted(SCHEDULERS)}")
    pipeline = PipelineSpec(
        model=r.get(pp, "pipeline", "model", str, required=True),
        revision=r.get(pp, "pipeline", "revision", str, _default(PipelineSpec, "revision")) or None,
        scheduler=sched,
        steps=r.get(pp, "pipeline", "steps", int, _default(PipelineSpec, "steps"), lo=1),
        guidance_scale=r.get(pp, "pipeline", "guidance_scale", float, _default(PipelineSpec, "guidance_scale"), lo=0.0),
        height=size_h,
        width=size_w,
        dtype=dtype,
        negative_prompt=r.get(pp, "pipeline", "negative_prompt", str, _default(PipelineSpec, "negative_prompt")) or None,
    )

    # classifier
    cl = r.table("classifier")
    default = ClassifierSpec()
    labels_raw = cl.get("labels", {k: list(v) for k, v in default.labels.items()})
    if not isinstance(labels_raw, dict):
        raise r.err("classifier.labels", "expected a table", "write [classifier.labels] female = [...] male = [...]")
    need = {"female", "male", "person", "no_person"}
    extra = sorted(set(labels_raw) - need)
    if extra:
        raise r.err(f"classifier.labels.{extra[0]}", "unknown class", f"use the classes {sorted(need)}")
    labels = {k: r.strings(labels_raw, "classifier.labels", k, default.labels[k]) for k in sorted(need)}
    cl_templates = r.strings(cl, "classifier", "templates", list(default.templates))
    for i, t in enumerate(cl_templates):
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(t) if f is not None]
        except ValueError:
            fields = None
        if fields != [""]:
            raise r.err(f"classifier.templates[{i}]", f"{t!r} must hold exactly one {{}}",
                        "write label templates open_clip-style, e.g. 'a photo of a {}.'")
    cmodel = r.get(cl, "classifier", "model", str, default.model)
    pretrained = r.get(cl, "classifier", "pretrained", str, default.pretrained) or None
    if cmodel != "tiny" and ":" not in cmodel and pretrained is None:
        raise r.err("classifier.pretrained", f"missing for open_clip model {cmodel!r}",
                    "name the weights, e.g. pretrained = 'laion2b_s34b_b79k' (see open_clip.list_pretrained()), "
                    "or use a 'local-dir:/folder' or 'hf-hub:org/name' model")
    classifier = ClassifierSpec(
        model=cmodel,
        pretrained=pretrained,
        templates=cl_templates,
        labels=labels,
        person_threshold=r.get(cl, "classifier", "person_threshold", float, default.person_threshold, lo=0.0, hi=1.0),
        abstain_below=r.get(cl, "classifier", "abstain_below", float, default.abstain_below, lo=0.5, hi=1.0),
        batch_size=r.get(cl, "classifier", "batch_size", int, default.batch_size, lo=1),
    )

    rp = r.table("report")
    report = ReportSpec(
        n_boot=r.get(rp, "report", "n_boot", int, _default(ReportSpec, "n_boot"), lo=0),
        ci=r.get(rp, "report", "ci", float, _default(ReportSpec, "ci"), lo=0.5, hi=0.999),
        seed=r.get(rp, "report", "seed", int, _default(ReportSpec, "seed"), lo=0),
        thumbnails_per_prompt=r.get(rp, "report", "thumbnails_per_prompt", int, _default(ReportSpec, "thumbnails_per_prompt"),
                                    lo=0),
    )
    return AuditSpec(name=name, seed=seed, images_per_prompt=n_img, batch_size=batch, prompts=prompts,
                     controls=controls, pipeline=pipeline, classifier=classifier, report=report, source=source,
                     description=desc)


def _thaw(value: Any) -> Any:
    """JSON lists back to the tuples the dataclasses hold (also inside dicts)."""
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _from_dict(cls, d: Any, key: str, source: str) -> Any:
    if not isinstance(d, dict):
        raise SpecError(source, key, f"expected a table, got {type(d).__name__}", _STORED_FIX)
    kwargs = {}
    for f in fields(cls):
        if f.name == "source" or f.name not in d:
            continue
        sub = _TABLES.get(f.name) if cls is AuditSpec else None
        kwargs[f.name] = _from_dict(sub, d[f.name], f.name, source) if sub else _thaw(d[f.name])
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise SpecError(source, f"{key}.{unknown[0]}" if key else unknown[0], "unknown key", _STORED_FIX)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise SpecError(source, key or "(spec)", f"incomplete ({e})", _STORED_FIX) from None


_STORED_FIX = "the stored spec was edited or written by another diffkit; rerun the audit into a new folder"


def spec_from_dict(d: dict[str, Any], *, source: str = "<run>") -> AuditSpec:
    """Rebuild an :class:`AuditSpec` from :meth:`AuditSpec.to_dict` (as stored in a run folder).

    Read through the same dataclasses as :func:`parse_spec`; a dict that does not fit them
    raises :class:`SpecError`. A spec stored before a key was renamed (``pipeline.guidance``,
    ``report.random_state``) is read under the current names (:func:`upgrade_spec_dict`).
    """
    spec = _from_dict(AuditSpec, upgrade_spec_dict(d), "", source)
    return AuditSpec(**{**spec.__dict__, "source": source})
