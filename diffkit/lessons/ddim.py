"""The DDIM loop written out (η = 0), right or with one of the usual mistakes, and ``pipe(...)`` itself
with a DDIM scheduler as the reference a student's loop is checked against."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .mistakes import SAMPLER_MISTAKES, Loop

__all__ = [
    "LoopInputs",
    "ddim_by_hand",
    "ddim_scheduler",
    "decode_image",
    "image_size",
    "loop_inputs",
    "reference",
    "require_sd_pipeline",
    "run_loop",
]


def require_sd_pipeline(pipe: Any) -> None:
    import diffusers

    if not isinstance(pipe, diffusers.StableDiffusionPipeline):
        raise InputError(
            f"check_sampler takes a StableDiffusionPipeline (SD 1.x/2.x, diffkit-tiny), got {type(pipe).__name__}; "
            "fix: load one with diffkit.load_pipeline"
        )


def ddim_scheduler(pipe: Any, steps: int) -> Any:
    from ..pipeline import check_steps, make_scheduler

    sched = make_scheduler("ddim", pipe.scheduler.config)
    sched.set_timesteps(check_steps(sched, steps), device=pipe._execution_device)
    return sched


@dataclass(frozen=True)
class LoopInputs:
    """What every version of the loop starts from: the pipeline's own text vectors and x_T."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    x_T: torch.Tensor
    cfg: bool


def loop_inputs(
    pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float, seed: int, hw: Any
) -> LoopInputs:
    cfg = guidance_scale > 1.0  # the pipeline's do_classifier_free_guidance
    device = pipe._execution_device
    cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt)
    h, w = hw
    shape = (1, pipe.unet.config.in_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
    gen = torch.Generator().manual_seed(int(seed))
    x_T = torch.randn(shape, generator=gen, dtype=cond.dtype).to(device)  # diffusers' randn_tensor on a CPU generator
    return LoopInputs(cond, uncond, x_T, cfg)


def _guided(how: str, e_u: torch.Tensor, e_c: torch.Tensor, w: float) -> torch.Tensor:
    """Classifier-free guidance as the pipeline does it ("right"), or as a known mistake."""
    if how in ("right", "cfg_at_w<=1"):
        return e_u + w * (e_c - e_u)
    if how == "u+wc":
        return e_u + w * e_c
    if how == "c+w(c-u)":
        return e_c + w * (e_c - e_u)
    if how == "swapped":
        return e_c + w * (e_u - e_c)
    return e_c  # "none"


@torch.no_grad()
def run_loop(pipe: Any, inp: LoopInputs, steps: int, guidance_scale: float, how: Loop) -> torch.Tensor:
    sched = ddim_scheduler(pipe, steps)
    x = inp.x_T * sched.init_noise_sigma
    T = sched.config.num_train_timesteps
    ab = sched.alphas_cumprod.to(x.device)
    final = sched.final_alpha_cumprod.to(x.device)
    if how.final == "other":
        final = torch.tensor(1.0, device=x.device) if float(final) != 1.0 else ab[0]
    if how.alphas == "float64":
        ab, final = ab.double(), final.double()
    timesteps = sched.timesteps
    if how.timesteps == "no_offset":
        timesteps = timesteps - sched.config.steps_offset
    elif how.timesteps == "linspace":
        timesteps = torch.from_numpy(np.linspace(T - 1, 0, steps).round().astype(np.int64)).to(x.device)
    pred = sched.config.prediction_type
    cfg = inp.cfg or how.guidance == "cfg_at_w<=1"
    w = guidance_scale
    for t in timesteps:
        if not cfg:
            out = pipe.unet(x, t, encoder_hidden_states=inp.cond, return_dict=False)[0]
        else:
            if how.batch == "separate":
                e_u = pipe.unet(x, t, encoder_hidden_states=inp.uncond, return_dict=False)[0]
                e_c = pipe.unet(x, t, encoder_hidden_states=inp.cond, return_dict=False)[0]
            else:
                text = torch.cat([inp.uncond, inp.cond])
                e_u, e_c = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=text, return_dict=False)[0].chunk(2)
            out = _guided(how.guidance, e_u, e_c, w)
        t_prev = t - T // steps if how.prev == "right" else t - 1
        a = ab[t]
        a_prev = ab[t_prev] if t_prev >= 0 else final
        if pred == "epsilon":
            x0, eps = (x - (1 - a) ** 0.5 * out) / a**0.5, out
        elif pred == "v_prediction":
            x0 = a**0.5 * x - (1 - a) ** 0.5 * out
            eps = a**0.5 * out + (1 - a) ** 0.5 * x
        else:
            raise InputError(f"prediction_type {pred!r} is not taught here; fix: use an ε or v model")
        if how.update == "one_line" and pred == "epsilon":
            x = (a_prev / a) ** 0.5 * x + ((1 - a_prev) ** 0.5 - (a_prev * (1 - a) / a) ** 0.5) * eps
        else:
            x = a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
        x = x.to(inp.x_T.dtype)
    return x


@torch.no_grad()
def decode_image(pipe: Any, latents: torch.Tensor, how: Loop | None = None) -> np.ndarray:
    how = how if how is not None else Loop()
    sf = pipe.vae.config.scaling_factor
    z = {"right": latents / sf, "no_scale": latents, "times_scale": latents * sf}[how.decode]
    image = pipe.vae.decode(z, return_dict=False)[0]
    return (image / 2 + 0.5).clamp(0, 1).cpu().permute(0, 2, 3, 1).float().numpy()[0]


def ddim_by_hand(
    pipe: Any,
    prompt: str,
    *,
    steps: int = 20,
    guidance_scale: float = 7.5,
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
    negative_prompt: str | None = None,
    mistake: str | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """The DDIM loop (η = 0) written out, as the lesson's solution: (final latents, image ``(H, W, 3)`` in [0, 1]).

    Equal to ``pipe(...)`` with the DDIM scheduler bit for bit (the tests check it). *mistake*, a key of
    :data:`SAMPLER_MISTAKES`, runs the loop with that mistake instead.
    """
    require_sd_pipeline(pipe)
    how = Loop() if mistake is None else SAMPLER_MISTAKES[mistake][0]
    inp = loop_inputs(pipe, prompt, negative_prompt, float(guidance_scale), seed, image_size(pipe, height, width))
    latents = run_loop(pipe, inp, int(steps), float(guidance_scale), how)
    return latents, decode_image(pipe, latents, how)


def image_size(pipe: Any, height: int | None, width: int | None) -> tuple[int, int]:
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return int(height or default), int(width or default)


_REFERENCES: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[torch.Tensor, np.ndarray]]] = weakref.WeakKeyDictionary()


def reference(pipe: Any, key: tuple) -> tuple[torch.Tensor, np.ndarray]:
    """``pipe(...)`` itself with a DDIM scheduler: its final latents (read by a step-end callback) and image."""
    cache = _REFERENCES.setdefault(pipe, {})
    if key in cache:
        return cache[key]
    from ..reverse.families import family_of, working_pipeline

    prompt, negative_prompt, steps, guidance_scale, seed, (h, w) = key
    family, _ = family_of(pipe)
    work = working_pipeline(pipe, family, False, ddim_scheduler(pipe, steps))
    seen: dict[str, torch.Tensor] = {}

    def keep(_pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        seen["latents"] = kwargs["latents"].detach().clone()
        return {}

    out = work(
        prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        height=h,
        width=w,
        output_type="np",
        callback_on_step_end=keep,
        callback_on_step_end_tensor_inputs=["latents"],
    )
    cache[key] = seen["latents"], np.asarray(out.images[0])
    return cache[key]
