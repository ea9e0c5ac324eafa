"""Labellers: what turns an image into female / male / abstain / no_person / several_people.

One protocol (:class:`Labeller`), three ways to fill it, chosen by the spec's ``[classifier]``:

* ``kind = "open_clip"`` (the default): a zero-shot CLIP judge, any open_clip model and
  pretrained tag (or ``"tiny"``, or a ``local-dir:`` folder), label phrases and templates from the
  spec (:class:`~diffkit.audit.score.ZeroShotClassifier`). Its person gate is CLIP's own (``gate =
  "clip"``: one person, nobody, several people), a face detector's count (``gate = "faces"``) or
  none (``gate = "none"``: HEIM's and UCE's protocols).
* ``kind = "face_crop"``: a face classifier FairFace-style: a face detector finds the faces,
  the largest is cropped (with ``crop_margin``), resized to ``crop_size`` and fed to any torch
  module whose outputs ``label_map`` names (FairFace's ResNet-34: ``female = 8, male = 7``).
  Its gate is the detector's count.
* ``gate = "faces"`` on an open_clip judge: the detector's count decides nobody / one / several,
  CLIP the gender.

Detectors and face classifiers are named in the spec as ``"module:callable"`` factories, called
with ``weights=`` (``classifier.detector_weights``, ``classifier.pretrained``):

* a **detector** factory returns ``detect(image) -> boxes``: *image* a uint8 ``(H, W, 3)`` array,
  *boxes* a list of ``(x0, y0, x1, y1)`` in pixels (:func:`diffkit.audit.faces.dlib_cnn` wraps
  dlib's CNN detector, Fair Diffusion's);
* a **classifier** factory returns a ``torch.nn.Module`` mapping ``(N, 3, crop_size, crop_size)``
  float images to ``(N, K)`` logits; inputs are normalised with the module's ``mean`` and ``std``
  attributes when it has them, else ImageNet's (FairFace's) (:func:`diffkit.audit.faces.fairface`).

Naming a factory imports its module, as naming an open_clip model loads it: a spec (or a run
folder's stored spec) can only name modules installed in the environment, never a file path.

Every labeller's per-image features are cached by the scorer (per labeller identity and image
sha256), so rescoring with other thresholds costs nothing.
"""

from __future__ import annotations

import hashlib
import importlib
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from ..errors import InputError, MissingPackageError, ModelUnavailableError
from ._clip_judge import ZeroShotClassifier, to_pil
from ._labelling import is_blacked_out, label_rule, mark_blacked_out
from .spec import ClassifierSpec

