"""``diffkit reverse "a prompt"``: walk the reverse chain and write what each step saw.

Writes into ``--out``: ``strip.png`` (x̂_0 at evenly spaced steps, then the final image),
``steps.gif`` (x̂_0 at every step), ``final.png``, ``steps.csv`` (the tidy per-step table of
:meth:`~diffkit.reverse.trajectory.Trajectory.to_frame`), ``records.csv`` (one row per step:
σ, what the model predicted, which guidance the step used) and ``tokens.csv`` (the tokenizer's
view: CLIP's, or T5's for Flux).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .._files import ensure_folder, removed_on_failure, save_pil, write_csv
from ..i18n import gettext as _

__all__ = ["add_commands", "run_reverse"]


def run_reverse(
    prompt: str,
    *,
    out: str | Path = "out/reverse",
    model: str = "tiny",
    steps: int = 25,
    scheduler: str | None = None,
    guidance_scale: float | None = None,
    seed: int = 0,
    negative_prompt: str | None = None,
    height: int | None = None,
    width: int | None = None,
    true_cfg_scale: float = 1.0,
    max_sequence_length: int | None = None,
    preview: str = "exact",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Run a :class:`~diffkit.reverse.trace.ReverseChain` and write its files into *out*; returns their paths.

    *guidance_scale* None: the pipeline's own default (7.5 for SD, 3.5 for Flux's embedded guidance).
    *true_cfg_scale* and *max_sequence_length* are Flux's.
    """
    import inspect

    from ..pipeline import load_pipeline
    from .previews import to_uint8
    from .trace import ReverseChain

    out = ensure_folder(out)  # before any work: a chain that cannot be saved should not run
    pipe = load_pipeline(model)
    if guidance_scale is None:
        guidance_scale = inspect.signature(type(pipe).__call__).parameters["guidance_scale"].default
    flux = (
        {}
        if true_cfg_scale == 1.0 and max_sequence_length is None
        else dict(true_cfg_scale=true_cfg_scale, max_sequence_length=max_sequence_length)
    )
    chain = ReverseChain(
        pipe,
        prompt,
        steps=steps,
        scheduler=scheduler,
        guidance_scale=guidance_scale,
        seed=seed,
        negative_prompt=negative_prompt,
        height=height,
        width=width,
        **flux,
    )
    traj = chain.run(
        callback=lambda r: log(
            _("step {k}/{n}").format(k=r.index + 1, n=len(chain))
            + f"  t={r.timestep}  σ={r.sigma:.3f}  {r.prediction_symbol}  {r.guidance_label}"
        )
    )
    from PIL import Image

    with removed_on_failure() as written:  # a full disk half-way leaves none of this run's files
        written.append(traj.save_strip(out / "strip.png", mode=preview))
        written.append(traj.save_gif(out / "steps.gif", mode=preview))
        written.append(save_pil(Image.fromarray(to_uint8(traj.image)), out / "final.png"))
        written.append(write_csv(traj.to_frame(), out / "steps.csv"))
        written.append(write_csv(traj.steps_frame(), out / "records.csv"))
        written.append(write_csv(traj.tokens.to_frame(), out / "tokens.csv"))
    for p in written:
        log(_("wrote {path}").format(path=p))
    return written


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``diffkit reverse``."""
    from ..pipeline import SCHEDULERS
    from .families import FLOW_SCHEDULERS

    p = sub.add_parser("reverse", help=_("step through the reverse chain for a prompt and save what each step saw"))
    p.add_argument("prompt", help=_("the text prompt"))
    p.add_argument("--model", default="tiny", help=_("'tiny' (default), a hub id, or a pipeline folder"))
    p.add_argument("--steps", type=int, default=25, help=_("denoising steps (default 25)"))
    p.add_argument(
        "--scheduler",
        choices=sorted({**SCHEDULERS, **FLOW_SCHEDULERS}),
        default=None,
        help=_("default: the model's own (SD 3 and Flux take flow_euler)"),
    )
    p.add_argument(
        "--guidance-scale",
        "--guidance",
        dest="guidance_scale",
        type=float,
        default=None,
        help=_(
            "guidance scale w (default: the model's own, 7.5 for SD, 3.5 for Flux, where it is "
            "embedded in the transformer; --guidance is its old name)"
        ),
    )
    p.add_argument(
        "--true-cfg-scale",
        type=float,
        default=1.0,
        help=_("Flux only: true classifier-free guidance with --negative (two calls a step; default 1, off)"),
    )
    p.add_argument(
        "--max-sequence-length",
        type=int,
        default=None,
        help=_("Flux only: T5 tokens of the prompt (default: the pipeline's, 512)"),
    )
    p.add_argument("--seed", type=int, default=0, help=_("random seed (default 0)"))
    p.add_argument("--negative", default=None, help=_("negative prompt"))
    p.add_argument("--height", type=int, default=None, help=_("image height in pixels (default: the model's own)"))
    p.add_argument("--width", type=int, default=None, help=_("image width in pixels (default: the model's own)"))
    p.add_argument("--preview", choices=["exact", "fast"], default="exact", help=_("how frames are drawn"))
    p.add_argument("--out", default="out/reverse", help=_("folder to write into (default: out/reverse)"))

    def _run(a: argparse.Namespace) -> int:
        run_reverse(
            a.prompt,
            out=a.out,
            model=a.model,
            steps=a.steps,
            scheduler=a.scheduler,
            guidance_scale=a.guidance_scale,
            seed=a.seed,
            negative_prompt=a.negative,
            height=a.height,
            width=a.width,
            true_cfg_scale=a.true_cfg_scale,
            max_sequence_length=a.max_sequence_length,
            preview=a.preview,
        )
        print(_("reverse chain written to {path}").format(path=Path(a.out).resolve()))
        return 0

    p.set_defaults(func=_run)
