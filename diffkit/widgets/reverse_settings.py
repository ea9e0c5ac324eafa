"""The reverse-chain explorer's arguments: checked before any widget exists (a slider would clamp
them without a word), and the pipeline it runs, loaded from a name or checked as an object."""

from __future__ import annotations

import os
from typing import Any

from ..checks import check_choice, check_float, check_int, check_seed
from ..errors import InputError
from ..i18n import N_
from ..i18n import gettext as _
from ..pipeline import SCHEDULERS, scheduler_name
from ..reverse.families import FLOW_SCHEDULERS

__all__ = [
    "SCHEDULER_ALIASES",
    "check_settings",
    "check_size",
    "default_size",
    "pipeline_for",
    "prediction_type_of",
    "scheduler_choices",
    "short_name",
]


def prediction_type_of(pipe: Any) -> str:
    """What *pipe*'s model predicts, from its scheduler config (``"epsilon"`` before a model is loaded)."""
    from ..reverse.families import family_of

    if pipe is None:
        return "epsilon"
    return family_of(pipe)[0].prediction_type(pipe.scheduler)


def short_name(scheduler: Any, choices: Any = SCHEDULERS) -> str:
    """The short name of *scheduler* among *choices* (the first choice when it has none there)."""
    cls = type(scheduler).__name__
    name = next((short for short, c in dict(choices).items() if c == cls), scheduler_name(scheduler))
    return name if name in choices else next(iter(choices))


def scheduler_choices(pipe: Any) -> dict[str, str]:
    """The schedulers the explorer offers for *pipe*: SD's list, or the flow-matching ones (SD 3, Flux)."""
    from ..reverse.families import family_of

    return SCHEDULERS if pipe is None else family_of(pipe)[0].schedulers


def default_size(pipe: Any, factor: int) -> int:
    """The pipeline's own image size: the U-Net's sample size × the VAE factor, or (SD 3, Flux)
    the pipeline's ``default_sample_size`` × its ``vae_scale_factor``."""
    if pipe is None:
        return 64
    unet = getattr(pipe, "unet", None)
    if unet is not None:
        return int(unet.config.sample_size) * factor
    return int(pipe.default_sample_size) * int(pipe.vae_scale_factor)


SCHEDULER_ALIASES = {cls: short for short, cls in {**SCHEDULERS, **FLOW_SCHEDULERS}.items()}
"""diffusers class names → short names (``"DDIMScheduler"`` → ``"ddim"``), accepted by the explorer."""


def check_settings(
    prompt: Any,
    negative_prompt: Any,
    steps: Any,
    guidance_scale: Any,
    seed: Any,
    scheduler: Any,
    display_size: Any,
    exact: Any,
) -> tuple[int, float, int, str | None, int | None]:
    """The explorer's arguments checked (a slider would clamp them without a word)."""
    steps = check_int("steps", steps, lo=1, hi=1000, hint=N_("25 is usual"))
    guidance_scale = check_float(
        "guidance_scale", guidance_scale, lo=0.0, hi=50.0, hint=N_("7.5 is usual; 0 or 1 turns guidance off")
    )
    seed = check_seed(seed)
    for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if not isinstance(text, str):
            raise InputError(
                _("{name}={text!r} is not text; fix: pass a string such as 'a red circle'").format(name=name, text=text)
            )
    if scheduler is not None:
        scheduler = check_choice(
            "scheduler", SCHEDULER_ALIASES.get(scheduler, scheduler), {**SCHEDULERS, **FLOW_SCHEDULERS}
        )
    if display_size is not None:
        display_size = check_int("display_size", display_size, lo=16, hi=4096, hint=N_("screen pixels"))
    if exact is not None and not isinstance(exact, bool):
        raise InputError(
            _(
                "exact={exact!r} is not True, False or None; fix: pass exact=True for VAE "
                "decodes, exact=False for the fast preview only, or leave it out (exact decodes)"
            ).format(exact=exact)
        )
    return steps, guidance_scale, seed, scheduler, display_size


def pipeline_for(pipe: Any) -> tuple[Any, BaseException | None]:
    """(the pipeline to run, the error that kept it from loading): a name is loaded, an object checked."""
    if pipe is None or isinstance(pipe, (str, os.PathLike)):  # a name: "tiny", a hub id or a folder
        from ..pipeline import load_pipeline

        try:
            return load_pipeline("tiny" if pipe is None else pipe), None
        except (OSError, ValueError) as e:  # shown in the widget, with the fix
            return None, e
    from ..reverse.families import family_of

    family_of(pipe)  # not a pipeline the chain records: InputError naming the supported ones
    return pipe, None


def check_size(size: Any, factor: int, default: int) -> int | None:
    if size is None:
        return None
    hint = _("the model's own size is {size}").format(size=default)
    size = check_int("size", size, lo=factor, hi=2048, hint=hint)
    if size % factor:
        raise InputError(
            _(
                "size={size} is not a multiple of {factor} (the VAE's scale factor); fix: pass {lower} or {upper}"
            ).format(
                size=size, factor=factor, lower=max(factor, size - size % factor), upper=size - size % factor + factor
            )
        )
    return size
