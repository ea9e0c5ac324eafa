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

import io
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ._clip_judge import (
    FLOAT_IMAGE_ERROR,
    TINY_JUDGES,
    ZeroShotClassifier,
    embed_images,
    judge_unavailable,
    load_classifier,
)
from ._embedding_cache import EmbeddingCache
from ._labelling import (
    CLASSES,
    LABELS,
    PASSED_GATE,
    classify_embeddings,
    is_blacked_out,
    keep_first,
    mark_blacked_out,
    relabel,
)
from .rundir import Ledger, check_ledger, inside, read_verified, run_lock
from .spec import AuditSpec

__all__ = [
    "CLASSES",
    "FLOAT_IMAGE_ERROR",
    "LABELS",
    "PASSED_GATE",
    "TINY_JUDGES",
    "EmbeddingCache",
    "ZeroShotClassifier",
    "classify_embeddings",
    "embed_images",
    "is_blacked_out",
    "judge_unavailable",
    "keep_first",
    "load_classifier",
    "relabel",
    "score_images",
]


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

    from ._distributed import dist_state

    run_dir = Path(run_dir)
    state = state if state is not None else dist_state()
    # a writer (it marks damaged PNGs in the ledger): the folder's lock, taken by the main process
    lock = run_lock(run_dir, "scoring images", create=False) if state.is_main else contextlib.nullcontext()
    with lock:
        if classifier is None:
            from .labellers import build_labeller

            classifier = build_labeller(spec.classifier, device=state.device)
        return _score_images(spec, run_dir, classifier, cache, progress, state)


def _score_images(
    spec: AuditSpec, run_dir: Path, clf: Any, cache: str | Path | None, progress: bool, state: Any
) -> pd.DataFrame:
    cache_db = EmbeddingCache(cache or run_dir / "cache" / "embeddings.sqlite")
    rows = _done_rows(spec, run_dir, state)
    known = cache_db.get(clf.model_name, clf.pretrained, rows["sha256"].tolist())
    # Shard on the full, fixed row order (not on what is cached yet: another process may be
    # filling the cache right now), then skip what is already there.
    mine = rows.iloc[state.rank :: state.world_size] if state.world_size > 1 else rows
    todo = mine[~mine["sha256"].isin(known)]
    bad = _check_cached(run_dir, mine[mine["sha256"].isin(known)], cache_db)
    bad += _embed_new(run_dir, todo, clf, cache_db, known, progress)
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
    keep = [
        (int(k), int(i)) not in bad_set and sha in known
        for k, i, sha in rows[["prompt_id", "image_index", "sha256"]].itertuples(index=False)
    ]
    rows = rows[np.asarray(keep, dtype=bool)].reset_index(drop=True)  # a list [] would select no columns
    return _image_table(spec, run_dir, clf, rows, known, flags)


def _done_rows(spec: AuditSpec, run_dir: Path, state: Any) -> pd.DataFrame:
    """The ledger's finished rows; warns (on the main process) of rows lost or unfinished."""
    with Ledger(run_dir) as led:
        rows = led.frame()
    lost = check_ledger(rows, spec, run_dir)  # a ledger edited by hand is refused here, naming the row
    if len(lost) and state.is_main:
        warnings.warn(
            f"{len(lost)} image(s) the spec makes have no row in {run_dir}'s ledger (deleted by hand?) and are "
            "left out; rerun `diffkit audit run` with the same spec and --out to restore and generate them",
            stacklevel=4,
        )
    unfinished = int((rows["status"] != "done").sum())
    if unfinished and state.is_main:
        warnings.warn(
            f"{unfinished} of {len(rows)} images in {run_dir} are not finished (pending, missing or corrupt) and "
            "are left out; rerun `diffkit audit run` with the same spec and --out to complete the run",
            stacklevel=4,
        )
    return rows[rows["status"] == "done"].reset_index(drop=True)


def _check_cached(run_dir: Path, cached: pd.DataFrame, cache_db: EmbeddingCache) -> list[tuple[int, int]]:
    """Images served from the cache are not read again to be embedded: check their files are still
    intact (and look at the pixels of any not looked at yet). Returns the bad ones' (prompt, image)."""
    from PIL import Image

    bad: list[tuple[int, int]] = []
    flags = cache_db.get_flags(cached["sha256"].tolist())
    new_flags: dict[str, bool] = {}
    for k, i, path, sha in cached[["prompt_id", "image_index", "path", "sha256"]].itertuples(index=False):
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
    return bad


def _load_batch(run_dir: Path, clf: Any, chunk: pd.DataFrame):
    """Read, check and preprocess one batch (runs in a helper thread, ahead of the model)."""
    from PIL import Image

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


def _embed_new(
    run_dir: Path, todo: pd.DataFrame, clf: Any, cache_db: EmbeddingCache, known: dict, progress: bool
) -> list[tuple[int, int]]:
    """Embed the images not cached yet, batch by batch, into the cache and *known*; returns the
    (prompt, image) of those that could not be read."""
    from tqdm.auto import tqdm

    bs = clf.spec.batch_size
    bar = tqdm(total=len(todo), unit="img", desc="scoring", disable=not progress or todo.empty, dynamic_ncols=True)
    bad: list[tuple[int, int]] = []
    chunks = [todo.iloc[j : j + bs] for j in range(0, len(todo), bs)]
    # Decode batch j + 1 while the model embeds batch j (PIL and torch release the GIL).
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_load_batch, run_dir, clf, chunks[0]) if chunks else None
        for j, chunk in enumerate(chunks):
            tensors, shas, bad_here, black = pending.result()
            cache_db.put_flags(black)
            if j + 1 < len(chunks):
                pending = pool.submit(_load_batch, run_dir, clf, chunks[j + 1])
            bad += bad_here
            if tensors:
                new = dict(zip(shas, clf.features(tensors)))
                cache_db.put(clf.model_name, clf.pretrained, new)
                known.update(new)
            bar.update(len(chunk))
    bar.close()
    return bad


def _image_table(
    spec: AuditSpec, run_dir: Path, clf: Any, rows: pd.DataFrame, known: dict, flags: dict
) -> pd.DataFrame:
    """The per-image table: the rows' prompts and the labeller's scores of their embeddings."""
    from .prompts import build_prompts

    dim = clf.feature_dim
    emb = np.stack([known[s] for s in rows["sha256"]]) if len(rows) else np.zeros((0, dim), np.float32)
    scores = clf.classify(emb)
    mark_blacked_out(scores, [flags.get(sha, False) for sha in rows["sha256"]])
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


def _nsfw_flags(run_dir: Path, table: pd.DataFrame) -> list:
    """The pipeline's own ``nsfw_content_detected`` per image (the ledger's ``safety`` table), None where the
    pipeline gave none (a pipeline without a safety checker, or a run folder from before it was kept)."""
    with Ledger(run_dir) as led:
        flags = led.safety_flags()
    return [flags.get((int(k), int(i))) for k, i in zip(table["prompt_id"], table["image_index"])]
