"""The spec's schema, once: one frozen dataclass per TOML table, its defaults, its bounds.

Each field is a TOML key of its table, with its default here and nowhere else (the parser reads
defaults through :func:`default_of`); fields marked ``DERIVED`` are filled by diffkit (from the
reference table, the file name) and are not TOML keys. Read specs with
:func:`~diffkit.audit.spec.load_spec`; this module only defines what they hold.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from dataclasses import MISSING, asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..checks import MAX_SEED
from ..errors import DiffkitError, InputError
from ..i18n import gettext as _
from ._spec_compat import canonical_form

__all__ = [
    "AUDITS_DIR",
    "BOUNDS",
    "DERIVED",
    "GATES",
    "GENDER_CLASSES",
    "LABELLER_KINDS",
    "MAX_GUIDANCE",
    "MAX_IMAGES",
    "NAME_JUNK",
    "NAME_OK",
    "PHRASE_SETS",
    "SWEEPABLE",
    "TABLES",
    "AuditSpec",
    "ClassifierSpec",
    "ControlSpec",
    "PipelineSpec",
    "PromptSpec",
    "ReplicationSpec",
    "ReportSpec",
    "SpecError",
    "default_of",
    "spec_image_count",
    "template_fields",
    "toml_keys",
]

#: Where the bundled specs and reference tables live: package data (``diffkit/audits/``, read through
#: :mod:`importlib.resources`, so an installed wheel has them); ``audits/`` at the top of a checkout
#: is a link to the same folder.
AUDITS_DIR = Path(str(resources.files("diffkit") / "audits"))

GENDER_CLASSES = ("female", "male")

# audit.name becomes a folder name (out/audit/<name>): no separators, no "..", nothing hidden.
NAME_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
NAME_JUNK = re.compile(r"[^A-Za-z0-9._-]+")


MAX_IMAGES = 1_000_000
"""The most images one run folder holds (a larger audit is split into several specs)."""

MAX_GUIDANCE = 100.0
"""The largest ``pipeline.guidance_scale`` a spec may set: far past it the latents overflow to
NaN or inf and every image comes out black (1–15 is usual)."""


# The numeric keys and their ranges, once: parse_spec reads TOML values through them, and
# spec_from_dict checks a stored spec (a run folder is input: its spec may have been edited).
BOUNDS: dict[str, tuple[type, float | None, float | None]] = {
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


class SpecError(DiffkitError, ValueError):
    """A spec that cannot run; the message names the file, the key and the fix."""

    def __init__(self, source: str, key: str, problem: str, fix: str):
        self.source, self.key, self.problem, self.fix = source, key, problem, fix
        super().__init__(
            _("{source}: {key}: {problem}; fix: {fix}").format(source=source, key=key, problem=problem, fix=fix)
        )


# Field metadata: a field diffkit fills (not a TOML key).
DERIVED = {"toml": False}


@dataclass(frozen=True, kw_only=True)
class PromptSpec:
    """``[prompts]``: format-string templates and the attribute lists that fill them."""

    templates: tuple[str, ...]
    attributes: dict[str, tuple[str, ...]]
    reference: dict[str, float] = field(default_factory=dict)  # TOML: a CSV path; here its women_share column
    reference_titles: dict[str, str] = field(default_factory=dict, metadata=DERIVED)
    reference_source: str = field(default="", metadata=DERIVED)
    # the templates' language (ISO 639-1): one code for all, or one per template (_spec_language)
    language: str | tuple[str, ...] = "en"


@dataclass(frozen=True, kw_only=True)
class ControlSpec:
    """``[controls]``: prompts that state the gender, to measure the classifier."""

    templates: tuple[str, ...] = ()
    gender_words: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"female": ("woman",), "male": ("man",)})
    images_per_prompt: int = 4  # in a TOML spec: half of audit.images_per_prompt unless given
    language: str | tuple[str, ...] = "en"  # in a TOML spec: prompts.language unless given


@dataclass(frozen=True, kw_only=True)
class PipelineSpec:
    """``[pipeline]``: the text-to-image model and how it is called (``guidance_scale`` as in
    diffusers' ``pipe(..., guidance_scale=...)``)."""

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


@dataclass(frozen=True, kw_only=True)
class ReportSpec:
    """``[report]``: the report's level (``ci``) and display settings.

    ``n_boot`` and ``seed`` set the bootstrap of the intervals before they became exact; no
    number depends on them any more. They are still read, and kept in the spec's fingerprint,
    so that run folders written before still resume and report."""

    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    thumbnails_per_prompt: int = 8


@dataclass(frozen=True, kw_only=True)
class ReplicationSpec:
    """``[replication]``: a published audit to read this run beside (see
    :mod:`diffkit.audit.published`). In TOML, ``published`` names a CSV (bundled, or relative to
    the spec); the spec stores its counts, so a run folder carries them."""

    published: str = ""
    by: str = field(default="", metadata=DERIVED)  # "occupation" or "prompt"
    counts: dict[str, tuple[int, int]] = field(default_factory=dict, metadata=DERIVED)  # key → (n_female, n)
    source: str = field(default="", metadata=DERIVED)


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
    source: str = field(default="<spec>", metadata=DERIVED)
    description: str = ""
    seeds: str = "derived"  # "derived", "counting", or (TOML) a CSV of per-prompt seeds
    noise: str = "per_image"  # or "per_prompt"
    prompt_seeds: dict[str, int] = field(default_factory=dict, metadata=DERIVED)  # seeds = a CSV: prompt → seed
    # pipeline keys given as lists: key → values; pipeline.<key> holds the first (see arms())
    sweep: dict[str, tuple] = field(default_factory=dict, metadata=DERIVED)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the resolved spec (reference table included)."""
        d = asdict(self)
        d.pop("source")
        return json.loads(json.dumps(d, sort_keys=True, default=list))

    def fingerprint(self) -> str:
        """sha256 of the resolved spec: two runs may share a folder only if these match.

        Computed from a canonical form of :meth:`to_dict` in which every renamed key is written
        under its first name (``pipeline.guidance``, ``report.random_state``) and every added key
        at its absent value is left out (:mod:`diffkit.audit._spec_compat`), so renaming or adding
        a key never changes the fingerprint of a run folder written before.
        """
        canonical = json.dumps(canonical_form(self.to_dict()), sort_keys=True)
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

        keys = sorted(self.sweep, key=list(SWEEPABLE).index)
        out = []
        for combo in itertools.product(*(self.sweep[k] for k in keys)):
            name = ",".join(f"{k}={_arm_value(v)}" for k, v in zip(keys, combo))
            pipe = PipelineSpec(**{**asdict(self.pipeline), **dict(zip(keys, combo))})
            out.append((name, AuditSpec(**{**self.__dict__, "pipeline": pipe, "sweep": {}})))
        return out


def template_fields(template: str) -> list[str]:
    """The placeholder names in a format-string template (``"{a_occupation} at work"`` → ``["a_occupation"]``)."""
    names = []
    for _lit, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if name == "" or not name.isidentifier() or spec or conv:
            raise InputError(f"placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}}")
        names.append(name)
    return names


#: The sub-tables of a spec and their dataclasses.
TABLES = {
    "prompts": PromptSpec,
    "controls": ControlSpec,
    "pipeline": PipelineSpec,
    "classifier": ClassifierSpec,
    "report": ReportSpec,
    "replication": ReplicationSpec,
}

#: The pipeline keys a spec may list several values of (a sweep), in arm-name order.
SWEEPABLE = ("scheduler", "steps", "guidance_scale")


def _arm_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def toml_keys(cls) -> set[str]:
    """The TOML keys of a table's dataclass: its fields, less the derived ones and the sub-tables."""
    return {f.name for f in fields(cls) if f.metadata.get("toml", True) and not f.metadata.get("table")}


def default_of(cls, name: str) -> Any:
    """The default of field *name* of dataclass *cls* (the one place defaults are written)."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def spec_image_count(spec: AuditSpec) -> int:
    """How many images *spec* generates: each template × the attribute values it uses × images
    per prompt, controls (× their gender words) included; what :func:`~diffkit.audit.prompts.build_prompts` builds."""
    attrs = spec.prompts.attributes

    def prompts_of(template: str) -> int:
        used = {f[2:] if f.startswith("a_") else f for f in template_fields(template)}
        return math.prod(len(v) for k, v in attrs.items() if k in used)

    n_words = sum(len(v) for v in spec.controls.gender_words.values())
    return (
        sum(prompts_of(t) for t in spec.prompts.templates) * spec.images_per_prompt
        + sum(prompts_of(t) for t in spec.controls.templates) * n_words * spec.controls.images_per_prompt
    )
