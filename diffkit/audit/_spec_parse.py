"""From a parsed TOML spec (nested dicts) to an :class:`~diffkit.audit.spec.AuditSpec`: one
step per table, in the order the checks run (the first problem found is the one reported)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..i18n import gettext as _
from ._spec_classifier import read_classifier
from ._spec_language import check_language, template_languages
from ._spec_reader import KNOWN_KEYS, SpecReader, check_templates, num_at
from ._spec_schema import (
    GENDER_CLASSES,
    MAX_IMAGES,
    NAME_JUNK,
    NAME_OK,
    AuditSpec,
    ControlSpec,
    PipelineSpec,
    PromptSpec,
    ReportSpec,
    SpecError,
    default_of,
    spec_image_count,
    template_fields,
)
from ._spec_tables import read_prompt_seeds, read_reference, read_replication

__all__ = ["parse_spec"]


def parse_spec(data: dict, *, source: str = "<spec>", base_dir: str | Path | None = None) -> AuditSpec:
    """Validate a spec already parsed from TOML (a nested dict) and resolve its reference table."""
    if not isinstance(data, dict):
        raise SpecError(
            source,
            "(spec)",
            _("expected a table of tables, got {type}").format(type=type(data).__name__),
            _("write the spec as TOML tables [audit], [prompts], [pipeline] (see audits/tiny_default.toml)"),
        )
    data = copy.deepcopy(data)
    r = SpecReader(data, source)
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise r.err(f"[{unknown[0]}]", _("unknown table"), _("use the tables {names}").format(names=sorted(KNOWN_KEYS)))
    base_dir = Path(base_dir) if base_dir is not None else None
    audit = _read_audit(r, source)
    prompts = _read_prompts(r, base_dir)
    allowed = {n for k in prompts.attributes for n in (k, f"a_{k}")}
    controls = _read_controls(r, allowed, audit["images_per_prompt"], prompts.language)
    pipeline, sweep = _read_pipeline(r)
    classifier = read_classifier(r, audit["images_per_prompt"])
    report = _read_report(r)
    replication = read_replication(r, r.table("replication"), base_dir)
    prompt_seeds: dict[str, int] = {}
    if audit["seeds"] not in ("derived", "counting"):
        prompt_seeds = read_prompt_seeds(r, audit["seeds"], base_dir)
    elif audit["noise"] == "per_prompt":
        raise r.err(
            "audit.noise",
            _("'per_prompt' draws one batch of latents from each prompt's own seed"),
            _("give audit.seeds a CSV of per-prompt seeds (columns prompt, evaluation_seed), or use 'per_image'"),
        )
    spec = AuditSpec(
        **audit,
        prompts=prompts,
        controls=controls,
        pipeline=pipeline,
        classifier=classifier,
        report=report,
        source=source,
        replication=replication,
        prompt_seeds=prompt_seeds,
        sweep=sweep,
    )
    _check_whole(r, spec)
    return spec


def _read_audit(r: SpecReader, source: str) -> dict[str, Any]:
    """``[audit]``: the scalar fields of :class:`AuditSpec`, by name."""
    a = r.table("audit")
    default_name = NAME_JUNK.sub("-", Path(source).stem).strip("-.") if source != "<spec>" else ""
    name = r.get(a, "audit", "name", str, default_name or default_of(AuditSpec, "name"))
    if not NAME_OK.fullmatch(name) or name in (".", ".."):
        slug = NAME_JUNK.sub("-", name).strip("-.") or "my_audit"
        raise r.err(
            "audit.name",
            _("{name!r} is not a plain folder name (it names the run folder out/audit/<name>)").format(name=name),
            _("use letters, digits, '.', '_' and '-' only, at most 100, e.g. name = {example!r}").format(
                example=slug[:100]
            ),
        )
    out = {
        "name": name,
        "seed": r.num(a, "audit", "seed", default_of(AuditSpec, "seed")),
        "images_per_prompt": r.num(a, "audit", "images_per_prompt", default_of(AuditSpec, "images_per_prompt")),
        "batch_size": r.num(a, "audit", "batch_size", default_of(AuditSpec, "batch_size")),
        "description": r.get(a, "audit", "description", str, default_of(AuditSpec, "description")),
        "seeds": r.get(a, "audit", "seeds", str, default_of(AuditSpec, "seeds")),
        "noise": r.get(a, "audit", "noise", str, default_of(AuditSpec, "noise")),
    }
    if out["noise"] not in ("per_image", "per_prompt"):
        raise r.err(
            "audit.noise",
            _("unknown noise scheme {noise!r}").format(noise=out["noise"]),
            _("use 'per_image' (each image its own generator) or 'per_prompt' (one batch of latents per prompt)"),
        )
    return out


def _read_prompts(r: SpecReader, base_dir: Path | None) -> PromptSpec:
    """``[prompts]``: templates, attribute lists and the reference table they are matched against."""
    p = r.table("prompts", required=True)
    templates = r.strings(p, "prompts", "templates", required=True)
    attrs_raw = p.get("attributes", {})
    if not isinstance(attrs_raw, dict):
        raise r.err(
            "prompts.attributes", _("expected a table"), _("write [prompts.attributes] with occupation = [...]")
        )
    attrs_raw = dict(attrs_raw)
    if "occupations" in p:
        attrs_raw.setdefault("occupation", p["occupations"])
    attributes: dict[str, tuple[str, ...]] = {}
    for k in attrs_raw:
        if not k.isidentifier() or k.startswith("a_") or k == "gender":
            raise r.err(
                f"prompts.attributes.{k}",
                _("not a usable attribute name"),
                _("use a plain name such as occupation, adjective or activity"),
            )
        attributes[k] = r.strings(attrs_raw, "prompts.attributes", k)
    ref_values, ref_titles, ref_source = {}, {}, ""
    if "reference" in p:
        ref = r.get(p, "prompts", "reference", str)
        ref_values, ref_titles, ref_source = read_reference(r, ref, base_dir)
        if "occupation" not in attributes:
            attributes["occupation"] = tuple(ref_values)
    if "occupation" not in attributes:
        raise r.err(
            "prompts.attributes.occupation",
            _("missing"),
            _("list the occupations to audit, or set prompts.reference to a CSV whose rows are used"),
        )
    allowed = {n for k in attributes for n in (k, f"a_{k}")}
    check_templates(r, "prompts.templates", templates, allowed)
    language = _read_language(r, p, "prompts", templates, "en")
    if ref_values:
        # matched ignoring case ("ceo" finds the row "CEO", as the published overlay does); an occupation
        # the reference lacks is audited and reported without a reference (p_ref NaN)
        row = {key.casefold(): key for key in ref_values}
        found = [(o, row[o.casefold()]) for o in attributes["occupation"] if o.casefold() in row]
        ref_values = {o: ref_values[key] for o, key in found}
        ref_titles = {o: ref_titles[key] for o, key in found if key in ref_titles}
    return PromptSpec(
        templates=templates,
        attributes=attributes,
        reference=ref_values,
        reference_titles=ref_titles,
        reference_source=ref_source,
        language=language,
    )


def _read_language(r: SpecReader, t: dict, table: str, templates: tuple[str, ...], default) -> str | tuple[str, ...]:
    """``<table>.language``: one ISO 639-1 code, or one per template (:mod:`._spec_language`). A template
    in another language than English may not use ``{a_…}``, which writes an English article."""
    if "language" not in t and default is None:
        raise r.err(
            f"{table}.language",
            _("missing: prompts.language gives one language per prompt template, so it cannot apply here"),
            _("give {table}.language, one code for all its templates or a list with one per template").format(
                table=table
            ),
        )
    value = t.get("language", default)
    language, problem, fix = check_language(value, len(templates))
    if language is None:
        raise r.err(f"{table}.language", problem, fix)
    for i, (tpl, lang) in enumerate(zip(templates, template_languages(language, len(templates)))):
        english = [f for f in template_fields(tpl) if f.startswith("a_")]
        if lang != "en" and english:
            raise r.err(
                f"{table}.templates[{i}]",
                _("{{{field}}} writes an English article ('a nurse') into a template in {language!r}").format(
                    field=english[0], language=lang
                ),
                _("write the article into the template and use {{{field}}} instead").format(field=english[0][2:]),
            )
    return language


def _read_controls(r: SpecReader, allowed: set[str], n_img: int, prompts_language) -> ControlSpec:
    """``[controls]``: templates that state the gender, and the gender words that fill them."""
    c = r.table("controls")
    c_templates = r.strings(c, "controls", "templates", (), nonempty=False) or ()
    gw_raw = c.get("gender_words", default_of(ControlSpec, "gender_words"))
    if not isinstance(gw_raw, dict) or set(gw_raw) != set(GENDER_CLASSES):
        raise r.err(
            "controls.gender_words",
            _("expected keys female and male, got {value!r}").format(value=gw_raw),
            _('write [controls.gender_words] female = ["woman"] male = ["man"]'),
        )
    gender_words = {g: r.strings(gw_raw, "controls.gender_words", g) for g in GENDER_CLASSES}
    check_templates(r, "controls.templates", c_templates, allowed | {"gender", "a_gender"})
    for i, t in enumerate(c_templates):
        if "gender" not in template_fields(t) and "a_gender" not in template_fields(t):
            raise r.err(
                f"controls.templates[{i}]",
                _("{template!r} does not state the gender").format(template=t),
                _("control prompts must contain {gender} (e.g. 'a photo of a {gender} {occupation}')"),
            )
    inherited = prompts_language if isinstance(prompts_language, str) else (None if c_templates else "en")
    return ControlSpec(
        templates=c_templates,
        gender_words=gender_words,
        language=_read_language(r, c, "controls", c_templates, inherited),
        images_per_prompt=r.num(c, "controls", "images_per_prompt", max(1, n_img // 2)),
    )


def _read_pipeline(r: SpecReader) -> tuple[PipelineSpec, dict[str, tuple]]:
    """``[pipeline]``, and its sweep: the keys given as lists (key → values)."""
    pp = r.table("pipeline", required=True)
    size_h = r.num(pp, "pipeline", "height", default_of(PipelineSpec, "height"))
    size_w = r.num(pp, "pipeline", "width", default_of(PipelineSpec, "width"))
    for key, v in (("height", size_h), ("width", size_w)):
        if v is not None and v % 8:
            raise r.err(
                f"pipeline.{key}",
                _("{value} is not a multiple of 8").format(value=v),
                _("use {lo} or {hi}").format(lo=v - v % 8 or 8, hi=v - v % 8 + 8),
            )
    dtype = r.get(pp, "pipeline", "dtype", str, default_of(PipelineSpec, "dtype"))
    if dtype not in (None, "float32", "float16", "bfloat16"):
        raise r.err(
            "pipeline.dtype", _("unknown dtype {dtype!r}").format(dtype=dtype), _("use float32, float16 or bfloat16")
        )
    sweep: dict[str, tuple] = {}
    sched = _sweepable(r, pp, sweep, "scheduler", lambda t, at="": _scheduler(r, t, at))
    steps = _sweepable(
        r, pp, sweep, "steps", lambda t, at="": num_at(r, t, "pipeline", "steps", at, default_of(PipelineSpec, "steps"))
    )
    guidance = _sweepable(
        r,
        pp,
        sweep,
        "guidance_scale",
        lambda t, at="": num_at(r, t, "pipeline", "guidance_scale", at, default_of(PipelineSpec, "guidance_scale")),
    )
    if "scheduler" in sweep and any(x is None for x in sweep["scheduler"]):
        raise r.err("pipeline.scheduler", _("an empty scheduler name in the sweep"), _("name each scheduler"))
    gen_dev = r.get(pp, "pipeline", "generator_device", str, default_of(PipelineSpec, "generator_device"))
    if gen_dev not in ("cpu", "pipeline"):
        raise r.err(
            "pipeline.generator_device",
            _("unknown generator device {device!r}").format(device=gen_dev),
            _("use 'cpu' (the same noise on every machine) or 'pipeline' (the pipeline's device, e.g. CUDA)"),
        )
    pipeline = PipelineSpec(
        model=r.get(pp, "pipeline", "model", str, required=True),
        revision=r.get(pp, "pipeline", "revision", str, default_of(PipelineSpec, "revision")) or None,
        scheduler=sched,
        steps=steps,
        guidance_scale=guidance,
        height=size_h,
        width=size_w,
        dtype=dtype,
        negative_prompt=r.get(pp, "pipeline", "negative_prompt", str, default_of(PipelineSpec, "negative_prompt"))
        or None,
        generator_device=gen_dev,
        safety_checker=r.get(pp, "pipeline", "safety_checker", bool, default_of(PipelineSpec, "safety_checker")),
    )
    return pipeline, sweep


def _sweepable(r: SpecReader, pp: dict, sweep: dict[str, tuple], key: str, read):
    """A key that may hold one value or a list of them (a sweep: one arm per value, recorded in
    *sweep*); returns the first value."""
    v = pp.get(key)
    if not isinstance(v, list):
        return read(pp)
    if not v:
        raise r.err(f"pipeline.{key}", _("empty list"), _("give one value, or a list of values to sweep over"))
    values = tuple(read({key: x}, f"[{i}]") for i, x in enumerate(v))
    if len(set(values)) != len(values):
        dup = next(x for x in values if values.count(x) > 1)
        raise r.err(
            f"pipeline.{key}", _("{value!r} is listed twice").format(value=dup), _("list each value of the sweep once")
        )
    if len(values) > 1:
        sweep[key] = values
    return values[0]


def _scheduler(r: SpecReader, t: dict, at: str = "") -> str | None:
    """``pipeline.scheduler`` (or one element of its list, *at*): a name :data:`~diffkit.pipeline.SCHEDULERS` knows."""
    v = r.get(t, "pipeline", "scheduler", str, default_of(PipelineSpec, "scheduler")) or None
    if v is not None:
        from ..pipeline import SCHEDULERS

        if v not in SCHEDULERS and v not in SCHEDULERS.values():
            raise r.err(
                f"pipeline.scheduler{at}",
                _("unknown scheduler {name!r}").format(name=v),
                _("use one of {names}").format(names=sorted(SCHEDULERS)),
            )
    return v


def _read_report(r: SpecReader) -> ReportSpec:
    rp = r.table("report")
    return ReportSpec(
        n_boot=r.num(rp, "report", "n_boot", default_of(ReportSpec, "n_boot")),
        ci=r.num(rp, "report", "ci", default_of(ReportSpec, "ci")),
        seed=r.num(rp, "report", "seed", default_of(ReportSpec, "seed")),
        thumbnails_per_prompt=r.num(
            rp, "report", "thumbnails_per_prompt", default_of(ReportSpec, "thumbnails_per_prompt")
        ),
    )


def _check_whole(r: SpecReader, spec: AuditSpec) -> None:
    """What only the whole spec shows: a prompt without a seed, too many images for one folder."""
    if spec.prompt_seeds:
        from .prompts import build_prompts

        lacking = [p for p in build_prompts(spec)["prompt"] if p not in spec.prompt_seeds]
        if lacking:
            raise r.err(
                "audit.seeds",
                _("{seeds} has no seed for the prompt {prompt!r} ({n} prompt(s) lack one)").format(
                    seeds=spec.seeds, prompt=lacking[0], n=len(lacking)
                ),
                _("add a row for every prompt the spec makes (controls included), or use seeds = 'derived'"),
            )
    total = spec_image_count(spec)
    if total > MAX_IMAGES:
        raise r.err(
            "audit.images_per_prompt",
            _("the spec asks for {total:,} images, over the {most:,} one run folder holds").format(
                total=total, most=MAX_IMAGES
            ),
            _("lower images_per_prompt (or controls.images_per_prompt), or split the audit into several specs"),
        )
