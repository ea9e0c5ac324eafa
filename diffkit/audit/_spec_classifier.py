"""Reading ``[classifier]``: the labeller (open_clip zero-shot or face crops), its person gate,
its phrases and its face detector; one step per concern, in the order the checks run."""

from __future__ import annotations

import string

from ..i18n import gettext as _
from ._spec_reader import SpecReader, check_entry_point
from ._spec_schema import GATES, GENDER_CLASSES, LABELLER_KINDS, PHRASE_SETS, ClassifierSpec

__all__ = ["read_classifier"]


def read_classifier(r: SpecReader, n_img: int) -> ClassifierSpec:
    """``[classifier]``: the labeller, its gate and its phrases."""
    cl = r.table("classifier")
    default = ClassifierSpec()
    kind, gate = _kind_and_gate(r, cl, default)
    labels, cl_templates = _labels_and_templates(r, cl, default)
    cmodel = r.get(cl, "classifier", "model", str, default.model)
    pretrained = r.get(cl, "classifier", "pretrained", str, default.pretrained) or None
    if kind == "open_clip" and cmodel not in ("tiny", "tiny-weak") and ":" not in cmodel and pretrained is None:
        raise r.err(
            "classifier.pretrained",
            _("missing for open_clip model {model!r}").format(model=cmodel),
            _(
                "name the weights, e.g. pretrained = 'laion2b_s34b_b79k' (see open_clip.list_pretrained()), "
                "or use a 'local-dir:/folder' or 'hf-hub:org/name' model"
            ),
        )
    detector = _detector(r, cl, default, kind, gate, cmodel)
    label_map = _label_map(r, cl, kind)
    phrase_sets = r.strings(cl, "classifier", "phrase_sets", (), nonempty=False) or ()
    for i, name in enumerate(phrase_sets):
        if name not in PHRASE_SETS:
            raise r.err(
                f"classifier.phrase_sets[{i}]",
                _("unknown phrase set {name!r}").format(name=name),
                _("use some of {names}").format(names=sorted(PHRASE_SETS)),
            )
    if phrase_sets and kind != "open_clip":
        raise r.err(
            "classifier.phrase_sets",
            _("phrase sets are text prompts for a CLIP judge"),
            _("remove them, or use kind = 'open_clip'"),
        )
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
    _check_keep_first(r, classifier, n_img)
    return classifier


def _kind_and_gate(r: SpecReader, cl: dict, default: ClassifierSpec) -> tuple[str, str]:
    kind = r.get(cl, "classifier", "kind", str, default.kind)
    if kind not in LABELLER_KINDS:
        raise r.err(
            "classifier.kind",
            _("unknown labeller kind {kind!r}").format(kind=kind),
            _("use one of {names}").format(names=list(LABELLER_KINDS)),
        )
    gate = r.get(cl, "classifier", "gate", str, "faces" if kind == "face_crop" else default.gate)
    if gate not in GATES:
        raise r.err(
            "classifier.gate",
            _("unknown gate {gate!r}").format(gate=gate),
            _("use one of {names}").format(names=list(GATES)),
        )
    if kind == "face_crop" and gate == "clip":
        raise r.err(
            "classifier.gate",
            _("a face-crop classifier has no CLIP person gate"),
            _("use gate = 'faces' (the detector's count) or 'none'"),
        )
    return kind, gate


def _labels_and_templates(r: SpecReader, cl: dict, default: ClassifierSpec) -> tuple[dict, tuple[str, ...]]:
    """``classifier.labels`` (phrases per class) and ``classifier.templates`` (each with one ``{}``)."""
    labels_raw = cl.get("labels", {k: list(v) for k, v in default.labels.items()})
    if not isinstance(labels_raw, dict):
        raise r.err(
            "classifier.labels", _("expected a table"), _("write [classifier.labels] female = [...] male = [...]")
        )
    need = set(default.labels)
    extra = sorted(set(labels_raw) - need)
    if extra:
        raise r.err(
            f"classifier.labels.{extra[0]}", _("unknown class"), _("use the classes {names}").format(names=sorted(need))
        )
    labels = {k: r.strings(labels_raw, "classifier.labels", k, default.labels[k]) for k in sorted(need)}
    cl_templates = r.strings(cl, "classifier", "templates", list(default.templates))
    for i, t in enumerate(cl_templates):
        try:
            fields = [f for _lit, f, _spec, _conv in string.Formatter().parse(t) if f is not None]
        except ValueError:
            fields = None
        if fields != [""]:
            raise r.err(
                f"classifier.templates[{i}]",
                _("{template!r} must hold exactly one {{}}").format(template=t),
                _("write label templates open_clip-style, e.g. 'a photo of a {}.'"),
            )
    return labels, cl_templates


def _detector(r: SpecReader, cl: dict, default: ClassifierSpec, kind: str, gate: str, cmodel: str) -> str | None:
    """``classifier.detector`` (and the face-crop model's entry point), required by a face gate."""
    detector = r.get(cl, "classifier", "detector", str, default.detector) or None
    if kind == "face_crop":
        check_entry_point(
            r, "classifier.model", cmodel, "a torch module (FairFace-style)", "diffkit.audit.faces:fairface"
        )
    if detector is not None:
        check_entry_point(r, "classifier.detector", detector, "a face detector", "diffkit.audit.faces:dlib_cnn")
    elif gate == "faces" or kind == "face_crop":
        raise r.err(
            "classifier.detector",
            _("missing"),
            _(
                "name the face detector, e.g. detector = "
                "'diffkit.audit.faces:dlib_cnn' with detector_weights = '/path/mmod_human_face_detector.dat'"
            ),
        )
    return detector


def _label_map(r: SpecReader, cl: dict, kind: str) -> dict[str, int]:
    """``classifier.label_map``: a face-crop classifier's output index of female and male."""
    label_map_raw = cl.get("label_map", {})
    if not isinstance(label_map_raw, dict):
        raise r.err("classifier.label_map", _("expected a table"), _("write label_map = { female = 8, male = 7 }"))
    label_map: dict[str, int] = {}
    for k in label_map_raw:
        if k not in GENDER_CLASSES:
            raise r.err(f"classifier.label_map.{k}", _("unknown class"), _("give the output index of female and male"))
        label_map[k] = r.get(label_map_raw, "classifier.label_map", k, int, lo=0, hi=100_000)
    if kind == "face_crop" and set(label_map) != set(GENDER_CLASSES):
        raise r.err(
            "classifier.label_map",
            _("needs female and male, got {keys}").format(keys=sorted(label_map)),
            _("give the classifier's output index of each, e.g. label_map = { female = 8, male = 7 } (FairFace)"),
        )
    if label_map and label_map["female"] == label_map.get("male"):
        raise r.err("classifier.label_map", _("female and male name the same output"), _("give two different indices"))
    return label_map


def _check_keep_first(r: SpecReader, classifier: ClassifierSpec, n_img: int) -> None:
    if classifier.keep_first is not None:
        if classifier.keep_first > n_img:
            raise r.err(
                "classifier.keep_first",
                _("{keep} is more than the {n} images per prompt").format(keep=classifier.keep_first, n=n_img),
                _("generate more (audit.images_per_prompt ≥ {keep}, as a cap) or keep fewer").format(
                    keep=classifier.keep_first
                ),
            )
        if classifier.gate == "none":
            raise r.err(
                "classifier.keep_first",
                _("keeps the first images the gate passes, but gate = 'none'"),
                _("use a gate ('clip' or 'faces'), or remove keep_first"),
            )
