"""Generation at scale: batched, deterministic, resumable, shardable.

The run folder (owned by :mod:`diffkit.audit.rundir`)::

    spec.json                 the resolved spec (its sha256 is the run's fingerprint)
    ledger.sqlite             one row per image (SQLite in write-ahead-log mode), the spec and the weights
    images/KKKK/IIII.png      image i of prompt k

How the guarantees are kept:

* **Deterministic.** Image i of prompt k starts from noise drawn by its own CPU generator
  seeded with :func:`~diffkit.audit.prompts.derive_seed` (spec seed, k, i). The (k, i) grid
  is cut into fixed batches of ``audit.batch_size``; a batch is always computed whole, so
  every image sees the same batch composition in a fresh run, a resumed run or a sharded run.
* **Crash-safe.** A PNG is encoded in memory, written to a temporary file, flushed, fsynced
  and renamed into place (atomic on POSIX). The ledger rows of a batch are committed in one
  transaction after its files. Killing the process at any moment loses at most the batch in
  flight; a rerun regenerates only rows whose status is not ``done`` (an ``UPDATE`` of the
  existing row: never a duplicate) and removes the temporary files the killed run left.
* **One model per run.** The ledger records the weights (a digest of the pipeline's files,
  or the hub commit); a rerun with other weights is refused, naming both.
* **One writer per folder.** The main process holds the folder's lock while it generates (and
  ``run_audit`` until its report is written); a second run, scoring or report writer on the same
  folder is refused at once (:class:`~diffkit.errors.RunBusyError`, naming the holder's pid and
  what it is doing), so no image is generated twice.
* **Verified.** On resume each finished row's file is re-hashed; a missing or corrupt PNG
  is marked ``missing``/``corrupt`` and its batch regenerated.
* **Full disk.** ``ENOSPC`` while writing removes the temporary file and raises
  :class:`~diffkit.errors.DiskFullError`; the ledger keeps only whole batches.
* **Prompts that fit.** Before generating, every prompt is tokenized; one longer than the
  text encoder reads is refused (:func:`check_prompt_lengths`) instead of being cut off.
* **Sharded.** Under ``accelerate launch`` (or ``torchrun``) batch b goes to process
  ``b % world_size``; all processes share the ledger. The result equals a one-process run
  (bit for bit when every process runs the same number of threads). Across machines the
  run folder must sit on a shared filesystem with POSIX locks (see :func:`~diffkit.audit.rundir.journal_mode`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from ..pipeline import check_steps
from ._distributed import DistState, dist_state
from ._pipeline_setup import check_prompt_lengths, load_pipeline_for
from .prompts import build_prompts, image_seed
from .rundir import (
    Ledger,
    clean_orphans,
    inside,
    now,
    prepare_run,
    record_weights,
    run_lock,
    verify_files,
    weights_identity,
    write_atomic,
)
from .spec import AuditSpec, SpecError

__all__ = [
    "DistState",
    "check_prompt_lengths",
    "dist_state",
    "generate_images",
    "load_pipeline_for",
    "regenerate_image",
]


def _latent_shape(pipe: Any, spec: AuditSpec) -> tuple[int, int, int]:
    """``(C, h, w)`` of one image's initial latents, as the pipeline's ``prepare_latents`` makes them."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    cfg = denoiser.config
    factor = int(getattr(pipe, "vae_scale_factor", 8))
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    h = spec.pipeline.height // factor if spec.pipeline.height else size
    w = spec.pipeline.width // factor if spec.pipeline.width else size
    return int(cfg.in_channels), int(h), int(w)


def _noise(pipe: Any, spec: AuditSpec, seeds: list[int], indices: list[int] | None, counts: list[int] | None) -> dict:
    """The pipeline's noise arguments: one generator per image (``per_image``: on the CPU, or on the
    pipeline's device with ``generator_device = "pipeline"``), or the initial latents themselves
    (``per_prompt``: image i of a prompt is the i-th of ``torch.randn((n, C, h, w),
    generator=torch.manual_seed(seed))``, drawn on the CPU in float32, UCE's scheme)."""
    import torch

    if spec.noise == "per_prompt":
        shape = _latent_shape(pipe, spec)
        drawn: dict[tuple[int, int], Any] = {}
        rows = []
        for s, i, n in zip(seeds, indices, counts):
            if (s, n) not in drawn:
                drawn[(s, n)] = torch.randn((int(n), *shape), generator=torch.Generator("cpu").manual_seed(int(s)))
            rows.append(drawn[(s, n)][int(i)])
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        return {"latents": torch.stack(rows).to(device=pipe.device, dtype=denoiser.dtype)}
    device = pipe.device if spec.pipeline.generator_device == "pipeline" else "cpu"
    return {"generator": [torch.Generator(device).manual_seed(int(s)) for s in seeds]}


