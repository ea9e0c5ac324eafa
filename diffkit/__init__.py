"""diffkit: touch Stable Diffusion to learn how it works, and audit it for gender bias.

The public API, by topic:

- noise schedules: :mod:`diffkit.schedules` (``get_schedule``, ``from_diffusers``, ``NoiseSchedule``)
- the forward chain: :mod:`diffkit.forward` (``q_sample``, ``q_step``, ``q_sample_all``, ``markov_trajectory``)
- the two-pixel toy and the paint drop: :mod:`diffkit.toy` (``two_pixel_chains``, ``optimal_denoiser``, ``two_pixel_reverse``)
- pipelines: ``load_pipeline`` (hub id, local folder, or ``"tiny"``)
- training on the two-pixel toy: :func:`diffkit.train_toy_denoiser` (L_simple against the exact denoiser)
- the U-Net opened up: :func:`diffkit.unet_anatomy` (its parts in call order, shapes read by hooks)
- the reverse chain: :mod:`diffkit.reverse` (``ReverseChain``, ``Trajectory``, ``StepRecord``, ``tokenize_prompt``)
- plots: :mod:`diffkit.plots`
- sample images: :mod:`diffkit.samples`
"""

from __future__ import annotations

__version__ = "0.1.0"

from .anatomy import unet_anatomy
from .forward import (
    forward_latents,
    markov_trajectory,
    q_sample,
    q_sample_all,
    q_step,
    to_model_range,
    to_pil,
)
from .pipeline import SCHEDULERS, load_pipeline, make_scheduler
from .reverse import ReverseChain, StepRecord, Trajectory, tokenize_prompt
from .samples import SAMPLE_NAMES, sample_image
from .schedules import (
    SCHEDULE_NAMES,
    NoiseSchedule,
    from_diffusers,
    get_schedule,
    schedules_frame,
)
from .toy import (
    TWO_PIXEL_IMAGE,
    TwoPixelChains,
    landing_share,
    optimal_denoiser,
    paint_drop,
    step_density,
    two_pixel_chains,
    two_pixel_reverse,
)
from .toy_training import ToyDenoiser, train_toy_denoiser

__all__ = [
    "SAMPLE_NAMES",
    "SCHEDULERS",
    "SCHEDULE_NAMES",
    "TWO_PIXEL_IMAGE",
    "NoiseSchedule",
    "ReverseChain",
    "StepRecord",
    "Trajectory",
    "TwoPixelChains",
    "__version__",
    "forward_latents",
    "from_diffusers",
    "get_schedule",
    "landing_share",
    "load_pipeline",
    "unet_anatomy",
    "train_toy_denoiser",
    "ToyDenoiser",
    "make_scheduler",
    "markov_trajectory",
    "optimal_denoiser",
    "paint_drop",
    "q_sample",
    "q_sample_all",
    "q_step",
    "sample_image",
    "schedules_frame",
    "step_density",
    "to_model_range",
    "to_pil",
    "tokenize_prompt",
    "two_pixel_chains",
    "two_pixel_reverse",
]
