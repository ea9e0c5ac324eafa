"""The open_clip zero-shot judge: loading a CLIP model (or diffkit-tiny's), embedding images
through its own preprocessing, and :class:`ZeroShotClassifier` (class text embeddings from label
phrases and templates). See :mod:`diffkit.audit.score` for the formulas."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputTypeError, WeightsMissingError
from ._labelling import CLASSES, classify_embeddings, softmax2
from .spec import ClassifierSpec

__all__ = [
    "FLOAT_IMAGE_ERROR",
    "TINY_JUDGES",
    "ZeroShotClassifier",
    "embed_images",
    "judge_unavailable",
    "load_classifier",
    "model_device",
    "to_pil",
    "weights_hash",
]

FLOAT_IMAGE_ERROR = (
    "embed_images takes PIL images or uint8 arrays (H, W, 3); got a {dtype} array. open_clip's "
    "transform rescales to [0, 1] itself, so a float image would be rescaled twice. Convert with "
    "(x * 255).round().astype('uint8') or pass PIL images"
)


def judge_unavailable(model: str, pretrained: str | None, error: BaseException):
    """The :class:`~diffkit.errors.ModelUnavailableError` for a CLIP judge that cannot be loaded
    (offline and not cached, a typo in the name or tag), naming the fixes."""
    from ..errors import ModelUnavailableError

    what = f"{model!r}" + (f" with pretrained {pretrained!r}" if pretrained else "")
    why = str(error).split(". Available")[0]  # open_clip appends every model it knows
    why = why if len(why) <= 300 else why[:297] + "…"
    return ModelUnavailableError(
        f"could not load the CLIP judge {what} ({type(error).__name__}: {why}); fix: on a machine with network "
        "load it once to fill the cache (open_clip.create_model_and_transforms), point classifier.model at "
        "a 'local-dir:/folder' copy, or use the embedded judge (classifier.model = 'tiny')"
    )


#: The embedded judges: diffkit-tiny CLIP, and its deliberately weaker sibling (see the model card).
TINY_JUDGES = ("tiny", "tiny-weak")


def load_classifier(model: str = "tiny", pretrained: str | None = None, *, device: Any = None):
    """``(model, preprocess, tokenizer)``: ``"tiny"`` is :func:`diffkit.tiny.load_clip`, ``"tiny-weak"``
    the weaker judge (``load_clip(weak=True)``); any other
    name goes to ``open_clip.create_model_and_transforms(model, pretrained=pretrained)``. A judge
    that cannot be loaded (offline and not cached, an unknown name) raises
    :class:`~diffkit.errors.ModelUnavailableError` naming the fixes (:func:`judge_unavailable`)."""
    import open_clip
    import torch

    if model in TINY_JUDGES:
        try:
            from ..tiny import load_clip
        except ImportError as e:
            raise WeightsMissingError(
                f"the embedded tiny CLIP judge is not available ({e}); build diffkit-tiny "
                "(python -m diffkit.tiny.train) or set classifier.model to an open_clip model"
            ) from e
        m, preprocess, tokenizer = load_clip(weak=model == "tiny-weak")
    else:
        try:
            m, _, preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained)
            tokenizer = open_clip.get_tokenizer(model)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - open_clip and the hub raise many types for "cannot load"
            raise judge_unavailable(model, pretrained, e) from e
    m.eval()
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return m.to(torch.device(device)), preprocess, tokenizer


def model_device(model: Any):
    """The device of *model*'s first parameter."""
    return next(model.parameters()).device


