"""The reverse chain's arguments, checked before the pipeline is touched (each error names the fix)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch

from ..checks import check_float, check_seed
from ..errors import InputError
from ..i18n import N_
from ..i18n import gettext as _

__all__ = ["check_flux_options", "check_numbers", "check_size", "check_text", "generator_for", "img2img_strength"]


def generator_for(seed: Any) -> tuple[torch.Generator, int]:
    if isinstance(seed, torch.Generator):
        return seed, int(seed.initial_seed())
    seed = check_seed(seed)
    return torch.Generator().manual_seed(seed), seed


def check_numbers(guidance_scale: Any, guidance_rescale: Any, eta: Any) -> tuple[float, float, float]:
    try:
        guidance_scale = float(guidance_scale)
    except (TypeError, ValueError):
        raise InputError(
            _("guidance_scale must be a number ≥ 0, got {value!r}; fix: pass e.g. 7.5").format(value=guidance_scale)
        ) from None
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise InputError(
            _(
                "guidance_scale must be ≥ 0 and finite, got {value}; fix: 0–1 turns guidance off, 7.5 is usual for SD"
            ).format(value=guidance_scale)
        )
    if not 0.0 <= float(guidance_rescale) <= 1.0:
        raise InputError(
            _("guidance_rescale must be in [0, 1], got {value}; fix: 0 (off) or 0.7 (Lin et al. 2023)").format(
                value=guidance_rescale
            )
        )
    eta = check_float("eta", eta, lo=0.0, hi=1.0, hint=N_("DDIM's η: 0 deterministic, 1 as noisy as DDPM"))
    return guidance_scale, float(guidance_rescale), eta


def check_text(prompt: Any, negative_prompt: Any, record_dtype: Any) -> None:
    if not isinstance(prompt, str):
        raise InputError(
            _("prompt must be a string, got {type}; fix: pass text such as 'a red circle'").format(
                type=type(prompt).__name__
            )
        )
    if negative_prompt is not None and not isinstance(negative_prompt, str):
        raise InputError(
            _("negative_prompt must be a string or None, got {type}; fix: pass text or None").format(
                type=type(negative_prompt).__name__
            )
        )
    if record_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise InputError(
            _("record_dtype must be a floating dtype, got {dtype}; fix: torch.float16 or torch.float32").format(
                dtype=record_dtype
            )
        )


def img2img_strength(work: Any, steps: int, strength: Any, height: Any, width: Any) -> float:
    """*strength* checked (the img2img pipeline's own default when None) against *steps*."""
    if strength is None:  # the img2img pipeline's own default
        strength = inspect.signature(type(work).__call__).parameters["strength"].default
    strength = float(strength)
    if not (0.0 < strength <= 1.0):
        raise InputError(
            _(
                "strength must be in (0, 1], got {strength}: 1 noises the image completely, "
                "small values keep it close to the original; fix: pass e.g. 0.6"
            ).format(strength=strength)
        )
    if int(steps * strength) < 1:
        raise InputError(
            _(
                "steps × strength = {steps} × {strength} < 1 leaves no denoising step; "
                "fix: raise steps to at least {least} or raise strength"
            ).format(steps=steps, strength=strength, least=math.ceil(1 / strength))
        )
    if (height is None) != (width is None):
        raise InputError(
            _(
                "with an image give both height and width, or neither; fix: pass both (the image is resized), "
                "or neither (the image keeps its size)"
            )
        )
    return strength


def check_size(factor: int, height: Any, width: Any) -> None:
    for nm, v in (("height", height), ("width", width)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise InputError(
                _("{name} must be a whole number of pixels, got {value!r}; fix: pass an int such as 512").format(
                    name=nm, value=v
                )
            )
        if v < factor or v % factor:
            lo = max(factor, v // factor * factor)
            raise InputError(
                _("{name}={value} is not a multiple of the VAE factor {factor}; fix: use {lo} or {hi}").format(
                    name=nm, value=v, factor=factor, lo=lo, hi=lo + factor
                )
            )


def check_flux_options(true_cfg_scale: Any, max_sequence_length: Any) -> tuple[float, int | None]:
    """Flux's ``true_cfg_scale`` (≥ 0, finite) and ``max_sequence_length`` (1 … 512 or None)."""
    true_cfg_scale = check_float(
        "true_cfg_scale", true_cfg_scale, lo=0.0, hi=1e6, hint=N_("1 (off) or e.g. 4 with a negative prompt")
    )
    if max_sequence_length is not None:
        from ..checks import check_int

        max_sequence_length = check_int(
            "max_sequence_length",
            max_sequence_length,
            lo=1,
            hi=512,
            hint=N_("Flux's T5 takes at most 512 tokens; 512 is the pipeline's default"),
        )
    return float(true_cfg_scale), max_sequence_length
