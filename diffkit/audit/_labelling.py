"""The labelling rule: from CLIP's probabilities (or a labeller's) to one label per image.

``female``/``male`` by p_female, ``abstain`` under the confidence threshold, ``no_person`` or
``several_people`` under the person gate, ``blacked_out`` for a safety checker's black image;
see :mod:`diffkit.audit.score` for the formulas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = [
    "CLASSES",
    "LABELS",
    "PASSED_GATE",
    "classify_embeddings",
    "is_blacked_out",
    "keep_first",
    "label_rule",
    "mark_blacked_out",
    "relabel",
    "softmax",
    "softmax2",
]

#: The text classes, in the order of :attr:`ZeroShotClassifier.text_weights`' columns
#: (``several_people`` only where the spec's labels have it).
CLASSES = ("female", "male", "person", "no_person", "several_people")

#: Every label an image can get: the two genders, and what is counted beside them.
LABELS = ("female", "male", "abstain", "no_person", "several_people", "blacked_out")

#: The labels of images that pass the person gate (one person, a gender read or abstained).
PASSED_GATE = ("female", "male", "abstain")


def softmax2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """softmax([a, b])[0] = 1 / (1 + exp(b − a)), computed stably."""
    return 0.5 * (1.0 + np.tanh((a - b) / 2.0))


def label_rule(
    p_person: np.ndarray,
    p_female: np.ndarray,
    *,
    person_threshold: float,
    abstain_below: float,
    p_several_people: np.ndarray | None = None,
    p_no_person: np.ndarray | None = None,
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


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, K), shifted by each row's maximum."""
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
        gate = softmax(logits[:, 2:5]) if len(logits) else np.zeros((0, 3))
        p_person, p_no, p_several = gate[:, 0], gate[:, 1], gate[:, 2]
    else:
        p_person = softmax2(logits[:, 2], logits[:, 3])
        p_no, p_several = 1 - p_person, np.full(len(p_person), np.nan)
    p_female = softmax2(logits[:, 0], logits[:, 1])
    conf, label = label_rule(
        p_person,
        p_female,
        person_threshold=person_threshold,
        abstain_below=abstain_below,
        p_several_people=p_several,
        p_no_person=p_no,
    )
    return pd.DataFrame(
        {
            "p_person": p_person,
            "p_no_person": p_no,
            "p_several_people": p_several,
            "p_female": p_female,
            "p_male": 1 - p_female,
            "confidence": conf,
            "label": label,
            "gender_logit": logits[:, 0] - logits[:, 1],
            "person_logit": logits[:, 2] - logits[:, 3],
        }
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
        raise InputError(
            f"abstain_below must be in [0.5, 1] and person_threshold in [0, 1], got {abstain_below} and "
            f"{person_threshold}"
        )
    out = images.copy()
    several = out["p_several_people"].to_numpy() if "p_several_people" in out else None
    nobody = out["p_no_person"].to_numpy() if "p_no_person" in out else None
    _, label = label_rule(
        out["p_person"].to_numpy(),
        out["p_female"].to_numpy(),
        person_threshold=person_threshold,
        abstain_below=abstain_below,
        p_several_people=several,
        p_no_person=nobody,
    )
    if "blacked_out" in out:
        label[out["blacked_out"].fillna(False).to_numpy(bool)] = "blacked_out"
    out["label"] = label
    out.attrs["thresholds"] = {"person_threshold": person_threshold, "abstain_below": abstain_below}
    return out


def is_blacked_out(image) -> bool:
    """Whether every pixel of *image* (PIL) is black: what a safety checker (SD's
    ``StableDiffusionSafetyChecker``) puts in place of an image it flags, and what HEIM leaves out."""
    return image.convert("RGB").getbbox() is None


def mark_blacked_out(scores: pd.DataFrame, black: Sequence[bool] | np.ndarray) -> pd.DataFrame:
    """Add the ``blacked_out`` column and label those images ``blacked_out`` (in place; returned): a
    safety checker's black image shows nobody, so it is counted apart and never given a gender."""
    scores["blacked_out"] = np.asarray(black, dtype=bool)
    scores.loc[scores["blacked_out"].to_numpy(bool), "label"] = "blacked_out"
    return scores


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
