"""The run's pipeline folder (each U-Net export, checked by the oracle) and the ``export`` stage:
the EMA pipeline (fp16) with its fitted fast-preview map, and the judges, into a weights folder."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from diffkit.tiny import models as _m
from diffkit.tiny import world as _w

from ..errors import StateError

__all__ = ["PACKAGE_WEIGHTS", "build_pipeline", "export", "export_and_eval", "exported", "write_preview_map"]

log = logging.getLogger("diffkit.tiny.train")
PACKAGE_WEIGHTS = Path(__file__).with_name("weights")


def build_pipeline(unet, text_encoder, vae, tokenizer):
    """Assemble a stock ``StableDiffusionPipeline`` from the parts (SD 1.5's PNDM scheduler)."""
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_m.build_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def exported(run_dir: Path) -> tuple[str, int | None]:
    """``(stage, step)`` of the run's exported pipeline (``("unet", None)`` when there is none)."""
    meta = run_dir / "pipeline" / "diffkit_tiny.json"
    info = json.loads(meta.read_text()) if meta.exists() else {}
    return info.get("stage", "unet"), info.get("step")


@torch.no_grad()
def export_and_eval(unet, text_encoder, vae, tokenizer, run_dir: Path, recipe, step: int, *, stage: str) -> None:
    """Save the (EMA) parts as ``run_dir/pipeline`` with its preview map and the recipe, then log
    the oracle's quick check of *eval_images* samples and save them as a PNG grid."""
    from diffkit.tiny import quality

    pipe = build_pipeline(unet, text_encoder, vae, tokenizer)
    pipe.set_progress_bar_config(disable=True)
    out, tmp = run_dir / "pipeline", run_dir / "pipeline.tmp"
    pipe.save_pretrained(tmp, safe_serialization=True)
    write_preview_map(tmp / "vae", made_by=f"the {stage} stage's step-{step} export")
    (tmp / "diffkit_tiny.json").write_text(
        json.dumps({"step": step, "stage": stage, "recipe": asdict(recipe)}, indent=2)
    )
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    t0 = time.time()
    grid = run_dir / f"{'samples' if stage == 'unet' else f'samples_{stage}'}_step{step:05d}.png"
    n = getattr(recipe, stage).eval_images
    summary = quality.quick_check(pipe, n=n, seed=step, grid=grid)
    log.info("eval step %d: %s (%.0f s)", step, json.dumps(summary), time.time() - t0)


def write_preview_map(
    vae_dir: Path,
    *,
    n: int = 64,
    seed: int = 777,
    made_by: str = "`python -m diffkit.tiny.train --stage export`",
) -> None:
    """Fit the explorers' fast preview (latent → RGB, linear + bias) on *n* drawings of the
    world, encoded by the VAE in *vae_dir* as saved there (the shipped fp16 weights or a run's
    float32 export, run in float32), and store it there as ``latent_rgb.json``, its source
    naming *made_by*: diffkit's photographs are no sample of this VAE's inputs, and a fit on
    them misses pictograms by an RMS of 0.29 on [-1, 1]."""
    from diffusers import AutoencoderKL

    from diffkit.reverse.previews import fit_latent_rgb, save_latent_rgb

    vae = AutoencoderKL.from_pretrained(vae_dir, torch_dtype=torch.float32).eval()
    size = vae.config.sample_size
    cfg = _w.WorldConfig(pair_fraction=0.3 if size > _w.IMAGE_SIZE else 0.0)
    images = [s.image for s in _w.sample_world(n, seed=seed, config=cfg, size=size)]
    fit = fit_latent_rgb(vae, images=images)
    source = (
        f"least-squares fit on {n} drawings of the pictogram world (seed {seed}) encoded by this VAE "
        f"(RMS error {fit.rms_error:.3f} in [-1, 1]); {made_by}"
    )
    save_latent_rgb(replace(fit, source=source), vae_dir)


def export(run_dir: Path, dest: Path = PACKAGE_WEIGHTS) -> None:
    """Copy the EMA pipeline (fp16) and the CLIP judges into the weights folder *dest*."""
    from diffusers import StableDiffusionPipeline

    from diffkit.tiny import clip as _c

    src = run_dir / "pipeline"
    if not (src / "model_index.json").exists():
        raise StateError(
            f"{src / 'model_index.json'} is missing; run `python -m diffkit.tiny.train --stage unet` first"
        )
    pipe = StableDiffusionPipeline.from_pretrained(src).to(dtype=torch.float16)
    out = dest / "pipeline"
    pipe.save_pretrained(out, safe_serialization=True)
    write_preview_map(out / "vae")
    # Weights stay fp16 on disk; ask transformers to load the text encoder as float32 like
    # the diffusers parts, so a bare `from_pretrained(path)` runs on any CPU.
    cfg_path = out / "text_encoder" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    for key in ("dtype", "torch_dtype"):
        if key in cfg:
            cfg[key] = "float32"
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    meta = src / "diffkit_tiny.json"
    if meta.exists():
        (out / "diffkit_tiny.json").write_text(meta.read_text())
    for folder in ("clip", "clip-weak"):
        if (run_dir / folder / "open_clip_model.safetensors").exists():
            _c.export_fp16(run_dir / folder, dest / folder)
    log.info("export: wrote %s", dest)
