"""Audit specs: one TOML file fixes everything about a run.

A spec has seven tables. Only ``[prompts]`` and ``[pipeline]`` are required::

    [audit]       name, seed, images_per_prompt, batch_size, seeds, noise
    [prompts]     templates, attributes.occupation (+ adjective, activity, …), reference, language
    [controls]    templates that state the gender, gender_words, images_per_prompt, language
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

``prompts.language`` names the language the templates are written in (ISO 639-1, default ``"en"``):
one code for all, or a list with one per template (a spec for a real model may audit across
languages, as MAGBIG does); ``controls.language`` is the same unless given. The prompt table, the
per-image and per-prompt tables and the report carry each prompt's language (:mod:`._spec_language`).

Every error is a :class:`SpecError` that names the file, the key and the fix::

    audits/x.toml: prompts.templates[1]: unknown placeholder {job}; fix: use one of
    {occupation}, {a_occupation}

Keys renamed before the first release (one name per concept across diffkit: diffusers'
``guidance_scale``, ``seed`` for every seed): ``pipeline.guidance`` → ``pipeline.guidance_scale``,
``report.random_state`` → ``report.seed``. A TOML spec uses the new names (an old one is an
unknown key). Run folders written before the rename keep their identity
(:meth:`AuditSpec.fingerprint` is computed from a canonical form that writes each renamed key
under its first name) and resume and report as before (:func:`upgrade_spec_dict`).

The pieces: the schema (``_spec_schema``: the dataclasses, defaults and bounds), the strict
reader (``_spec_reader``), the CSV tables a spec names (``_spec_tables``), the parser, one step
per table (``_spec_parse``; ``[classifier]`` in ``_spec_classifier``), and the history of renamed
and added keys (``_spec_compat``).

Examples
--------
>>> spec = load_spec("tiny_default")          # the bundled default (audits/tiny_default.toml)
>>> spec.pipeline.model
'tiny'
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from ._spec_compat import upgrade_spec_dict
from ._spec_language import check_language
from ._spec_parse import parse_spec
from ._spec_reader import SpecReader, num_at
from ._spec_schema import (
    AUDITS_DIR,
    BOUNDS,
    GATES,
    GENDER_CLASSES,
    LABELLER_KINDS,
    MAX_GUIDANCE,
    MAX_IMAGES,
    PHRASE_SETS,
    SWEEPABLE,
    TABLES,
    AuditSpec,
    ClassifierSpec,
    ControlSpec,
    PipelineSpec,
    PromptSpec,
    ReplicationSpec,
    ReportSpec,
    SpecError,
    spec_image_count,
    template_fields,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the backport
    import tomli as tomllib

__all__ = [
    "AUDITS_DIR",
    "GATES",
    "GENDER_CLASSES",
    "LABELLER_KINDS",
    "MAX_GUIDANCE",
    "MAX_IMAGES",
    "PHRASE_SETS",
    "AuditSpec",
    "ClassifierSpec",
    "ControlSpec",
    "PipelineSpec",
    "PromptSpec",
    "ReplicationSpec",
    "ReportSpec",
    "SpecError",
    "bundled_specs",
    "load_spec",
    "parse_spec",
    "spec_from_dict",
    "spec_image_count",
    "template_fields",
    "tour_spec",
    "upgrade_spec_dict",
]


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
            str(path),
            "(file)",
            "no such spec file",
            f"pass a path to a .toml spec or one of the bundled names {bundled_specs()}",
        )
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise SpecError(
            str(p),
            "(file)",
            f"cannot be read ({e.strerror or e})",
            "check the file's permissions, or pass another spec",
        ) from None
    try:
        data = tomllib.loads(raw.decode("utf-8-sig"))  # a byte-order mark (Windows editors) is not TOML's business
    except UnicodeDecodeError as e:
        raise SpecError(
            str(p),
            "(file)",
            f"not UTF-8 text ({e.reason} at byte {e.start})",
            "save the spec as UTF-8 text (a TOML file; see audits/tiny_default.toml)",
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(p), "(syntax)", f"not valid TOML ({e})", "correct the TOML syntax at that line") from None
    return parse_spec(data, source=str(p), base_dir=p.parent).with_model(model)


def tour_spec() -> AuditSpec:
    """The tour's small audit (notebook 00): ``tiny_default`` cut to one template and three
    occupations (nurse, pilot, teacher), 6 images per prompt and 2 per control, named ``tour_small``.
    One definition for the notebook and ``diffkit course warm``, so the warmed run is the one it reads.
    """
    from dataclasses import replace

    spec = load_spec("tiny_default")
    prompts = replace(
        spec.prompts,
        templates=spec.prompts.templates[:1],
        attributes={"occupation": ("nurse", "pilot", "teacher")},
    )
    return replace(
        spec,
        name="tour_small",
        images_per_prompt=6,
        prompts=prompts,
        controls=replace(spec.controls, images_per_prompt=2),
    )


def guidance_lesson_spec() -> AuditSpec:
    """Notebook 05's guidance lesson: ``tiny_guidance_sweep`` (guidance 1, 2, 4 and 7.5, the same
    prompts and seeds in every arm) cut to CEO, teacher and pharmacist, 8 images each per arm
    (96 images), named ``guidance_lesson``. One definition for the notebook and ``diffkit course warm``.
    """
    from dataclasses import replace

    spec = load_spec("tiny_guidance_sweep")
    prompts = replace(spec.prompts, attributes={"occupation": ("CEO", "teacher", "pharmacist")})
    return replace(
        spec,
        name="guidance_lesson",
        description="diffkit-tiny at guidance 1, 2, 4 and 7.5 on CEO, teacher and pharmacist (notebook 05)",
        prompts=prompts,
    )


#: The fix every error in a stored spec names.
STORED_FIX = "the stored spec was edited or written by another diffkit; rerun the audit into a new folder"


def _thaw(value: Any) -> Any:
    """JSON lists back to the tuples the dataclasses hold (also inside dicts)."""
    if isinstance(value, list):
        return tuple(_thaw(v) for v in value)
    if isinstance(value, dict):
        return {k: _thaw(v) for k, v in value.items()}
    return value


def _from_dict(cls, d: Any, key: str, source: str) -> Any:
    if not isinstance(d, dict):
        raise SpecError(source, key, f"expected a table, got {type(d).__name__}", STORED_FIX)
    kwargs = {}
    for f in fields(cls):
        if f.name == "source" or f.name not in d:
            continue
        sub = TABLES.get(f.name) if cls is AuditSpec else None
        kwargs[f.name] = _from_dict(sub, d[f.name], f.name, source) if sub else _thaw(d[f.name])
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise SpecError(source, f"{key}.{unknown[0]}" if key else unknown[0], "unknown key", STORED_FIX)
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise SpecError(source, key or "(spec)", f"incomplete ({e})", STORED_FIX) from None


def spec_from_dict(d: dict[str, Any], *, source: str = "<run>") -> AuditSpec:
    """Rebuild an :class:`AuditSpec` from :meth:`AuditSpec.to_dict` (as stored in a run folder).

    Read through the same dataclasses as :func:`parse_spec`; a dict that does not fit them
    raises :class:`SpecError`. A spec stored before a key was renamed (``pipeline.guidance``,
    ``report.random_state``) is read under the current names (:func:`upgrade_spec_dict`).
    """
    spec = _from_dict(AuditSpec, upgrade_spec_dict(d), "", source)
    r = SpecReader({}, source)
    for key in BOUNDS:  # a run folder is input: its stored numbers are checked as a TOML spec's are
        section, name = key.split(".")
        value = getattr(spec if section == "audit" else getattr(spec, section), name)
        if value is not None:
            try:
                r.num({name: value}, section, name)
            except SpecError as e:
                raise SpecError(source, e.key, e.problem, STORED_FIX) from None
    for table in (spec.prompts, spec.controls):
        language, problem, _ = check_language(table.language, len(table.templates))
        if language is None:
            key = "prompts" if table is spec.prompts else "controls"
            raise SpecError(source, f"{key}.language", problem, STORED_FIX)
    if not isinstance(spec.sweep, dict) or set(spec.sweep) - set(SWEEPABLE):
        raise SpecError(source, "sweep", f"not a sweep of {list(SWEEPABLE)}", STORED_FIX)
    for key, values in spec.sweep.items():
        for i, v in enumerate(values):
            try:
                if key == "scheduler":
                    r.get({key: v}, "pipeline", key, str)
                else:
                    num_at(r, {key: v}, "pipeline", key, f"[{i}]")
            except SpecError as e:
                raise SpecError(source, e.key, e.problem, STORED_FIX) from None
    return AuditSpec(**{**spec.__dict__, "source": source})