__all__ = [
    "FaceCountGate",
    "FaceCropClassifier",
    "Labeller",
    "build_labeller",
    "label_images",
    "load_entry_point",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Labeller(Protocol):
    """What :func:`~diffkit.audit.score.score_images` needs of a judge.

    ``model_name`` and ``pretrained`` key the feature cache (a labeller's identity, its weights'
    content hash for local weights); ``spec`` is the ``[classifier]`` table it was built from.
    """

    model_name: str
    pretrained: str
    spec: ClassifierSpec

    @property
    def feature_dim(self) -> int: ...

    def prepare(self, image: Any) -> Any:
        """One RGB PIL image → whatever :meth:`features` batches (runs in a loader thread)."""

    def features(self, prepared: list) -> np.ndarray:
        """``(N, feature_dim)`` float32 features of a batch of :meth:`prepare` outputs (cached)."""

    def classify(self, features: np.ndarray) -> pd.DataFrame:
        """Per image: ``p_person, p_no_person, p_several_people, p_female, p_male, confidence, label``."""


def load_entry_point(name: str, *, key: str = "classifier.model") -> Any:
    """The object named ``"module:callable"`` (importing *module*)."""
    if ":" not in name:
        raise InputError(f"{key}: {name!r} is not a 'module:callable' name; fix: e.g. 'diffkit.audit.faces:fairface'")
    mod_name, attr = name.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise MissingPackageError(
            f"{key}: cannot import {mod_name!r} ({e}); fix: install the package that provides it in this "
            "environment (see docs/howto/audit.md, 'Labellers')"
        ) from e
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise InputError(f"{key}: {mod_name!r} has no {attr!r}; fix: name a callable the module defines") from None


def _gender_frame(
    p_female: np.ndarray, n_faces: np.ndarray, *, abstain_below: float, gate: bool = True
) -> pd.DataFrame:
    """The per-image table of a count gate: 0 faces → no_person, 2+ → several_people, 1 → gender
    (abstain under *abstain_below*); without *gate* every image is read for its gender."""
    n = np.asarray(n_faces, dtype=np.float64)
    one = (n == 1) if gate else np.ones(len(n), dtype=bool)
    p_person = one.astype(np.float64)
    p_several = ((n >= 2) & gate).astype(np.float64)
    p_no = 1.0 - p_person - p_several
    pf = np.nan_to_num(np.asarray(p_female, dtype=np.float64), nan=0.5)
    conf, label = label_rule(
        p_person, pf, person_threshold=0.5, abstain_below=abstain_below, p_several_people=p_several, p_no_person=p_no
    )
    pf = np.where(np.isnan(np.asarray(p_female, dtype=np.float64)), np.nan, pf)
    with np.errstate(divide="ignore", invalid="ignore"):  # p_female 0 or 1: an infinite logit, as it is
        logit = np.log(pf) - np.log1p(-pf)
    return pd.DataFrame(
        {
            "p_person": p_person,
            "p_no_person": p_no,
            "p_several_people": p_several,
            "p_female": pf,
            "p_male": 1 - pf,
            "confidence": conf,
            "label": label,
            "gender_logit": logit,
            "person_logit": np.nan,
            "n_faces": n,
        }
    )


def _module_hash(module: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _file_tag(path: str | None) -> str:
    """A short content hash of a weights file (or its name when it is not a file)."""
    import os

    if not path:
        return "none"
    if os.path.isfile(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()[:16]
    return str(path)


def _make_detector(spec: ClassifierSpec):
    factory = load_entry_point(spec.detector, key="classifier.detector")
    try:
        return factory(weights=spec.detector_weights)
    except (MissingPackageError, ModelUnavailableError):
        raise
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelUnavailableError(
            f"classifier.detector: {spec.detector!r} could not be built with weights {spec.detector_weights!r} "
            f"({type(e).__name__}: {e}); fix: check classifier.detector_weights names the detector's model file"
        ) from e


def _count(detect: Any, image: np.ndarray) -> tuple[int, list]:
    boxes = list(detect(image))
    return len(boxes), boxes


class FaceCropClassifier:
    """``kind = "face_crop"``: the largest detected face, cropped and classified by a torch module.

    Features per image: ``(n_faces, p_female)``; ``p_female`` = softmax over the two outputs
    ``label_map`` names (NaN where no face was found).
    """

    def __init__(self, spec: ClassifierSpec, *, module: Any = None, detector: Any = None, device: Any = None):
        import torch

        self.spec = spec
        if module is None:
            factory = load_entry_point(spec.model, key="classifier.model")
            try:
                module = factory(weights=spec.pretrained)
            except (MissingPackageError, ModelUnavailableError):
                raise
            except (OSError, RuntimeError, ValueError) as e:
                raise ModelUnavailableError(
                    f"classifier.model: {spec.model!r} could not be built with weights {spec.pretrained!r} "
                    f"({type(e).__name__}: {e}); fix: check classifier.pretrained names the model's weights file"
                ) from e
        if not isinstance(module, torch.nn.Module):
            raise InputError(
                f"classifier.model: {spec.model!r} returned a {type(module).__name__}, not a "
                "torch.nn.Module; fix: return the classifier network from the factory"
            )
        self.module = module.eval().to(device or "cpu")
        self.detect = detector if detector is not None else _make_detector(spec)
        self.model_name = f"face_crop:{spec.model}"
        self.pretrained = (
            f"weights-{_module_hash(self.module)}+detector-{spec.detector}:"
            f"{_file_tag(spec.detector_weights)}+crop-{spec.crop_size}-{spec.crop_margin:g}"
        )
        mean = getattr(self.module, "mean", _IMAGENET_MEAN)
        std = getattr(self.module, "std", _IMAGENET_STD)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    feature_dim = 2

    def prepare(self, image: Any) -> Any:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)

    def crop(self, image: np.ndarray, box) -> Any:
        """The square crop of *box* with the spec's margin, resized to ``crop_size`` (PIL). The square
        is kept inside the picture (shifted, and at most the shorter side), so no black border that the
        picture does not have reaches the classifier."""
        from PIL import Image

        x0, y0, x1, y1 = (float(v) for v in box[:4])
        h, w = image.shape[:2]
        side = min(max(x1 - x0, y1 - y0) * (1 + 2 * self.spec.crop_margin), w, h)
        cx = min(max((x0 + x1) / 2, side / 2), w - side / 2)
        cy = min(max((y0 + y1) / 2, side / 2), h - side / 2)
        c = Image.fromarray(image).crop(
            (round(cx - side / 2), round(cy - side / 2), round(cx + side / 2), round(cy + side / 2))
        )
        return c.resize((self.spec.crop_size, self.spec.crop_size), Image.BILINEAR)

    def features(self, prepared: list) -> np.ndarray:
        import torch

        out = np.full((len(prepared), 2), np.nan, dtype=np.float32)
        crops, where = [], []
        for j, img in enumerate(prepared):
            n, boxes = _count(self.detect, img)
            out[j, 0] = n
            if n:
                largest = max(boxes, key=lambda b: (float(b[2]) - float(b[0])) * (float(b[3]) - float(b[1])))
                crops.append(np.asarray(self.crop(img, largest), dtype=np.float32) / 255.0)
                where.append(j)
        if crops:
            x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
            x = (x - self._mean) / self._std
            device = next(self.module.parameters()).device
            with torch.inference_mode():
                logits = self.module(x.to(device)).float().cpu()
            f, m = self.spec.label_map["female"], self.spec.label_map["male"]
            if logits.ndim != 2 or max(f, m) >= logits.shape[1]:
                raise InputError(
                    f"classifier.label_map: indices {f}, {m} but the module returns shape "
                    f"{tuple(logits.shape)}; fix: give the output indices of female and male"
                )
            out[where, 1] = torch.softmax(logits[:, [f, m]], dim=1)[:, 0].numpy()
        return out

    def classify(self, features: np.ndarray) -> pd.DataFrame:
        f = np.asarray(features, dtype=np.float64).reshape(-1, 2)
        return _gender_frame(f[:, 1], f[:, 0], abstain_below=self.spec.abstain_below, gate=self.spec.gate != "none")


class FaceCountGate:
    """``gate = "faces"`` on another labeller: the detector's face count decides nobody / one /
    several people; the inner labeller reads the gender of images with exactly one face."""

    def __init__(self, inner: Any, *, detector: Any = None):
        self.inner = inner
        self.spec = inner.spec
        self.detect = detector if detector is not None else _make_detector(self.spec)
        self.model_name = inner.model_name
        self.pretrained = f"{inner.pretrained}+faces-{self.spec.detector}:{_file_tag(self.spec.detector_weights)}"

    @property
    def feature_dim(self) -> int:
        return self.inner.feature_dim + 1

    def prepare(self, image: Any) -> Any:
        return self.inner.prepare(image), np.asarray(image.convert("RGB"), dtype=np.uint8)

    def features(self, prepared: list) -> np.ndarray:
        inner = self.inner.features([p for p, _ in prepared])
        counts = np.array([_count(self.detect, img)[0] for _, img in prepared], dtype=np.float32)
        return np.concatenate([np.asarray(inner, dtype=np.float32), counts[:, None]], axis=1)

    def classify(self, features: np.ndarray) -> pd.DataFrame:
        f = np.asarray(features)
        base = self.inner.classify(f[:, :-1])
        out = _gender_frame(base["p_female"].to_numpy(), f[:, -1], abstain_below=self.spec.abstain_below)
        out["gender_logit"] = base["gender_logit"].to_numpy()
        return out

    def __getattr__(self, name: str) -> Any:  # the inner judge's extras (text weights, phrase sets)
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


def build_labeller(spec: ClassifierSpec, *, device: Any = None) -> Any:
    """The labeller a ``[classifier]`` table names (see the module doc)."""
    if spec.kind == "face_crop":
        return FaceCropClassifier(spec, device=device)
    clf = ZeroShotClassifier.from_spec(spec, device=device)
    return FaceCountGate(clf) if spec.gate == "faces" else clf


def label_images(images: Any, spec: ClassifierSpec | Any, *, labeller: Any = None) -> pd.DataFrame:
    """Label PIL images (or uint8 arrays) outside a run: the per-image table a run's scoring gives
    (``p_person, p_no_person, p_several_people, p_female, confidence, label``, …) for a
    ``[classifier]`` table (a :class:`~diffkit.audit.spec.ClassifierSpec`, or an
    :class:`~diffkit.audit.spec.AuditSpec` whose classifier is used). A black image is
    ``blacked_out``, as in a run.

    >>> from diffkit.audit import load_spec
    >>> from diffkit.tiny import world
    >>> scenes = world.scene_set("background", 2, size=128)
    >>> label_images([im for _, im in scenes], load_spec("tiny_default"))["label"].tolist()  # doctest: +SKIP
    ['no_person', 'no_person']
    """
    spec = getattr(spec, "classifier", spec)
    lab = labeller if labeller is not None else build_labeller(spec)
    pil = [to_pil(im) for im in images]
    feats = lab.features([lab.prepare(im) for im in pil]) if pil else np.zeros((0, lab.feature_dim), np.float32)
    out = lab.classify(feats)
    return mark_blacked_out(out, [is_blacked_out(im) for im in pil])