def _call_pipeline(
    pipe: Any,
    spec: AuditSpec,
    prompts: list[str],
    seeds: list[int],
    *,
    indices: list[int] | None = None,
    counts: list[int] | None = None,
) -> tuple[list, list | None]:
    """``(images, nsfw)``: the pipeline's PIL images and its ``nsfw_content_detected`` flags (None
    when it gives none). *indices* and *counts* (image index, images of its prompt) are needed
    for ``audit.noise = "per_prompt"``."""
    import torch

    kw: dict[str, Any] = dict(
        prompt=prompts,
        num_inference_steps=spec.pipeline.steps,
        guidance_scale=spec.pipeline.guidance_scale,
        output_type="pil",
        **_noise(pipe, spec, seeds, indices, counts),
    )
    if spec.pipeline.height:
        kw["height"] = spec.pipeline.height
    if spec.pipeline.width:
        kw["width"] = spec.pipeline.width
    if spec.pipeline.negative_prompt:
        kw["negative_prompt"] = [spec.pipeline.negative_prompt] * len(prompts)
    with torch.inference_mode():
        out = pipe(**kw)
    flags = getattr(out, "nsfw_content_detected", None)
    if flags is not None:
        flags = [None if f is None else bool(f) for f in flags]
    return out.images, flags


def _png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def regenerate_image(spec: AuditSpec, prompt_id: int, image_index: int, *, pipe: Any = None) -> Any:
    """Regenerate image *image_index* of prompt *prompt_id* on its own (a PIL image).

    Same seed and settings as in the run; pixel-identical to the run's PNG when
    ``audit.batch_size`` is 1, else equal up to the float effects of batching.
    (``audit.noise = "per_prompt"``: the image's slice of its prompt's batch of latents.)
    """
    prompts = build_prompts(spec)
    row = prompts.loc[prompts["prompt_id"] == prompt_id]
    if row.empty:
        raise InputError(f"no prompt {prompt_id}; the spec has prompts 0..{len(prompts) - 1}")
    pipe = pipe if pipe is not None else load_pipeline_for(spec)
    prompt = row["prompt"].iloc[0]
    seed = image_seed(spec, prompt_id, image_index, prompt)
    images, _ = _call_pipeline(
        pipe, spec, [prompt], [seed], indices=[image_index], counts=[int(row["n_images"].iloc[0])]
    )
    return images[0]


def generate_images(
    spec: AuditSpec,
    run_dir: str | Path,
    *,
    pipe: Any = None,
    progress: bool = True,
    verify: bool = True,
    state: DistState | None = None,
    max_batches: int | None = None,
) -> pd.DataFrame:
    """Generate every image of *spec* into *run_dir* that is not there yet; return the ledger.

    Parameters
    ----------
    spec
        The audit spec (see :func:`~diffkit.audit.load_spec`).
    run_dir
        The run folder; created if needed, resumed if it holds this spec's run, refused
        (:class:`~diffkit.audit.rundir.RunMismatchError`) if it holds another's.
    pipe
        A loaded pipeline; default :func:`load_pipeline_for` (*spec*'s model, on this process's device).
    progress
        Show a ``tqdm.auto`` bar with ETA (renders in notebooks).
    verify
        Re-hash finished images first and regenerate missing or corrupt ones.
    state
        Rank and world size; default :func:`dist_state` (sharded under ``accelerate launch``).
    max_batches
        Stop after this many batches (for tests and benchmarks).

    Returns
    -------
    pandas.DataFrame
        The ledger, one row per image (``prompt_id, image_index, prompt, seed, path, batch,
        status, sha256, seconds, rank, finished_at``).
    """
    from tqdm.auto import tqdm

    state = state if state is not None else dist_state()
    run_dir = Path(run_dir)
    weights = weights_identity(spec.pipeline.model, spec.pipeline.revision)
    lock = run_lock(run_dir, "generating images") if state.is_main else contextlib.nullcontext()
    with lock:
        # The main process creates the folder first; the others then reopen it.
        if state.is_main:
            prepare_run(spec, run_dir, weights=weights)
            clean_orphans(run_dir)
        state.barrier()
        if not state.is_main:
            prepare_run(spec, run_dir, weights=weights)
        with Ledger(run_dir) as led:
            mine = _my_rows(led, run_dir, state, verify)
            todo_batches = sorted(mine.loc[mine["status"] != "done", "batch"].unique())
            if max_batches is not None:
                todo_batches = todo_batches[:max_batches]
            n_done = int((mine["status"] == "done").sum())
            if todo_batches:
                pipe = _ready_pipeline(spec, run_dir, pipe, state, progress, weights)
                _generate(spec, run_dir, led, pipe, mine, todo_batches, n_done, state, progress, tqdm)
        state.barrier()
    with Ledger(run_dir) as led:
        return led.frame()