def to_pil(image: Any):
    """An RGB PIL image from a PIL image or a uint8 array (HWC or CHW); a float array is refused."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.convert("RGB") if image.mode != "RGB" else image
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise InputTypeError(FLOAT_IMAGE_ERROR.format(dtype=arr.dtype))
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    return Image.fromarray(arr.squeeze(-1) if arr.ndim == 3 and arr.shape[-1] == 1 else arr).convert("RGB")


def embed_images(model: Any, preprocess: Any, images: Any, *, batch_size: int = 64) -> np.ndarray:
    """Unit image embeddings (N, D) through *preprocess* (open_clip's own transform) and
    ``model.encode_image(…, normalize=True)``. *images*: PIL images or uint8 arrays."""
    import torch

    device = model_device(model)
    images = list(images)
    out = []
    for j in range(0, len(images), batch_size):
        x = torch.stack([preprocess(to_pil(im)) for im in images[j : j + batch_size]]).to(device)
        with torch.inference_mode():
            out.append(model.encode_image(x, normalize=True).float().cpu().numpy())
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(out)


@dataclass
class ZeroShotClassifier:
    """A CLIP model with class text embeddings for female / male / person / no_person."""

    model: Any
    preprocess: Any
    tokenizer: Any
    text_weights: np.ndarray  # (D, 4 or 5) unit columns in CLASSES order
    logit_scale: float
    model_name: str
    pretrained: str
    spec: ClassifierSpec

    @classmethod
    def from_spec(cls, spec: ClassifierSpec, *, loaded: tuple | None = None, device: Any = None) -> ZeroShotClassifier:
        """Build from a spec's ``[classifier]``; *loaded* = ``(model, preprocess, tokenizer)`` skips loading."""
        import open_clip
        import torch

        model, preprocess, tokenizer = (
            loaded if loaded is not None else load_classifier(spec.model, spec.pretrained, device=device)
        )
        classes = [c for c in CLASSES if c in spec.labels]
        phrases = [p for c in classes for p in spec.labels[c]]
        w = (
            open_clip.build_zero_shot_classifier(
                model,
                tokenizer,
                classnames=phrases,
                templates=list(spec.templates),
                num_classes_per_batch=None,
                device=model_device(model),
            )
            .float()
            .cpu()
            .numpy()
        )  # (D, n_phrases), each a unit template ensemble
        cols, j = [], 0
        for c in classes:
            n = len(spec.labels[c])
            v = w[:, j : j + n].mean(axis=1)
            cols.append(v / np.linalg.norm(v))
            j += n
        scale = getattr(model, "logit_scale", None)
        with torch.no_grad():
            s = float(scale.exp().item()) if isinstance(scale, torch.Tensor) else 100.0
        pretrained = spec.pretrained or ""
        if spec.model in TINY_JUDGES or spec.model.startswith("local-dir:"):
            # local weights can change under the same name: key the cache by their content
            pretrained = (pretrained + ":" if pretrained else "") + "weights-" + weights_hash(model)
        return cls(model, preprocess, tokenizer, np.stack(cols, 1).astype(np.float32), s, spec.model, pretrained, spec)

    # the labeller protocol (diffkit.audit.labellers.Labeller): what score_images calls
    @property
    def feature_dim(self) -> int:
        return int(self.text_weights.shape[0])

    def prepare(self, image: Any) -> Any:
        """One RGB PIL image → open_clip's preprocessed tensor (in the scorer's loader thread)."""
        return self.preprocess(image)

    def features(self, prepared: list) -> np.ndarray:
        """Unit image embeddings (N, D) of a batch of :meth:`prepare` outputs."""
        import torch

        with torch.inference_mode():
            emb = self.model.encode_image(torch.stack(prepared).to(model_device(self.model)), normalize=True)
        return emb.float().cpu().numpy()

    def classify(self, embeddings: np.ndarray) -> pd.DataFrame:
        """The per-image table of :func:`classify_embeddings` (``gate = "none"``: nobody is gated)."""
        return classify_embeddings(
            embeddings,
            text_weights=self.text_weights,
            logit_scale=self.logit_scale,
            person_threshold=0.0 if self.spec.gate == "none" else self.spec.person_threshold,
            abstain_below=self.spec.abstain_below,
        )

    def phrase_set_scores(self, embeddings: np.ndarray, occupations: Any) -> pd.DataFrame:
        """``p_female_<set>`` per image for each of the spec's ``phrase_sets`` (HEIM's, UCE's, TIME's
        label phrases, :data:`~diffkit.audit.spec.PHRASE_SETS`), read from the same embeddings;
        TIME's phrases name the image's occupation."""
        import open_clip

        from .spec import PHRASE_SETS

        occupations = pd.Series(list(occupations), dtype=object)
        e = np.asarray(embeddings, dtype=np.float64)
        out = {}
        for name in self.spec.phrase_sets:
            ps = PHRASE_SETS[name]
            col = np.full(len(e), np.nan)
            keys = occupations.fillna("").unique() if any("{occupation}" in p for p in ps["female"]) else [None]
            for occ in keys:
                phrases = [p.format(occupation=occ) if occ is not None else p for p in (*ps["female"], *ps["male"])]
                w = (
                    open_clip.build_zero_shot_classifier(
                        self.model,
                        self.tokenizer,
                        classnames=phrases,
                        templates=list(ps["templates"]),
                        num_classes_per_batch=None,
                        device=model_device(self.model),
                    )
                    .float()
                    .cpu()
                    .numpy()
                )
                nf = len(ps["female"])
                tf = w[:, :nf].mean(1)
                tm = w[:, nf:].mean(1)
                tf, tm = tf / np.linalg.norm(tf), tm / np.linalg.norm(tm)
                rows = np.ones(len(e), bool) if occ is None else (occupations.fillna("") == occ).to_numpy()
                col[rows] = softmax2(self.logit_scale * e[rows] @ tf, self.logit_scale * e[rows] @ tm)
            out[f"p_female_{name}"] = col
        return pd.DataFrame(out)


def weights_hash(model: Any) -> str:
    """The first 16 hex digits of the sha256 of *model*'s state dict (names and float32 values)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
