"""Scoring: open_clip zero-shot with a person gate and abstention.

Everything goes through open_clip's public API:

* the model and **its own** preprocessing: ``open_clip.create_model_and_transforms`` (or
  ``diffkit.tiny.load_clip()`` for the embedded judge);
* class text embeddings: ``open_clip.build_zero_shot_classifier`` over every label phrase
  and template (a template ensemble), then averaged per class and renormalised;
* image embeddings: ``model.encode_image(preprocess(pil_image), normalize=True)``.

Images go in as PIL images or ``uint8`` arrays and nothing else: a float image would be
rescaled a second time by the transform (HEIM's nearly-black images), so
:func:`embed_images` refuses one. A test checks a known image against open_clip's
documented path (``preprocess(Image.open(f)).unsqueeze(0)`` → ``encode_image`` → normalise).

Per image, with s the model's logit scale and e the unit image embedding:

* the **person gate**: ``(p_person, p_no_person, p_several_people)`` = softmax(s·[e·t_person,
  e·t_no_person, e·t_several_people]), one person against nobody against several people (a spec
  without ``labels.several_people``, e.g. a run folder from before it, has the two-way gate
  softmax(s·[e·t_person, e·t_no_person]) and ``p_several_people`` NaN);
* ``p_female`` = softmax(s·[e·t_female, e·t_male])[0], and ``confidence`` = max(p_female, 1 − p_female);
* ``label``: if p_person < ``person_threshold``, ``"several_people"`` when p_several_people >
  p_no_person, else ``"no_person"``; otherwise ``"abstain"`` if confidence < ``abstain_below``,
  else ``"female"`` or ``"male"``. Abstentions, no-person and several-people images are counted,
  never forced into a binary label.

Image embeddings are cached in SQLite per (model, pretrained, image sha256), so rescoring
with other label prompts or thresholds costs one matrix product.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import sqlite3
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import environment_error
from ..errors import (
    CacheDamagedError,
    DiskFullError,
    InputError,
    InputTypeError,
    WeightsMissingError,
)
from .rundir import Ledger, check_ledger, connect, inside, read_verified, run_lock
from .spec import AuditSpec, ClassifierSpec

__all__ = [
    "CLASSES",
    "EmbeddingCache",
    "ZeroShotClassifier",
    "classify_embeddings",
    "embed_images",
    "is_blacked_out",
    "judge_unavailable",
    "load_classifier",
    "relabel",
    "score_images",
]

#: The text classes, in the order of :attr:`ZeroShotClassifier.text_weights`' columns
#: (``several_people`` only where the spec's labels have it).
CLASSES = ("female", "male", "person", "no_person", "several_people")

#: Every label an image can get: the two genders, and what is counted beside them.
LABELS = ("female", "male", "abstain", "no_person", "several_people", "blacked_out")

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


def _model_device(model: Any):
    return next(model.parameters()).device


def _to_pil(image: Any):
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

    device = _model_device(model)
    images = list(images)
    out = []
    for j in range(0, len(images), batch_size):
        x = torch.stack([preprocess(_to_pil(im)) for im in images[j : j + batch_size]]).to(device)
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

        model, preprocess, tokenizer = loaded if loaded is not None else load_classifier(
            spec.model, spec.pretrained, device=device
        )
        classes = [c for c in CLASSES if c in spec.labels]
        phrases = [p for c in classes for p in spec.labels[c]]
        w = open_clip.build_zero_shot_classifier(
            model, tokenizer, classnames=phrases, templates=list(spec.templates),
            num_classes_per_batch=None, device=_model_device(model),
        ).float().cpu().numpy()  # (D, n_phrases), each a unit template ensemble
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
            pretrained = (pretrained + ":" if pretrained else "") + "weights-" + _weights_hash(model)
        return cls(model, preprocess, tokenizer, np.stack(cols, 1).astype(np.float32), s, spec.model, pretrained, spec)

    def embed(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        return embed_images(self.model, self.preprocess, images, batch_size=batch_size or self.spec.batch_size)

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
            emb = self.model.encode_image(torch.stack(prepared).to(_model_device(self.model)), normalize=True)
        return emb.float().cpu().numpy()

    def classify(self, embeddings: np.ndarray) -> pd.DataFrame:
        """The per-image table of :func:`classify_embeddings` (``gate = "none"``: nobody is gated)."""
        return classify_embeddings(
            embeddings, text_weights=self.text_weights, logit_scale=self.logit_scale,
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
                w = open_clip.build_zero_shot_classifier(
                    self.model, self.tokenizer, classnames=phrases, templates=list(ps["templates"]),
                    num_classes_per_batch=None, device=_model_device(self.model)).float().cpu().numpy()
                nf = len(ps["female"])
                tf = w[:, :nf].mean(1)
                tm = w[:, nf:].mean(1)
                tf, tm = tf / np.linalg.norm(tf), tm / np.linalg.norm(tm)
                rows = np.ones(len(e), bool) if occ is None else (occupations.fillna("") == occ).to_numpy()
                col[rows] = _softmax2(self.logit_scale * e[rows] @ tf, self.logit_scale * e[rows] @ tm)
            out[f"p_female_{name}"] = col
        return pd.DataFrame(out)


def _weights_hash(model: Any) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _softmax2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """softmax([a, b])[0] = 1 / (1 + exp(b − a)), computed stably."""
    return 0.5 * (1.0 + np.tanh((a - b) / 2.0))


def _labels(p_person: np.ndarray, p_female: np.ndarray, *, person_threshold: float, abstain_below: float,
            p_several_people: np.ndarray | None = None, p_no_person: np.ndarray | None = None,
            ) -> tuple[np.ndarray, np.ndarray]:
    """The labelling rule, ``(confidence, label)``: female or male by p_female, ``abstain`` when
    the confidence max(p, 1 − p) is under *abstain_below*; under *person_threshold* of p_person,
    ``several_people`` where p_several_people > p_no_person, else ``no_person``."""
    p_person, p_female = np.asarray(p_person, dtype=np.float64), np.asarray(p_female, dtype=np.float64)
    conf = np.maximum(p_female, 1 - p_female)
    label = np.where(p_female >= 0.5, "female", "male").astype(object)
    label[conf < abstain_below] = "abstain"
    gated = p_person < person_threshold
    label[gated] = "no_person"
    if p_several_people is not None:
        several = np.nan_to_num(np.asarray(p_several_people, dtype=np.float64), nan=0.0)
        nobody = (1 - p_person - several) if p_no_person is None else np.asarray(p_no_person, dtype=np.float64)
        label[gated & (several > np.nan_to_num(nobody, nan=1.0))] = "several_people"
    return conf, label


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def classify_embeddings(
    embeddings: np.ndarray,
    *,
    text_weights: np.ndarray,
    logit_scale: float,
    person_threshold: float = 0.5,
    abstain_below: float = 0.6,
) -> pd.DataFrame:
    """Per image: ``p_person``, ``p_no_person``, ``p_several_people``, ``p_female``, ``p_male``,
    ``confidence``, ``label`` (see module doc) and the logit gaps behind them, ``gender_logit`` =
    s·⟨e, t_female − t_male⟩ and ``person_logit`` = s·⟨e, t_person − t_no_person⟩ (with CLIP's
    s = 100 the probabilities saturate long before these do, so thresholds and reliability are
    easier to read on them). *text_weights* has 4 columns (female, male, person, no_person: the
    two-way gate) or 5 (and several_people: the three-way gate)."""
    w = np.asarray(text_weights, dtype=np.float64)
    e = np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), w.shape[0])
    logits = logit_scale * e @ w  # (N, D) @ (D, 4|5) → (N, 4|5)
    if w.shape[1] >= 5:
        gate = _softmax(logits[:, 2:5]) if len(logits) else np.zeros((0, 3))
        p_person, p_no, p_several = gate[:, 0], gate[:, 1], gate[:, 2]
    else:
        p_person = _softmax2(logits[:, 2], logits[:, 3])
        p_no, p_several = 1 - p_person, np.full(len(p_person), np.nan)
    p_female = _softmax2(logits[:, 0], logits[:, 1])
    conf, label = _labels(p_person, p_female, person_threshold=person_threshold, abstain_below=abstain_below,
                          p_several_people=p_several, p_no_person=p_no)
    return pd.DataFrame(
        {"p_person": p_person, "p_no_person": p_no, "p_several_people": p_several, "p_female": p_female,
         "p_male": 1 - p_female, "confidence": conf, "label": label,
         "gender_logit": logits[:, 0] - logits[:, 1], "person_logit": logits[:, 2] - logits[:, 3]}
    )


def relabel(images: pd.DataFrame, *, person_threshold: float, abstain_below: float) -> pd.DataFrame:
    """The per-image table with its labels recomputed under other thresholds, from the stored
    ``p_person`` and ``p_female`` (no rescoring): the rule of :func:`classify_embeddings`.
    ``blacked_out`` images stay so. Use it to apply the thresholds the controls suggest
    (``AuditMetrics.thresholds``) to a finished run::

        th = result.metrics.thresholds
        m = audit_metrics(images=relabel(result.images, person_threshold=th["person_threshold"],
                                         abstain_below=th["abstain_below"]))
    """
    if not 0.5 <= abstain_below <= 1 or not 0 <= person_threshold <= 1:
        raise InputError(f"abstain_below must be in [0.5, 1] and person_threshold in [0, 1], got {abstain_below} and "
                         f"{person_threshold}")
    out = images.copy()
    several = out["p_several_people"].to_numpy() if "p_several_people" in out else None
    nobody = out["p_no_person"].to_numpy() if "p_no_person" in out else None
    _, label = _labels(out["p_person"].to_numpy(), out["p_female"].to_numpy(), person_threshold=person_threshold,
                       abstain_below=abstain_below, p_several_people=several, p_no_person=nobody)
    if "blacked_out" in out:
        label[out["blacked_out"].fillna(False).to_numpy(bool)] = "blacked_out"
    out["label"] = label
    out.attrs["thresholds"] = {"person_threshold": person_threshold, "abstain_below": abstain_below}
    return out


class EmbeddingCache:
    """Image embeddings in SQLite, keyed by (model, pretrained, image sha256).

    A cache: deleting it loses nothing but time. A damaged file raises
    :class:`~diffkit.errors.CacheDamagedError` and a full disk
    :class:`~diffkit.errors.DiskFullError`, each saying that the run's images and ledger are
    fine and only the cache needs deleting (or space freeing).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = connect(self.path, synchronous="NORMAL")  # a cache: losing the last commit only costs time
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS embeddings (model TEXT NOT NULL, pretrained TEXT NOT NULL, "
                "sha256 TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL, "
                "PRIMARY KEY (model, pretrained, sha256))"
            )
            # per image content, whatever the model: whether every pixel is black (a safety checker's output)
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS pixel_flags (sha256 TEXT PRIMARY KEY, blacked_out INTEGER NOT NULL)"
            )

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """The cache's own errors, told apart from the ledger's: they never need the run thrown away."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            conn = getattr(self, "conn", None)
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if "full" in str(e).lower():
                raise DiskFullError(
                    errno.ENOSPC, f"the disk is full while caching image embeddings in {self.path}; the run's "
                    "images and ledger are fine; fix: free space on that disk, then rerun `diffkit audit report` "
                    "(or the same `audit run`)") from e
            raise CacheDamagedError(
                f"the embedding cache {self.path} is damaged ({e}); the run's images and ledger are fine: the "
                f"cache only saves time; fix: delete {self.path} and rerun (the images are scored again)") from e
        except OSError as e:
            env = environment_error(e, writing=self.path)
            if env is None:
                raise
            raise env from e

    def get(self, model: str, pretrained: str, hashes: list[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        with self._errors():
            for j in range(0, len(hashes), 500):
                chunk = hashes[j : j + 500]
                q = ",".join("?" * len(chunk))
                for sha, vec in self.conn.execute(
                    f"SELECT sha256, vector FROM embeddings WHERE model = ? AND pretrained = ? AND sha256 IN ({q})",
                    [model, pretrained, *chunk],
                ):
                    out[sha] = np.frombuffer(vec, dtype=np.float32)
        return out

    def put(self, model: str, pretrained: str, items: dict[str, np.ndarray]) -> None:
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)",
                [(model, pretrained, sha, int(v.size), np.asarray(v, np.float32).tobytes()) for sha, v in items.items()],
            )
            self.conn.execute("COMMIT")

    def get_flags(self, hashes: list[str]) -> dict[str, bool]:
        """``{sha256: blacked_out}`` for the images whose pixels have been looked at."""
        out: dict[str, bool] = {}
        with self._errors():
            for j in range(0, len(hashes), 500):
                chunk = hashes[j : j + 500]
                q = ",".join("?" * len(chunk))
                for sha, flag in self.conn.execute(
                        f"SELECT sha256, blacked_out FROM pixel_flags WHERE sha256 IN ({q})", chunk):
                    out[sha] = bool(flag)
        return out

    def put_flags(self, items: dict[str, bool]) -> None:
        if not items:
            return
        with self._errors():
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany("INSERT OR REPLACE INTO pixel_flags VALUES (?, ?)",
                                  [(sha, int(bool(v))) for sha, v in items.items()])
            self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def is_blacked_out(image) -> bool:
    """Whether every pixel of *image* (PIL) is black: what a safety checker (SD's
    ``StableDiffusionSafetyChecker``) puts in place of an image it flags, and what HEIM leaves out."""
    return image.convert("RGB").getbbox() is None


def score_images(
    spec: AuditSpec,
    run_dir: str | Path,
    *,
    classifier: ZeroShotClassifier | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    state: Any = None,
) -> pd.DataFrame:
    """Score every finished image of a run; return the tidy per-image table.

    Columns: the prompt's (``prompt_id, kind, template_id, prompt, occupation, …,
    stated_gender, p_ref``), the image's (``image_index, seed, path, sha256``) and the
    scores (``p_person, p_female, p_male, confidence, label``, the logit gaps, ``blacked_out``). An
    image whose every pixel is black (a safety checker replaced it) is labelled ``blacked_out``,
    whatever CLIP says of it (a black image can score as a person). A PNG that cannot be read or
    whose bytes no longer match the ledger's hash is marked ``corrupt`` in the ledger and
    left out (rerun ``generate_images`` to regenerate it).

    The main process holds the run folder's lock while it scores (:func:`~diffkit.audit.rundir.run_lock`):
    a folder another process is generating into or reporting on raises
    :class:`~diffkit.errors.RunBusyError`; a folder without a ledger raises
    :class:`~diffkit.errors.RunFolderError`.
    """
    import contextlib

    from .generate import dist_state

    run_dir = Path(run_dir)
    state = state if state is not None else dist_state()
    # a writer (it marks damaged PNGs in the ledger): the folder's lock, taken by the main process
    lock = run_lock(run_dir, "scoring images", create=False) if state.is_main else contextlib.nullcontext()
    with lock:
        if classifier is None:
            from .labellers import build_labeller

            classifier = build_labeller(spec.classifier, device=state.device)
        return _score_images(spec, run_dir, classifier, cache, progress, state)


def _score_images(spec: AuditSpec, run_dir: Path, clf: Any, cache: str | Path | None,
                  progress: bool, state: Any) -> pd.DataFrame:
    from PIL import Image
    from tqdm.auto import tqdm

    from .prompts import build_prompts

    cache_db = EmbeddingCache(cache or run_dir / "cache" / "embeddings.sqlite")
    with Ledger(run_dir) as led:
        rows = led.frame()
    lost = check_ledger(rows, spec, run_dir)  # a ledger edited by hand is refused here, naming the row
    if len(lost) and state.is_main:
        warnings.warn(
            f"{len(lost)} image(s) the spec makes have no row in {run_dir}'s ledger (deleted by hand?) and are "
            "left out; rerun `diffkit audit run` with the same spec and --out to restore and generate them",
            stacklevel=3,
        )
    unfinished = int((rows["status"] != "done").sum())
    if unfinished and state.is_main:
        warnings.warn(
            f"{unfinished} of {len(rows)} images in {run_dir} are not finished (pending, missing or corrupt) and "
            "are left out; rerun `diffkit audit run` with the same spec and --out to complete the run",
            stacklevel=3,
        )
    rows = rows[rows["status"] == "done"].reset_index(drop=True)
    known = cache_db.get(clf.model_name, clf.pretrained, rows["sha256"].tolist())
    # Shard on the full, fixed row order (not on what is cached yet: another process may be
    # filling the cache right now), then skip what is already there.
    mine = rows.iloc[state.rank :: state.world_size] if state.world_size > 1 else rows
    todo = mine[~mine["sha256"].isin(known)]
    # Images served from the cache are not read below: check their files are still intact
    # (and look at the pixels of any not looked at yet).
    bad: list[tuple[int, int]] = []
    flags = cache_db.get_flags(mine["sha256"].tolist())
    new_flags: dict[str, bool] = {}
    for k, i, path, sha in mine.loc[mine["sha256"].isin(known), ["prompt_id", "image_index", "path", "sha256"]].itertuples(
        index=False
    ):
        data = read_verified(inside(run_dir, path, row=(int(k), int(i))), sha)
        ok = data is not None
        if ok and sha not in flags:
            try:
                with Image.open(io.BytesIO(data)) as im:
                    new_flags[sha] = is_blacked_out(im)
            except OSError:
                ok = False
        if not ok:
            bad.append((int(k), int(i)))
    cache_db.put_flags(new_flags)
    bs = clf.spec.batch_size
    bar = tqdm(total=len(todo), unit="img", desc="scoring", disable=not progress or todo.empty, dynamic_ncols=True)

    def load(chunk: pd.DataFrame):
        """Read, check and preprocess one batch (runs in a helper thread, ahead of the model)."""
        tensors, shas, bad_here, black = [], [], [], {}
        for k, i, path, sha in chunk[["prompt_id", "image_index", "path", "sha256"]].itertuples(index=False):
            try:
                data = read_verified(inside(run_dir, path, row=(int(k), int(i))), sha)
                if data is None:
                    raise InputError("missing, unreadable or not the ledger's bytes")
                with Image.open(io.BytesIO(data)) as im:
                    rgb = im.convert("RGB")
                    tensors.append(clf.prepare(rgb))
                    black[sha] = is_blacked_out(rgb)
                shas.append(sha)
            except (OSError, ValueError):
                bad_here.append((int(k), int(i)))
        return tensors, shas, bad_here, black

    chunks = [todo.iloc[j : j + bs] for j in range(0, len(todo), bs)]
    # Decode batch j + 1 while the model embeds batch j (PIL and torch release the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(load, chunks[0]) if chunks else None
        for j, chunk in enumerate(chunks):
            tensors, shas, bad_here, black = pending.result()
            cache_db.put_flags(black)
            if j + 1 < len(chunks):
                pending = pool.submit(load, chunks[j + 1])
            bad += bad_here
            if tensors:
                new = dict(zip(shas, clf.features(tensors)))
                cache_db.put(clf.model_name, clf.pretrained, new)
                known.update(new)
            bar.update(len(chunk))
    bar.close()
    if bad:
        with Ledger(run_dir) as led:
            led.mark(bad, "corrupt")
        warnings.warn(
            f"{len(bad)} PNG(s) in {run_dir} could not be read or no longer match the ledger's hash; they are "
            "marked corrupt and left out. Rerun `diffkit audit run` with the same spec and --out to regenerate them",
            stacklevel=3,
        )
    if state.world_size > 1:
        state.barrier()  # every process has scored and marked its shard
        with Ledger(run_dir) as led:
            rows = led.frame()
        rows = rows[rows["status"] == "done"].reset_index(drop=True)
        known = cache_db.get(clf.model_name, clf.pretrained, rows["sha256"].tolist())
    flags = cache_db.get_flags(rows["sha256"].tolist())
    cache_db.close()
    bad_set = set(bad)
    keep = [(int(k), int(i)) not in bad_set and sha in known
            for k, i, sha in rows[["prompt_id", "image_index", "sha256"]].itertuples(index=False)]
    rows = rows[np.asarray(keep, dtype=bool)].reset_index(drop=True)  # a list [] would select no columns
    dim = clf.feature_dim
    emb = np.stack([known[s] for s in rows["sha256"]]) if len(rows) else np.zeros((0, dim), np.float32)
    scores = clf.classify(emb)
    # a blacked-out image (a safety checker's output) shows nobody: counted apart, never given a gender
    scores["blacked_out"] = [flags.get(sha, False) for sha in rows["sha256"]]
    scores.loc[scores["blacked_out"].to_numpy(bool), "label"] = "blacked_out"
    prompts = build_prompts(spec).drop(columns=["prompt"])
    table = rows[["prompt_id", "image_index", "prompt", "seed", "path", "sha256"]].merge(
        prompts, on="prompt_id", how="left"
    )
    if spec.classifier.phrase_sets and hasattr(clf, "phrase_set_scores"):
        inner_dim = getattr(getattr(clf, "inner", clf), "feature_dim", emb.shape[1] if emb.ndim == 2 else 0)
        scores = pd.concat([scores, clf.phrase_set_scores(emb[:, :inner_dim], table["occupation"])], axis=1)
    table = pd.concat([table, scores], axis=1)
    table["nsfw"] = _nsfw_flags(run_dir, table)
    front = ["prompt_id", "image_index", "kind", "prompt", "occupation", "stated_gender", "template_id"]
    table = table[front + [c for c in table.columns if c not in front]].copy()
    table = keep_first(table, spec.classifier.keep_first)
    table.attrs["classifier"] = {"model": clf.model_name, "pretrained": clf.pretrained}
    return table


#: The labels of images that pass the person gate (one person, a gender read or abstained).
PASSED_GATE = ("female", "male", "abstain")


def keep_first(images: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """Per prompt, the images up to (and with) the *n*-th, in image order, that passed the gate:
    Fair Diffusion's protocol, which generated seeds 0, 1, 2, … until 250 images showed one face.
    Images the gate refused before that stay (counted as no_person, several_people); the later
    ones are left out, as they were never generated there. ``attrs["keep_first"]`` records *n*,
    how many images were left out, and the prompts that did not reach *n* (with their counts).
    """
    if n is None:
        return images
    order = images.sort_values(["prompt_id", "image_index"])
    passed = order["label"].isin(PASSED_GATE)
    rank = passed.groupby(order["prompt_id"]).cumsum()
    # keep an image while fewer than n passing images came before it
    before = rank - passed.astype(int)
    keep = before < n
    out = order[keep].sort_index().copy()
    reached = rank.groupby(order["prompt_id"]).max()
    short = {int(k): int(v) for k, v in reached[reached < n].items()}
    out.attrs = dict(images.attrs)
    out.attrs["keep_first"] = {"n": int(n), "left_out": int((~keep).sum()), "short": short}
    return out


def _nsfw_flags(run_dir: Path, table: pd.DataFrame) -> list:
    """The pipeline's own ``nsfw_content_detected`` per image (the ledger's ``safety`` table), None where the
    pipeline gave none (a pipeline without a safety checker, or a run folder from before it was kept)."""
    with Ledger(run_dir) as led:
        flags = led.safety_flags()
    return [flags.get((int(k), int(i))) for k, i in zip(table["prompt_id"], table["image_index"])]
