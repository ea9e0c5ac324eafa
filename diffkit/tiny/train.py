"""Training recipes for diffkit-tiny: ``python -m diffkit.tiny.train``.

The default recipe, ``--recipe tiny2``, makes the shipped model, diffkit-tiny 2 (SD 1.x's
design at 128², see :mod:`diffkit.tiny.models` and the model card). Its stages run in order,
each resuming from its checkpoint under ``--run-dir`` (default ``runs/tiny2``):

1. ``vae``: an ``AutoencoderKL`` (f = 8, 4 channels) on drawn world images (L1 + MSE + a small
   KL term + a linear-preview term);
2. ``cache``: encode a fixed pool of drawn images per world cell (and two-object scenes) to
   latents, and set ``scaling_factor`` to give them unit variance, as SD's 0.18215 was set;
3. ``unet``: the ``UNet2DConditionModel`` *and* the ``CLIPTextModel`` trained jointly,
   ε-prediction on SD 1.5's ``scaled_linear`` schedule, min(SNR + 1, 5) / SNR weighting,
   offset noise, 10 % caption dropout (for classifier-free guidance), EMA;
4. ``polish``: more steps from the unet stage's export with low-noise weighting, a low-noise
   agreement term and TokenCompose's token loss (:mod:`diffkit.tiny.grounding`);
5. ``clip``: the independent open_clip judge, trained contrastively (:mod:`diffkit.tiny.clip`), a
   person gate too: nobody, two people, blends and half-drawn figures beside one person (issue 23);
   ``clip_weak``: the deliberately weaker judge the course corrects for (it sees 3 × 3 pixels);
6. ``export``: the EMA pipeline (fp16) with its fitted fast-preview map, and the judges, into
   the package's ``weights/`` folder.

Examples
--------
Full recipe (resumable; on this machine's 2 CPU cores, idle, about 2 h 10 min from each
stage's measured rate: VAE 18 min, cache 3 min, U-Net 0.75 s a step for 6,000 steps, polish
12 min, judge 11 min; the shipped U-Net stage ran on a GPU with ``--device cuda``, see the
model card)::

    python -m diffkit.tiny.train --resume

Classroom recipe (``--quick``): the U-Net and text encoder from scratch on the shipped VAE,
1,000 steps and a 300-step polish, judged by the shipped judge. It never replaces the
shipped model; load its ``pipeline`` folder (timings and figures in the model card)::

    python -m diffkit.tiny.train --quick --run-dir runs/tiny2-quick
    diffkit.load_pipeline("runs/tiny2-quick/pipeline")

Continue only the U-Net for 60 more minutes, then export::

    python -m diffkit.tiny.train --stage unet --resume --minutes 60
    python -m diffkit.tiny.train --stage export

The recipe's numbers are in :mod:`diffkit.tiny.recipe` (one frozen config per stage), the loop
in :mod:`diffkit.tiny.loop`, the loss terms in :mod:`diffkit.tiny.losses`, the stages in
:mod:`diffkit.tiny.vae_stage`, :mod:`diffkit.tiny.cache`, :mod:`diffkit.tiny.unet_stage`,
:func:`diffkit.tiny.clip.train_clip` and :mod:`diffkit.tiny.export`. diffkit-tiny 1 (64²,
v-prediction, pooled-text FiLM) left the tree in issue 24; the model card names its commit.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

from diffkit.errors import InputError
from diffkit.tiny.cache import build_cache
from diffkit.tiny.export import PACKAGE_WEIGHTS, export
from diffkit.tiny.loop import setup_run
from diffkit.tiny.recipe import RECIPES, Recipe
from diffkit.tiny.unet_stage import train_polish, train_unet
from diffkit.tiny.vae_stage import train_vae

log = logging.getLogger("diffkit.tiny.train")

__all__ = ["STAGES", "main", "run_stage"]

#: Every stage in the order the full recipe runs them.
STAGES = ("vae", "cache", "unet", "polish", "clip", "clip_weak", "export")


def run_stage(
    stage: str,
    recipe: Recipe,
    run_dir: Path,
    *,
    resume: bool,
    minutes: float | None = None,
    device: str = "cpu",
    export_to: Path = PACKAGE_WEIGHTS,
) -> None:
    """Run one stage of *recipe* in *run_dir* (each resumes from its checkpoint with *resume*)."""
    from diffkit.tiny import clip

    if stage == "vae":
        train_vae(recipe, run_dir, resume=resume, device=device)
    elif stage == "cache":
        build_cache(recipe, run_dir, device=device)
    elif stage == "unet":
        train_unet(recipe, run_dir, resume=resume, minutes=minutes, device=device)
    elif stage == "polish":
        train_polish(recipe, run_dir, resume=resume, minutes=minutes, device=device)
    elif stage in ("clip", "clip_weak"):
        clip.train_clip(recipe, run_dir, resume=resume, weak=stage == "clip_weak")
    elif stage == "export":
        export(run_dir, dest=export_to)
    else:
        raise InputError(f"unknown stage {stage!r}; fix: choose one of {STAGES}")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffkit.tiny.train", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--recipe",
        choices=["tiny2"],
        default="tiny2",
        help="tiny2: the shipped model, SD 1.x's design at 128² (issue 11); diffkit-tiny 1's recipe "
        "left the tree (the model card names its commit)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the classroom recipe (25 min on 2 CPU cores, lower quality; never exported to the package)",
    )
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="checkpoints and logs (default runs/tiny2, or runs/tiny2-quick with --quick)",
    )
    p.add_argument("--stage", choices=["all", *STAGES], default="all")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --run-dir")
    p.add_argument("--minutes", type=float, default=None, help="stop the U-Net stage after this many minutes")
    p.add_argument("--unet-steps", type=int, default=None, help="override the recipe's U-Net step bound")
    p.add_argument("--no-export", action="store_true", help="do not write the package's weights folder")
    p.add_argument(
        "--export-to",
        type=Path,
        default=None,
        help="--stage export writes here (default: the package's weights folder; the "
        "--quick recipe needs it stated, so its run never replaces the shipped model)",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where to train (cpu, cuda, cuda:1, mps); the random draws stay on the CPU, so "
        "the recipe is the same everywhere, though GPU arithmetic rounds differently",
    )
    return p


def main(argv: list[str] | None = None) -> None:
    p = _parser()
    args = p.parse_args(argv)
    try:
        torch.empty(0, device=args.device)
    except (RuntimeError, AssertionError) as e:
        p.error(f"--device {args.device!r} is not usable here ({e}); use --device cpu")
    # import every module a later stage needs now: a run lasts hours, and the working tree
    # may be edited meanwhile (a half-written file must not be imported mid-run)
    from diffkit import _files  # noqa: F401
    from diffkit.tiny import clip, oracle, quality  # noqa: F401

    recipe = RECIPES[args.quick]
    if args.unet_steps:
        recipe = replace(recipe, unet=replace(recipe.unet, steps=args.unet_steps))
    run_dir = args.run_dir or Path("runs/tiny2" + ("-quick" if args.quick else ""))
    if args.quick and args.stage == "export" and args.export_to is None:
        p.error(
            "--quick --stage export needs --export-to DIR (the full recipe's model is the shipped one); "
            f"or load {run_dir / 'pipeline'} directly"
        )
    setup_run(run_dir)
    log.info(
        "recipe tiny2%s, stage %s, run dir %s, resume %s",
        " (quick)" if args.quick else "",
        args.stage,
        run_dir,
        args.resume,
    )
    if args.stage != "all":
        stages = [args.stage]
    elif not args.quick:
        stages = list(STAGES)
    else:  # the classroom run (the shipped judge): export only where --export-to says
        stages = ["vae", "cache", "unet", "polish"] + (["export"] if args.export_to else [])
    for s in stages:
        if s == "export" and args.no_export:
            continue
        run_stage(
            s,
            recipe,
            run_dir,
            resume=args.resume,
            minutes=args.minutes,
            device=args.device,
            export_to=args.export_to or PACKAGE_WEIGHTS,
        )


if __name__ == "__main__":
    main()