def _my_rows(led: Ledger, run_dir: Path, state: DistState, verify: bool) -> pd.DataFrame:
    """This process's ledger rows (its batches); with *verify*, finished files re-hashed first
    (missing or altered ones are marked and so generated again)."""
    rows = led.frame()
    mine = rows[rows["batch"] % state.world_size == state.rank]
    if verify:
        done = mine[mine["status"] == "done"]
        if verify_files(led, run_dir, done):
            rows = led.frame()
            mine = rows[rows["batch"] % state.world_size == state.rank]
    return mine


def _ready_pipeline(
    spec: AuditSpec, run_dir: Path, pipe: Any, state: DistState, progress: bool, weights: str | None
) -> Any:
    """The pipeline, loaded if not given, checked against the spec (prompt lengths, steps) before
    the first image; the weights recorded if they could only be known after loading."""
    if pipe is None:
        pipe = load_pipeline_for(spec, device=state.device, progress=progress)
    check_prompt_lengths(spec, getattr(pipe, "tokenizer", None))
    try:  # the spec's steps against this model's forward chain, before the first image
        check_steps(pipe.scheduler, spec.pipeline.steps, name="pipeline.steps")
    except InputError as e:
        raise SpecError(
            spec.source, "pipeline.steps", str(e).split("; fix: ")[0], str(e).split("; fix: ")[-1]
        ) from None
    if weights is None:  # a hub id that was not cached before the load
        record_weights(run_dir, spec, weights_identity(spec.pipeline.model, spec.pipeline.revision))
    return pipe


def _generate(spec, run_dir, led, pipe, mine, todo_batches, n_done, state, progress, tqdm) -> None:
    """Generate the batches *todo_batches* of this process's rows *mine*, one transaction each."""
    bar = tqdm(
        total=len(mine),
        initial=n_done,
        unit="img",
        disable=not progress,
        desc="generating" + (f" [{state.rank + 1}/{state.world_size}]" if state.world_size > 1 else ""),
        position=state.rank if state.world_size > 1 else None,
        dynamic_ncols=True,
    )
    by_batch = {b: g for b, g in mine.groupby("batch")}
    n_of = build_prompts(spec).set_index("prompt_id")["n_images"].to_dict()
    try:
        for b in todo_batches:
            batch = by_batch[b]
            t0 = time.perf_counter()
            images, nsfw = _call_pipeline(
                pipe,
                spec,
                batch["prompt"].tolist(),
                batch["seed"].tolist(),
                indices=batch["image_index"].tolist(),
                counts=[n_of[int(k)] for k in batch["prompt_id"]],
            )
            per_image = (time.perf_counter() - t0) / len(batch)
            updates, flags = [], []
            for j, (img, (k, i, path, status)) in enumerate(
                zip(images, batch[["prompt_id", "image_index", "path", "status"]].itertuples(index=False))
            ):
                if status == "done":  # recomputed only to keep the batch whole
                    continue
                data = _png_bytes(img)
                write_atomic(inside(run_dir, path, row=(int(k), int(i))), data)
                updates.append((hashlib.sha256(data).hexdigest(), per_image, state.rank, now(), int(k), int(i)))
                if nsfw is not None and nsfw[j] is not None:
                    flags.append((int(k), int(i), int(nsfw[j])))
            with led.transaction() as c:  # a batch's rows are committed together, after its files
                c.executemany(
                    "UPDATE images SET status = 'done', sha256 = ?, seconds = ?, rank = ?, "
                    "finished_at = ? WHERE prompt_id = ? AND image_index = ?",
                    updates,
                )
                c.executemany("INSERT OR REPLACE INTO safety (prompt_id, image_index, nsfw) VALUES (?, ?, ?)", flags)
            bar.update(len(updates))
    finally:
        bar.close()
