""":func:`check_sampler`: does a hand-written DDIM loop's result equal ``pipe(...)``, bit for bit, and if
not, which of the usual mistakes does it match?"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .ddim import decode_image, image_size, loop_inputs, reference, require_sd_pipeline, run_loop
from .mistakes import CHECKLIST, SAMPLER_MISTAKES

__all__ = ["SamplerCheck", "check_sampler"]


@dataclass(frozen=True)
class SamplerCheck:
    """The verdict of :func:`check_sampler`; ``print`` it, or read its fields."""

    equal: bool
    kind: str  # "image" or "latents"
    max_abs_diff: float
    mean_abs_diff: float
    cause: str | None  # a key of SAMPLER_MISTAKES, "range", "shape", "rounding" or None
    certain: bool  # the result equals the loop with that mistake, bit for bit
    hint: str

    def __str__(self) -> str:
        if self.equal:
            return f"your {self.kind} {self._verb} pipe(...)'s, bit for bit: equal = True"
        how_sure = "the cause" if self.certain else "most likely cause"
        return (
            f"your {self.kind} {'differs' if self.kind == 'image' else 'differ'} from pipe(...)'s: equal = False; "
            f"largest difference {self.max_abs_diff:.3g}, "
            f"mean {self.mean_abs_diff:.3g}\n{how_sure}: {self.hint}"
        )

    @property
    def _verb(self) -> str:
        return "equals" if self.kind == "image" else "equal"

    def __repr__(self) -> str:
        return str(self)


def _as_result(result: Any, latent_channels: int) -> tuple[str, np.ndarray]:
    """("image", ``(H, W, 3)`` float) or ("latents", ``(C, h, w)`` float) from what the student returned."""
    from PIL import Image

    if isinstance(result, Image.Image):
        return "image", np.asarray(result.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(result, torch.Tensor):
        result = result.detach().cpu().float().numpy()
    a = np.asarray(result)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    a = np.squeeze(a, axis=0) if a.ndim == 4 and a.shape[0] == 1 else a
    if a.ndim == 3 and a.shape[0] == latent_channels and a.shape[-1] != 3:
        return "latents", a.astype(np.float32)
    if a.ndim == 3 and a.shape[-1] == 3:
        return "image", a.astype(np.float32)
    if a.ndim == 3 and a.shape[0] == 3:
        return "image", np.moveaxis(a, 0, -1).astype(np.float32)
    raise InputError(
        f"check_sampler takes the image (H, W, 3) in [0, 1] or the final latents (1, {latent_channels}, h, w), "
        f"got shape {a.shape}; fix: return image[0].permute(1, 2, 0).numpy() or the latents"
    )


def _closest_mistake(
    pipe: Any, inp: Any, mine: np.ndarray, kind: str, steps: int, guidance_scale: float
) -> tuple[str | None, float]:
    """The mistake of :data:`SAMPLER_MISTAKES` whose loop comes closest to *mine* (stopping at an
    exact match), and its largest difference; mistakes that cannot apply here are skipped."""
    cfg = inp.cfg
    best, best_d = None, math.inf
    for name, (how, _hint) in SAMPLER_MISTAKES.items():
        if cfg and how.guidance == "cfg_at_w<=1":
            continue  # a mistake only at w ≤ 1
        if not cfg and (how.guidance not in ("right", "cfg_at_w<=1") or how.batch != "right"):
            continue  # mistakes of the two halves: at w ≤ 1 there is one
        if kind == "latents" and how.decode != "right":
            continue
        if how.timesteps == "no_offset" and not pipe.scheduler.config.get("steps_offset", 0):
            continue
        latents = run_loop(pipe, inp, steps, guidance_scale, how)
        theirs = decode_image(pipe, latents, how) if kind == "image" else latents[0].float().cpu().numpy()
        d = float(np.abs(mine.astype(np.float64) - theirs).max())
        if d < best_d:
            best, best_d = name, d
        if d == 0.0:
            break
    return best, best_d


def check_sampler(
    result: Any,
    pipe: Any,
    prompt: str,
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    diagnose: bool = True,
) -> SamplerCheck:
    """Does *result*, from a hand-written DDIM loop, equal ``pipe(prompt, ...)`` with DDIM, bit for bit?

    *result* is the image (``(H, W, 3)`` in [0, 1] as ``output_type="np"`` gives it, a PIL image, or a
    ``(1, 3, H, W)`` tensor in [0, 1]) or the final latents ``(1, C, h, w)``. The reference is
    the pipeline itself, run with ``DDIMScheduler.from_config(pipe.scheduler.config)``,
    ``num_inference_steps=steps``, *guidance_scale*, *negative_prompt* and
    ``generator=torch.Generator().manual_seed(seed)`` (η = 0, diffusers' default).

    When it differs, and *diagnose* is true, each of :data:`SAMPLER_MISTAKES` is run (one
    sampling loop each) and the one that the result matches (exactly, or much more closely than
    the reference) is named with a hint.
    """
    require_sd_pipeline(pipe)
    from ..checks import check_seed
    from ..pipeline import check_steps

    steps = check_steps(pipe.scheduler, steps)
    seed = check_seed(seed)
    guidance_scale = float(guidance_scale)
    hw = image_size(pipe, height, width)
    key = (prompt, negative_prompt, steps, guidance_scale, seed, hw)
    ref_latents, ref_image = reference(pipe, key)
    kind, mine = _as_result(result, pipe.unet.config.in_channels)
    ref = ref_image if kind == "image" else ref_latents[0].float().cpu().numpy()

    diff = np.abs(mine.astype(np.float64) - ref) if mine.shape == ref.shape else np.full(1, np.inf)

    def verdict(cause: str | None, hint: str, certain: bool = False, equal: bool = False) -> SamplerCheck:
        return SamplerCheck(equal, kind, float(diff.max()), float(diff.mean()), cause, certain, hint)

    if mine.shape != ref.shape:
        return verdict(
            "shape", f"the shape {mine.shape} is not pipe(...)'s {ref.shape}: check height, width and the latent size"
        )
    if np.array_equal(mine, ref):
        return verdict(None, "", certain=True, equal=True)
    if kind == "image" and (mine.min() < -1e-3 or mine.max() > 1 + 1e-3):
        return verdict(
            "range",
            f"the image spans [{mine.min():.2f}, {mine.max():.2f}]: the VAE gives [−1, 1]; map it to [0, 1] "
            "with (image / 2 + 0.5).clamp(0, 1)",
            certain=True,
        )
    if not diagnose:
        return verdict(None, CHECKLIST)
    d_ref = float(diff.max())
    inp = loop_inputs(pipe, prompt, negative_prompt, guidance_scale, seed, hw)
    best, best_d = _closest_mistake(pipe, inp, mine, kind, steps, guidance_scale)
    if best is not None and best_d == 0.0:
        return verdict(best, SAMPLER_MISTAKES[best][1], certain=True)
    if best is not None and best_d < 0.1 * d_ref:
        return verdict(best, SAMPLER_MISTAKES[best][1])
    scale = float(np.abs(ref).max())
    if d_ref < 1e-4 * max(scale, 1.0):
        return verdict(
            "rounding",
            "rounding: the result is within a few float32 roundings of pipe(...)'s, so the mathematics is right "
            "and an operation is done in another order or dtype; follow DDIMScheduler.step in float32: "
            "x̂_0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t, then x_{t′} = √ᾱ_{t′}·x̂_0 + √(1−ᾱ_{t′})·ε̂",
        )
    return verdict(None, "none of the usual mistakes matches; " + CHECKLIST)
