"""Audit specs: one TOML file fixes everything about a run.

A spec has seven tables. Only ``[prompts]`` and ``[pipeline]`` are required::

    [audit]       name, seed, images_per_prompt, batch_size, seeds, noise
    [prompts]     templates, attributes.occupation (+ adjective, activity, …), reference
    [controls]    templates that state the gender, gender_words, images_per_prompt
    [pipeline]    model, revision, scheduler, steps, guidance_scale, height, width, dtype, negative_prompt,
                  generator_device, safety_checker  (guidance_scale, scheduler, steps: a value or a
                  list of values, a sweep: one arm per value, the same seeds in every arm)
    [classifier]  kind, model, pretrained, templates, labels.{female,male,person,no_person,several_people},
                  gate, detector, detector_weights, label_map, crop_size, crop_margin,
                  person_threshold, abstain_below, keep_first, phrase_sets, batch_size
    [replication] published (a published audit's counts, read beside this run's)
    [report]      n_boot, ci, seed, thumbnails_per_prompt

``audit.seeds`` says where each image's seed comes from: ``"derived"`` (the default:
:func:`~diffkit.audit.prompts.derive_seed` of spec seed, prompt and image), ``"counting"`` (image
i of every prompt gets seed ``audit.seed + i``: Fair Diffusion's 0, 1, 2, …) or a CSV file with
columns ``prompt`` and ``evaluation_seed`` (or ``seed``), one seed per prompt (Unified Concept
Editing's). ``audit.noise`` says how the seed becomes the initial latents: ``"per_image"`` (each
image its own generator) or ``"per_prompt"`` (one CPU generator per prompt, seeded with the
prompt's seed, draws every image's latents as one batch, ``torch.randn((n, C, h, w),
generator=torch.manual_seed(seed))``, as UCE's script does).

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
import csv
import hashlib
import json
import math
import re
import string
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from .._deprecate import renamed_attribute, renamed_kwargs, warn_renamed
from ..checks import MAX_SEED
from ..errors import DiffkitError, InputError

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


MAX_IMAGES = 1_000_000
"""The most images one run folder holds (a larger audit is split into several specs)."""

MAX_GUIDANCE = 100.0
"""The largest ``pipeline.guidance_scale`` a spec may set: far past it the latents overflow to
NaN or inf and every image comes out black (1–15 is usual)."""


# The numeric keys and their ranges, once: parse_spec reads TOML values through them, and
# spec_from_dict checks a stored spec (a run folder is input: its spec may have been edited).
_BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
    "audit.seed": (int, 0, MAX_SEED),
    "audit.images_per_prompt": (int, 1, MAX_IMAGES),
    "audit.batch_size": (int, 1, 4096),
    "controls.images_per_prompt": (int, 1, MAX_IMAGES),
    "pipeline.height": (int, 8, 8192),
    "pipeline.width": (int, 8, 8192),
    "pipeline.steps": (int, 1, 10_000),
    "pipeline.guidance_scale": (float, 0.0, MAX_GUIDANCE),
    "classifier.person_threshold": (float, 0.0, 1.0),
    "classifier.abstain_below": (float, 0.5, 1.0),
    "classifier.batch_size": (int, 1, 4096),
    "classifier.crop_size": (int, 8, 4096),
    "classifier.crop_margin": (float, 0.0, 2.0),
    "classifier.keep_first": (int, 1, MAX_IMAGES),
    "report.n_boot": (int, 0, 1_000_000),
    "report.ci": (float, 0.5, 0.999),
    "report.seed": (int, 0, MAX_SEED),
    "report.thumbnails_per_prompt": (int, 0, 10_000),
}


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


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
    # where the per-image generators live: "cpu" (the same noise on every machine) or "pipeline"
    # (the pipeline's device, e.g. CUDA generators, as Fair Diffusion seeded them)
    generator_device: str = "cpu"
    # keep the pipeline's own safety checker (its nsfw_content_detected flags are recorded per
    # image); false loads the pipeline without one (UCE's script ran none)
    safety_checker: bool = True

    guidance = renamed_attribute("guidance_scale")


#: The labeller kinds (``classifier.kind``) and person gates (``classifier.gate``).
LABELLER_KINDS = ("open_clip", "face_crop")
GATES = ("clip", "faces", "none")
#: Judge-phrase sets of published audits (``classifier.phrase_sets``), read beside the spec's own
#: labels: HEIM's "a photo of a female/male" (Lee et al. 2023), UCE's "a man"/"a woman"
#: (Gandikota et al. 2024, eval-scripts/CLIP_classify.py), TIME's "a female/male {occupation}"
#: (Orgad et al. 2023, as in UCE's TIME/evaluate_gender_bias.py).
PHRASE_SETS: dict[str, dict[str, Any]] = {
    "heim": {"templates": ("a photo of a {}",), "female": ("female",), "male": ("male",)},
    "uce": {"templates": ("{}",), "female": ("a woman",), "male": ("a man",)},
    "time": {"templates": ("{}",), "female": ("a female {occupation}",), "male": ("a male {occupation}",)},
}


@dataclass(frozen=True, kw_only=True)
class ClassifierSpec:
    """``[classifier]``: the labeller (an open_clip zero-shot judge by default; a face-crop
    classifier with ``kind = "face_crop"``) and its person gate (see :mod:`diffkit.audit.labellers`)."""

    kind: str = "open_clip"
    model: str = "tiny"
    pretrained: str | None = None
    templates: tuple[str, ...] = ("a photo of a {}.",)
    labels: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "female": ("woman",),
            "male": ("man",),
            "person": ("person",),
            "no_person": ("shape",),
            "several_people": ("group of people",),
        }
    )
    person_threshold: float = 0.5
    abstain_below: float = 0.6
    batch_size: int = 64
    # "clip": the zero-shot person gate (one person / nobody / several people); "faces": a face
    # detector's count (0 → no_person, 2 or more → several_people); "none": no gate (HEIM, UCE)
    gate: str = "clip"
    detector: str | None = None  # "module:callable", image → face boxes (gate "faces", kind "face_crop")
    detector_weights: str | None = None  # passed to the detector's factory (e.g. dlib's .dat file)
    label_map: dict[str, int] = field(default_factory=dict)  # face_crop: output index of female, male
    crop_size: int = 224  # face_crop: side of the square crop fed to the classifier
    crop_margin: float = 0.25  # face_crop: margin around the face box, as a share of its side
    keep_first: int | None = None  # per prompt, count only the first N images (seed order) the gate passes
    phrase_sets: tuple[str, ...] = ()  # names in PHRASE_SETS, reported beside the spec's labels


@renamed_kwargs(random_state="seed")
@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    """``[report]``: the report's level (``ci``) and display settings.

    ``n_boot`` and ``seed`` set the bootstrap of the intervals before they became exact; no
    number depends on them any more. They are still read, and kept in the spec's fingerprint,
    so that run folders written before still resume and report (``random_state`` is ``seed``'s
    old name)."""

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    thumbnails_per_prompt: int = 8

    random_state = renamed_attribute("seed")


@dataclass(frozen=True, kw_only=True)
class ReplicationSpec:
    """``[replication]``: a published audit to read this run beside (see
    :mod:`diffkit.audit.published`). In TOML, ``published`` names a CSV (bundled, or relative to
    the spec); the spec stores its counts, so a run folder carries them."""

    published: str = ""
    by: str = field(default="", metadata=_DERIVED)  # "occupation" or "prompt"
    counts: dict[str, tuple[int, int]] = field(default_factory=dict, metadata=_DERIVED)  # key → (n_female, n)
    source: str = field(default="", metadata=_DERIVED)


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
    replication: ReplicationSpec = field(default_factory=ReplicationSpec, metadata=_TABLE)
    source: str = field(default="<spec>", metadata=_DERIVED)
    description: str = ""
    seeds: str = "derived"  # "derived", "counting", or (TOML) a CSV of per-prompt seeds
    noise: str = "per_image"  # or "per_prompt"
    prompt_seeds: dict[str, int] = field(default_factory=dict, metadata=_DERIVED)  # seeds = a CSV: prompt → seed
    # pipeline keys given as lists: key → values; pipeline.<key> holds the first (see arms())
    sweep: dict[str, tuple] = field(default_factory=dict, metadata=_DERIVED)

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

    def arms(self) -> list[tuple[str, AuditSpec]]:
        """``(arm name, spec)`` for every arm of a sweep: one per combination of the listed
        ``pipeline`` values (``"guidance_scale=7.5"``, ``"scheduler=ddim,steps=25"``), each spec
        single-valued and otherwise the same (same seeds, prompts, controls, judge). A spec without
        a sweep is its own single arm, named ``""``.
        """
        if not self.sweep:
            return [("", self)]
        import itertools

        keys = sorted(self.sweep, key=list(_SWEEPABLE).index)
        out = []
        for combo in itertools.product(*(self.sweep[k] for k in keys)):
            name = ",".join(f"{k}={_arm_value(v)}" for k, v in zip(keys, combo))
            pipe = PipelineSpec(**{**asdict(self.pipeline), **dict(zip(keys, combo))})
            out.append((name, AuditSpec(**{**self.__dict__, "pipeline": pipe, "sweep": {}})))
        return out


def template_fields(template: str) -> list[str]:
    """The placeholder names in a format-string template (``"{a_occupation} at work"`` → ``["a_occupation"]``)."""
    names = []
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if name == "" or not name.isidentifier() or spec or conv:
            raise InputError(f"placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}")
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
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(str(p), "(file)", f"cannot be read ({e.strerror or e})",
                        "check the file's permissions, or pass another spec") from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark (Windows editors) is not TOML's business
    except UnicodeDecodeError as e:
        raise SpecError(str(p), "(file)", f"not UTF-8 text ({e.reason} at byte {e.start})",
                        "save the spec as UTF-8 text (a TOML file; see audits/tiny_default.toml)") from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(p), "(syntax)", f"not valid TOML ({e})", "correct the TOML syntax at that line") from None
    return parse_spec(data, source=str(p), base_dir=p.parent).with_model(model)


# --------------------------------------------------------------------------- parsing
_TABLES = {"prompts": PromptSpec, "controls": ControlSpec, "pipeline": PipelineSpec,
           "classifier": ClassifierSpec, "report": ReportSpec, "replication": ReplicationSpec}

#: The pipeline keys a spec may list several values of (a sweep), in arm-name order.
_SWEEPABLE = ("scheduler", "steps", "guidance_scale")


def _arm_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


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


# Keys added since run folders began, per table ("" is [audit]), with the value that means what a
# spec without the key meant. A stored spec lacks them; the canonical form (and so the fingerprint)
# leaves them out at that value, so adding a key never changes the fingerprint of a run folder
# written before it. Add new keys here, never remove.
_ADDED: dict[str, dict[str, Any]] = {
    "": {"seeds": "derived", "noise": "per_image", "prompt_seeds": {}, "sweep": {},
         "replication": {"published": "", "by": "", "counts": {}, "source": ""}},
    "pipeline": {"generator_device": "cpu", "safety_checker": True},
    "classifier": {"kind": "open_clip", "gate": "clip", "detector": None, "detector_weights": None,
                   "label_map": {}, "crop_size": 224, "crop_margin": 0.25, "keep_first": None, "phrase_sets": []},
}


def _drop_absent(d: dict[str, Any]) -> dict[str, Any]:
    """*d* without the keys of :data:`_ADDED` that hold their absent value."""
    out = dict(d)
    for table, keys in _ADDED.items():
        sub = out if table == "" else out.get(table)
        if not isinstance(sub, dict):
            continue
        sub = dict(sub)
        for k, absent in keys.items():
            if k in sub and (sub[k] == absent or (isinstance(absent, list) and list(sub[k] or []) == absent)):
                del sub[k]
        if table == "":
            out = sub
        else:
            out[table] = sub
    return out


def _canonical_form(d: dict[str, Any]) -> dict[str, Any]:
    """*d* (:meth:`AuditSpec.to_dict`) with every renamed key under its first name and every added
    key at its absent value left out (:data:`_ADDED`)."""
    out = _drop_absent(d)
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
    out = _drop_absent(d)  # keys added since, at their absent value: the same spec with or without them
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
        if isinstance(v, float) and not math.isfinite(v):  # TOML's nan and inf pass every comparison below
            rng = "" if lo is None else (f" of at least {lo}" if hi is None else f" between {lo} and {hi}")
            raise self.err(full, f"{v!r} is not a finite number", f"write a number{rng}")
        if lo is not None and v < lo or hi is not None and v > hi:
            rng = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise self.err(full, f"{v!r} is out of range", f"use a value {rng}")
        return v

    def num(self, t: dict, section: str, key: str, default=None):
        """A numeric key, typed and bounded by :data:`_BOUNDS`."""
        typ, lo, hi = _BOUNDS[f"{section}.{key}"]
        return self.get(t, section, key, typ, default, lo=lo, hi=hi)

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


def _find_csv(r: _Reader, key: str, ref: str, base_dir: Path | None, example: str) -> Path:
    p = Path(ref)
    candidates = [p] if p.is_absolute() else [(base_dir or Path.cwd()) / p, AUDITS_DIR / p]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise r.err(key, f"no such file {ref!r}", f"give a CSV path relative to the spec file, e.g. {example}")
    return found


def _load_csv(r: _Reader, key: str, found: Path, header: str):
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
        raise r.err(key, f"{found} is not a readable CSV table ({_one_line(e)})",
                    f"the CSV needs a header row {header} and one row per entry") from None
    except OSError as e:
        raise r.err(key, f"{found} cannot be read ({e.strerror or e})", "check the file's permissions") from None


def _read_reference(r: _Reader, ref: str, base_dir: Path | None) -> tuple[dict, dict, str]:
    import pandas as pd

    found = _find_csv(r, "prompts.reference", ref, base_dir, "bls_cps_2021_women_share.csv")
    df = _load_csv(r, "prompts.reference", found, "occupation,women_share,year,source")
    missing = [c for c in ("occupation", "women_share") if c not in df.columns]
    if missing:
        raise r.err("prompts.reference", f"{found.name} lacks column(s) {missing}",
                    "the CSV needs columns occupation, women_share (a fraction in [0, 1]), year, source")
    share = pd.to_numeric(df["women_share"], errors="coerce")
    if df.empty:
        raise r.err("prompts.reference", f"{found.name} has a header but no rows",
                    "add one row per occupation: occupation,women_share,year,source")
    if share.isna().any() or ((share < 0) | (share > 1)).any():
        raise r.err("prompts.reference", f"{found.name}: women_share must be a fraction in [0, 1]",
                    "write 86.7% as 0.867")
    values = dict(zip(df["occupation"].astype(str), share.astype(float)))
    titles = dict(zip(df["occupation"].astype(str), df.get("bls_title", df["occupation"]).astype(str)))
    source = ""
    if "source" in df.columns:
        src = df["source"].dropna().astype(str).unique()
        year = pd.to_numeric(df["year"], errors="coerce") if "year" in df.columns else pd.Series(dtype=float)
        if year.isna().ne(df["year"].isna()).any() if "year" in df.columns else False:
            bad = df.loc[year.isna() & df["year"].notna(), "year"].iloc[0]
            raise r.err("prompts.reference", f"{found.name}: year {bad!r} is not a year",
                        "write the year of the statistics as a number, e.g. 2021")
        if ((year.dropna() != year.dropna().round()) | (year.dropna() < 1800) | (year.dropna() > 2200)).any():
            raise r.err("prompts.reference", f"{found.name}: a year is not a plausible whole year",
                        "write the year of the statistics as a whole number, e.g. 2021")
        yrs = year.dropna().astype(int).astype(str).unique()
        source = "; ".join(src) + (f" ({', '.join(yrs)})" if len(yrs) else "")
    return values, titles, source


def _num_at(r: _Reader, t: dict, section: str, key: str, at: str, default=None):
    """:meth:`_Reader.num` for one element of a list (*at* = ``"[i]"`` names it in the error)."""
    try:
        return r.num(t, section, key, default)
    except SpecError as e:
        if not at:
            raise
        raise SpecError(e.source, f"{e.key}{at}", e.problem, e.fix) from None


_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def _check_entry_point(r: _Reader, key: str, value: str, what: str, example: str) -> None:
    if not _ENTRY.fullmatch(value):
        raise r.err(key, f"{value!r} is not a 'module:callable' name of {what}",
                    f"name an importable factory, e.g. {example!r} (see docs/howto/audit.md)")


def _read_prompt_seeds(r: _Reader, ref: str, base_dir: Path | None) -> dict[str, int]:
    """``audit.seeds`` as a CSV: one seed per prompt (columns ``prompt`` and ``evaluation_seed`` or ``seed``)."""
    import pandas as pd

    if not ref.lower().endswith(".csv"):
        raise r.err("audit.seeds", f"unknown seed scheme {ref!r}",
                    "use 'derived', 'counting', or a CSV file of per-prompt seeds (columns prompt, evaluation_seed)")
    found = _find_csv(r, "audit.seeds", ref, base_dir, "uce_sd14_original_bias.csv")
    df = _load_csv(r, "audit.seeds", found, "prompt,evaluation_seed")
    col = "evaluation_seed" if "evaluation_seed" in df.columns else "seed"
    if "prompt" not in df.columns or col not in df.columns:
        raise r.err("audit.seeds", f"{found.name} lacks a prompt or a seed column",
                    "the CSV needs columns prompt and evaluation_seed (or seed)")
    seeds = pd.to_numeric(df[col], errors="coerce")
    if seeds.isna().any() or (seeds != seeds.round()).any() or (seeds < 0).any() or (seeds > MAX_SEED).any():
        bad = df.loc[seeds.isna() | (seeds != seeds.round()) | (seeds < 0) | (seeds > MAX_SEED), col].iloc[0]
        raise r.err("audit.seeds", f"{found.name}: seed {bad!r} is not a whole number in [0, {MAX_SEED}]",
                    "give every prompt a whole, non-negative seed")
    prompts = df["prompt"].astype(str)
    if prompts.duplicated().any():
        raise r.err("audit.seeds", f"{found.name}: the prompt {prompts[prompts.duplicated()].iloc[0]!r} has two rows",
                    "give each prompt one seed")
    return dict(zip(prompts, seeds.astype(int).tolist()))


def _read_replication(r: _Reader, t: dict, base_dir: Path | None) -> ReplicationSpec:
    """``[replication] published``: Fair Diffusion's counts (columns ``occupation, man, woman``) or
    UCE's per-prompt shares (``prompt, male_bias``, 10 images each), as key → (n_female, n)."""
    import pandas as pd

    ref = r.get(t, "replication", "published", str, "")
    if not ref:
        return ReplicationSpec()
    found = _find_csv(r, "replication.published", ref, base_dir, "fair_diffusion_sd15_fairface.csv")
    df = _load_csv(r, "replication.published", found, "occupation,man,woman,source (or prompt,male_bias)")
    source = "; ".join(df["source"].dropna().astype(str).unique()) if "source" in df.columns else ""
    if {"occupation", "man", "woman"} <= set(df.columns):
        man, woman = (pd.to_numeric(df[c], errors="coerce") for c in ("man", "woman"))
        if man.isna().any() or woman.isna().any() or (man < 0).any() or (woman < 0).any():
            raise r.err("replication.published", f"{found.name}: man and woman must be counts",
                        "write whole, non-negative numbers of images")
        counts = {str(o): (int(w), int(w) + int(m)) for o, m, w in zip(df["occupation"], man, woman)}
        return ReplicationSpec(published=found.name, by="occupation", counts=counts, source=source)
    if {"prompt", "male_bias"} <= set(df.columns):
        from .published import UCE_IMAGES_PER_PROMPT

        share = pd.to_numeric(df["male_bias"], errors="coerce")
        k = share * UCE_IMAGES_PER_PROMPT
        if share.isna().any() or ((k - k.round()).abs() > 1e-6).any() or (share < 0).any() or (share > 1).any():
            raise r.err("replication.published", f"{found.name}: male_bias must be a share of "
                        f"{UCE_IMAGES_PER_PROMPT} images", "write 3 of 10 as 0.3")
        counts = {str(p): (UCE_IMAGES_PER_PROMPT - int(round(x)), UCE_IMAGES_PER_PROMPT)
                  for p, x in zip(df["prompt"], k)}
        return ReplicationSpec(published=found.name, by="prompt", counts=counts, source=source)
    raise r.err("replication.published", f"{found.name} has neither occupation,man,woman nor prompt,male_bias columns",
                "give Fair Diffusion's counts per occupation or UCE's male_bias per prompt (see diffkit/audits/)")


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
    seed = r.num(a, "audit", "seed", _default(AuditSpec, "seed"))
    n_img = r.num(a, "audit", "images_per_prompt", _default(AuditSpec, "images_per_prompt"))
    batch = r.num(a, "audit", "batch_size", _default(AuditSpec, "batch_size"))
    desc = r.get(a, "audit", "description", str, _default(AuditSpec, "description"))
    seeds = r.get(a, "audit", "seeds", str, _default(AuditSpec, "seeds"))
    noise = r.get(a, "audit", "noise", str, _default(AuditSpec, "noise"))
    if noise not in ("per_image", "per_prompt"):
        raise r.err("audit.noise", f"unknown noise scheme {noise!r}",
                    "use 'per_image' (each image its own generator) or 'per_prompt' (one batch of latents per prompt)")

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
                           images_per_prompt=r.num(c, "controls", "images_per_prompt", max(1, n_img // 2)))

    # pipeline
    pp = r.table("pipeline", required=True)
    size_h = r.num(pp, "pipeline", "height", _default(PipelineSpec, "height"))
    size_w = r.num(pp, "pipeline", "width", _default(PipelineSpec, "width"))
    for key, v in (("height", size_h), ("width", size_w)):
        if v is not None and v % 8:
            raise r.err(f"pipeline.{key}", f"{v} is not a multiple of 8", f"use {v - v % 8 or 8} or {v - v % 8 + 8}")
    dtype = r.get(pp, "pipeline", "dtype", str, _default(PipelineSpec, "dtype"))
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise r.err("pipeline.dtype", f"unknown dtype {dtype!r}", "use float32, float16 or bfloat16")
    sweep: dict[str, tuple] = {}

    def sweepable(key: str, read):
        """A key that may hold one value or a list of them (a sweep: one arm per value)."""
        v = pp.get(key)
        if not isinstance(v, list):
            return read(pp)
        if not v:
            raise r.err(f"pipeline.{key}", "empty list", "give one value, or a list of values to sweep over")
        values = tuple(read({key: x}, f"[{i}]") for i, x in enumerate(v))
        if len(set(values)) != len(values):
            dup = next(x for x in values if values.count(x) > 1)
            raise r.err(f"pipeline.{key}", f"{dup!r} is listed twice", "list each value of the sweep once")
        if len(values) > 1:
            sweep[key] = values
        return values[0]

    def scheduler_of(t: dict, at: str = ""):
        v = r.get(t, "pipeline", "scheduler", str, _default(PipelineSpec, "scheduler")) or None
        if v is not None:
            from ..pipeline import SCHEDULERS

            if v not in SCHEDULERS and v not in SCHEDULERS.values():
                raise r.err(f"pipeline.scheduler{at}", f"unknown scheduler {v!r}", f"use one of {sorted(SCHEDULERS)}")
        return v

    sched = sweepable("scheduler", scheduler_of)
    steps = sweepable("steps", lambda t, at="": _num_at(r, t, "pipeline", "steps", at, _default(PipelineSpec, "steps")))
    guidance = sweepable("guidance_scale", lambda t, at="": _num_at(
        r, t, "pipeline", "guidance_scale", at, _default(PipelineSpec, "guidance_scale")))
    if "scheduler" in sweep and any(x is None for x in sweep["scheduler"]):
        raise r.err("pipeline.scheduler", "an empty scheduler name in the sweep", "name each scheduler")
    gen_dev = r.get(pp, "pipeline", "generator_device", str, _default(PipelineSpec, "generator_device"))
    if gen_dev not in ("cpu", "pipeline"):
        raise r.err("pipeline.generator_device", f"unknown generator device {gen_dev!r}",
                    "use 'cpu' (the same noise on every machine) or 'pipeline' (the pipeline's device, e.g. CUDA)")
    pipeline = PipelineSpec(
        model=r.get(pp, "pipeline", "model", str, required=True),
        revision=r.get(pp, "pipeline", "revision", str, _default(PipelineSpec, "revision")) or None,
        scheduler=sched,
        steps=steps,
        guidance_scale=guidance,
        height=size_h,
        width=size_w,
        dtype=dtype,
        negative_prompt=r.get(pp, "pipeline", "negative_prompt", str, _default(PipelineSpec, "negative_prompt")) or None,
        generator_device=gen_dev,
        safety_checker=r.get(pp, "pipeline", "safety_checker", bool, _default(PipelineSpec, "safety_checker")),
    )

    # classifier
    cl = r.table("classifier")
    default = ClassifierSpec()
    kind = r.get(cl, "classifier", "kind", str, default.kind)
    if kind not in LABELLER_KINDS:
        raise r.err("classifier.kind", f"unknown labeller kind {kind!r}", f"use one of {list(LABELLER_KINDS)}")
    gate = r.get(cl, "classifier", "gate", str, "faces" if kind == "face_crop" else default.gate)
    if gate not in GATES:
        raise r.err("classifier.gate", f"unknown gate {gate!r}", f"use one of {list(GATES)}")
    if kind == "face_crop" and gate == "clip":
        raise r.err("classifier.gate", "a face-crop classifier has no CLIP person gate",
                    "use gate = 'faces' (the detector's count) or 'none'")
    labels_raw = cl.get("labels", {k: list(v) for k, v in default.labels.items()})
    if not isinstance(labels_raw, dict):
        raise r.err("classifier.labels", "expected a table", "write [classifier.labels] female = [...] male = [...]")
    need = set(default.labels)
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
    if kind == "open_clip" and cmodel not in ("tiny", "tiny-weak") and ":" not in cmodel and pretrained is None:
        raise r.err("classifier.pretrained", f"missing for open_clip model {cmodel!r}",
                    "name the weights, e.g. pretrained = 'laion2b_s34b_b79k' (see open_clip.list_pretrained()), "
                    "or use a 'local-dir:/folder' or 'hf-hub:org/name' model")
    detector = r.get(cl, "classifier", "detector", str, default.detector) or None
    if kind == "face_crop":
        _check_entry_point(r, "classifier.model", cmodel, "a torch module (FairFace-style)",
                           "diffkit.audit.faces:fairface")
    if detector is not None:
        _check_entry_point(r, "classifier.detector", detector, "a face detector", "diffkit.audit.faces:dlib_cnn")
    elif gate == "faces" or kind == "face_crop":
        raise r.err("classifier.detector", "missing", "name the face detector, e.g. detector = "
                    "'diffkit.audit.faces:dlib_cnn' with detector_weights = '/path/mmod_human_face_detector.dat'")
    label_map_raw = cl.get("label_map", {})
    if not isinstance(label_map_raw, dict):
        raise r.err("classifier.label_map", "expected a table", "write label_map = { female = 8, male = 7 }")
    label_map: dict[str, int] = {}
    for k in label_map_raw:
        if k not in GENDER_CLASSES:
            raise r.err(f"classifier.label_map.{k}", "unknown class", "give the output index of female and male")
        label_map[k] = r.get(label_map_raw, "classifier.label_map", k, int, lo=0, hi=100_000)
    if kind == "face_crop" and set(label_map) != set(GENDER_CLASSES):
        raise r.err("classifier.label_map", f"needs female and male, got {sorted(label_map)}",
                    "give the classifier's output index of each, e.g. label_map = { female = 8, male = 7 } (FairFace)")
    if label_map and label_map["female"] == label_map.get("male"):
        raise r.err("classifier.label_map", "female and male name the same output", "give two different indices")
    phrase_sets = r.strings(cl, "classifier", "phrase_sets", (), nonempty=False) or ()
    for i, name in enumerate(phrase_sets):
        if name not in PHRASE_SETS:
            raise r.err(f"classifier.phrase_sets[{i}]", f"unknown phrase set {name!r}", f"use some of {sorted(PHRASE_SETS)}")
    if phrase_sets and kind != "open_clip":
        raise r.err("classifier.phrase_sets", "phrase sets are text prompts for a CLIP judge",
                    "remove them, or use kind = 'open_clip'")
    classifier = ClassifierSpec(
        kind=kind,
        model=cmodel,
        pretrained=pretrained,
        templates=cl_templates,
        labels=labels,
        person_threshold=r.num(cl, "classifier", "person_threshold", default.person_threshold),
        abstain_below=r.num(cl, "classifier", "abstain_below", default.abstain_below),
        batch_size=r.num(cl, "classifier", "batch_size", default.batch_size),
        gate=gate,
        detector=detector,
        detector_weights=r.get(cl, "classifier", "detector_weights", str, default.detector_weights) or None,
        label_map=label_map,
        crop_size=r.num(cl, "classifier", "crop_size", default.crop_size),
        crop_margin=r.num(cl, "classifier", "crop_margin", default.crop_margin),
        keep_first=r.num(cl, "classifier", "keep_first", default.keep_first),
        phrase_sets=phrase_sets,
    )
    if classifier.keep_first is not None:
        if classifier.keep_first > n_img:
            raise r.err("classifier.keep_first", f"{classifier.keep_first} is more than the {n_img} images per prompt",
                        f"generate more (audit.images_per_prompt ≥ {classifier.keep_first}, as a cap) or keep fewer")
        if gate == "none":
            raise r.err("classifier.keep_first", "keeps the first images the gate passes, but gate = 'none'",
                        "use a gate ('clip' or 'faces'), or remove keep_first")

    rp = r.table("report")
    report = ReportSpec(
        n_boot=r.num(rp, "report", "n_boot", _default(ReportSpec, "n_boot")),
        ci=r.num(rp, "report", "ci", _default(ReportSpec, "ci")),
        seed=r.num(rp, "report", "seed", _default(ReportSpec, "seed")),
        thumbnails_per_prompt=r.num(rp, "report", "thumbnails_per_prompt", _default(ReportSpec, "thumbnails_per_prompt")),
    )
    replication = _read_replication(r, r.table("replication"), base_dir)
    prompt_seeds: dict[str, int] = {}
    if seeds not in ("derived", "counting"):
        prompt_seeds = _read_prompt_seeds(r, seeds, base_dir)
    elif noise == "per_prompt":
        raise r.err("audit.noise", "'per_prompt' draws one batch of latents from each prompt's own seed",
                    "give audit.seeds a CSV of per-prompt seeds (columns prompt, evaluation_seed), or use 'per_image'")
    spec = AuditSpec(name=name, seed=seed, images_per_prompt=n_img, batch_size=batch, prompts=prompts,
                     controls=controls, pipeline=pipeline, classifier=classifier, report=report, source=source,
                     description=desc, replication=replication, seeds=seeds, noise=noise, prompt_seeds=prompt_seeds,
                     sweep=sweep)
    if prompt_seeds:
        from .prompts import build_prompts

        lacking = [p for p in build_prompts(spec)["prompt"] if p not in prompt_seeds]
        if lacking:
            raise r.err("audit.seeds", f"{seeds} has no seed for the prompt {lacking[0]!r} ({len(lacking)} prompt(s) lack one)",
                        "add a row for every prompt the spec makes (controls included), or use seeds = 'derived'")
    total = spec_image_count(spec)
    if total > MAX_IMAGES:
        raise r.err("audit.images_per_prompt", f"the spec asks for {total:,} images, over the {MAX_IMAGES:,} one run "
                    "folder holds", "lower images_per_prompt (or controls.images_per_prompt), or split the audit "
                    "into several specs")
    return spec


def spec_image_count(spec: AuditSpec) -> int:
    """How many images *spec* generates: each template × the attribute values it uses × images
    per prompt, controls (× their gender words) included; what :func:`~diffkit.audit.prompts.build_prompts` builds."""
    attrs = spec.prompts.attributes

    def prompts_of(template: str) -> int:
        used = {f[2:] if f.startswith("a_") else f for f in template_fields(template)}
        return math.prod(len(v) for k, v in attrs.items() if k in used)

    n_words = sum(len(v) for v in spec.controls.gender_words.values())
    return (sum(prompts_of(t) for t in spec.prompts.templates) * spec.images_per_prompt
            + sum(prompts_of(t) for t in spec.controls.templates) * n_words * spec.controls.images_per_prompt)


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
    r = _Reader({}, source)
    for key in _BOUNDS:  # a run folder is input: its stored numbers are checked as a TOML spec's are
        section, name = key.split(".")
        value = getattr(spec if section == "audit" else getattr(spec, section), name)
        if value is not None:
            try:
                r.num({name: value}, section, name)
            except SpecError as e:
                raise SpecError(source, e.key, e.problem, _STORED_FIX) from None
    if not isinstance(spec.sweep, dict) or set(spec.sweep) - set(_SWEEPABLE):
        raise SpecError(source, "sweep", f"not a sweep of {list(_SWEEPABLE)}", _STORED_FIX)
    for key, values in spec.sweep.items():
        for i, v in enumerate(values):
            try:
                if key == "scheduler":
                    r.get({key: v}, "pipeline", key, str)
                else:
                    _num_at(r, {key: v}, "pipeline", key, f"[{i}]")
            except SpecError as e:
                raise SpecError(source, e.key, e.problem, _STORED_FIX) from None
    return AuditSpec(**{**spec.__dict__, "source": source})
