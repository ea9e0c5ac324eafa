"""diffkit: touch Stable Diffusion to learn how it works, and audit it for gender bias.

The public API, by topic:

- noise schedules: :mod:`diffkit.schedules` (``get_schedule``, ``from_diffusers``, ``NoiseSchedule``)
- the forward chain: :mod:`diffkit.forward` (``q_sample``, ``q_step``, ``q_sample_all``, ``markov_trajectory``)
- the two-pixel toy and the paint drop: :mod:`diffkit.toy` (``two_pixel_chains``, ``optimal_denoiser``, ``two_pixel_reverse``)
- pipelines: ``load_pipeline`` (hub id, local folder, or ``"tiny"``)
- training on the two-pixel toy: :func:`diffkit.train_toy_denoiser` (L_simple against the exact denoiser)
- the U-Net opened up: :func:`diffkit.unet_anatomy` (its parts in call order, shapes read by hooks)
- the lessons: :mod:`diffkit.lessons` (``check_sampler`` for a hand-written DDIM loop; the theory
  bridge on the toy: ``chain_moments``, ``toy_posterior``, ``toy_score``, ``toy_log_density``)
- the reverse chain: :mod:`diffkit.reverse` (``ReverseChain``, ``Trajectory``, ``StepRecord``, ``tokenize_prompt``)
- plots: :mod:`diffkit.plots`
- sample images: :mod:`diffkit.samples`
- the course: :mod:`diffkit.course` (student and teacher editions, ``diffkit course warm``);
  ``shared_out`` is the folder the course and ``diffkit demo`` share, whatever the working directory
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("diffkit")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# The public names and the module each lives in. Imported on first use (PEP 562), so that
# ``import diffkit.audit.rundir`` or ``diffkit --version`` does not load the reverse chain, the
# U-Net anatomy and the toy with it.
_PUBLIC = {
    "unet_anatomy": "anatomy",
    "get_language": "i18n",
    "set_language": "i18n",
    "forward_latents": "forward",
    "markov_trajectory": "forward",
    "q_sample": "forward",
    "q_sample_all": "forward",
    "q_step": "forward",
    "to_model_range": "forward",
    "to_pil": "forward",
    "SCHEDULERS": "pipeline",
    "load_pipeline": "pipeline",
    "make_scheduler": "pipeline",
    "chain_moments": "lessons",
    "check_sampler": "lessons",
    "posterior_coefficients": "lessons",
    "toy_log_density": "lessons",
    "toy_posterior": "lessons",
    "toy_score": "lessons",
    "ReverseChain": "reverse",
    "StepRecord": "reverse",
    "Trajectory": "reverse",
    "tokenize_prompt": "reverse",
    "SAMPLE_NAMES": "samples",
    "sample_image": "samples",
    "SCHEDULE_NAMES": "schedules",
    "NoiseSchedule": "schedules",
    "from_diffusers": "schedules",
    "get_schedule": "schedules",
    "schedules_frame": "schedules",
    "TWO_PIXEL_IMAGE": "toy",
    "TwoPixelChains": "toy",
    "landing_share": "toy",
    "optimal_denoiser": "toy",
    "paint_drop": "toy",
    "step_density": "toy",
    "two_pixel_chains": "toy",
    "two_pixel_reverse": "toy",
    "shared_out": "_files",
    "ToyDenoiser": "toy_training",
    "train_toy_denoiser": "toy_training",
}

__all__ = ["__version__", *sorted(_PUBLIC)]


_SUBMODULES = frozenset(
    {
        "anatomy",
        "audit",
        "checks",
        "course",
        "demo",
        "errors",
        "forward",
        "i18n",
        "images",
        "lessons",
        "pipeline",
        "plots",
        "reverse",
        "samples",
        "schedules",
        "testing",
        "tiny",
        "toy",
        "toy_training",
        "widgets",
    }
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:  # diffkit.reverse, diffkit.audit, … without importing them first
        return importlib.import_module(f".{name}", __name__)
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'diffkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC, *_SUBMODULES})
