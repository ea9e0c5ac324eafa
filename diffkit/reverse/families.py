"""Pipeline families: which diffusers classes the reverse chain records, and what each one's tensors are.

One small :class:`Family` adapter per family (SD 1.x/2.x, SDXL, SD 3) says which pipeline
classes, which denoiser (``unet`` or ``transformer``), whether it is flow matching and what its
model predicts; :func:`family_of` finds a pipeline's, :func:`scheduler_for` gives a chain a
fresh scheduler and :func:`working_pipeline` the pipeline it runs (never the user's object).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from ..errors import InputError

__all__ = ["FAMILIES", "FLOW_SCHEDULERS", "Family", "family_of", "scheduler_for", "working_pipeline"]

FLOW_SCHEDULERS: dict[str, str] = {"flow_euler": "FlowMatchEulerDiscreteScheduler"}
"""Short names of the flow-matching schedulers SD 3 pipelines accept."""


@dataclass(frozen=True)
class Family:
    """What :class:`~diffkit.reverse.trace.ReverseChain` needs to know about one pipeline family."""

    name: str
    txt2img: str
    img2img: str
    denoiser: str  # the pipeline attribute that predicts: "unet" or "transformer"
    flow: bool  # flow matching: x_t = (1 − σ) x_0 + σ ε and the model predicts v = ε − x_0

    @property
    def schedulers(self) -> dict[str, str]:
        """Short scheduler names this family accepts, and their diffusers classes."""
        from ..pipeline import SCHEDULERS

        return FLOW_SCHEDULERS if self.flow else SCHEDULERS

    def size_factor(self, work: Any) -> int:
        """Image sizes must be multiples of this: the VAE factor (× SD 3's patch size)."""
        from ..images import vae_factor

        return vae_factor(work) * (int(getattr(work, "patch_size", 1) or 1) if self.flow else 1)

    def prediction_type(self, scheduler: Any) -> str:
        """``"epsilon"``, ``"v_prediction"`` (from the scheduler config) or ``"flow"``."""
        return "flow" if self.flow else str(scheduler.config.get("prediction_type", "epsilon"))


FAMILIES: tuple[Family, ...] = (
    Family("sd", "StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "unet", False),
    Family("sdxl", "StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "unet", False),
    Family("sd3", "StableDiffusion3Pipeline", "StableDiffusion3Img2ImgPipeline", "transformer", True),
)
"""The supported pipeline families."""


def family_of(pipe: Any) -> tuple[Family, bool]:
    """(the :class:`Family` of *pipe*, whether *pipe* is an img2img pipeline)."""
    import diffusers

    for fam in FAMILIES:
        for name, img2img in ((fam.txt2img, False), (fam.img2img, True)):
            cls = getattr(diffusers, name, None)
            if cls is not None and isinstance(pipe, cls):
                return fam, img2img
    names = ", ".join(n for f in FAMILIES for n in (f.txt2img, f.img2img))
    raise InputError(
        f"{type(pipe).__name__} is not supported: ReverseChain records {names}; fix: load one with "
        "diffkit.load_pipeline (a Stable Diffusion 1.x/2.x, SDXL or SD 3 model, or 'tiny')"
    )


def scheduler_for(pipe: Any, family: Family, scheduler: str | Any | None) -> Any:
    """A fresh scheduler for the chain: never the pipeline's own object, whose state ``set_timesteps`` changes."""
    import diffusers

    if scheduler is None:
        return type(pipe.scheduler).from_config(pipe.scheduler.config)
    if isinstance(scheduler, str):
        names = family.schedulers
        if scheduler not in names:
            raise InputError(
                f"unknown scheduler {scheduler!r} for {type(pipe).__name__}; fix: choose one of {sorted(names)}"
            )
        return getattr(diffusers, names[scheduler]).from_config(pipe.scheduler.config)
    if hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "config"):
        return type(scheduler).from_config(scheduler.config)
    raise InputError(f"scheduler must be a name or a diffusers scheduler, got {type(scheduler).__name__}; "
                     "fix: pass a name such as 'ddim'")


def working_pipeline(pipe: Any, family: Family, img2img: bool, scheduler: Any) -> Any:
    """A pipeline of the right class sharing *pipe*'s modules, with *scheduler* as its own.

    A shallow copy when *pipe* already has the class (no ``__init__``, so no config is
    rewritten); otherwise diffusers' public ``from_pipe``, given a throwaway scheduler so that
    its ``__init__`` rewrites nothing the user holds. Either way *scheduler* is then set as an
    attribute, untouched.
    """
    import diffusers

    cls = getattr(diffusers, family.img2img if img2img else family.txt2img)
    if isinstance(pipe, cls):
        work = copy.copy(pipe)
    else:
        work = cls.from_pipe(pipe, scheduler=type(scheduler).from_config(scheduler.config))
    work.scheduler = scheduler
    work.set_progress_bar_config(disable=True)
    return work
