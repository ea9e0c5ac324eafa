"""Helpers for two lessons: writing the sampler yourself (notebook 02) and the theory bridge (notebook 03).

**Write the sampler yourself.** :func:`check_sampler` takes what a student's hand-written DDIM
loop returned (the image, or the final latents) and says whether it equals
``pipe(prompt, ...)`` with diffusers' ``DDIMScheduler`` and the same seed, bit for bit; if not,
how far it is and the most likely cause. The causes are found by running the usual mistakes
(:data:`SAMPLER_MISTAKES`) and seeing which one the student's result matches.

**The theory bridge**, on the two-pixel toy (:mod:`diffkit.toy`), all in float64:

- :func:`chain_moments`: the mean scale and variance of x_t given x_0 obtained by iterating the
  Markov chain's moments one step at a time, to set against the closed form q(x_t | x_0);
- :func:`posterior_coefficients`, :func:`toy_posterior`: the DDPM posterior
  q(x_{t−1} | x_t, x_0) = N(μ̃_t, β̃_t I) (Ho et al. 2020, eq. 6–7);
- :func:`toy_log_density`, :func:`toy_score`: the noised data density p_t (a Gaussian mixture:
  the data are a finite set of points) and its score ∇ log p_t, whose scaled negative
  −√(1 − ᾱ_t) ∇ log p_t is the ideal ε̂ (Song et al. 2021, "score-based"; Vincent 2011).

Timesteps are 0-based as in diffusers: ``alphas_cumprod[t]`` is ᾱ after t + 1 noising steps, and
the step before t = 0 is the clean image itself (ᾱ = 1).
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .errors import InputError
from .schedules import NoiseSchedule, get_schedule

__all__ = [
    "SAMPLER_MISTAKES",
    "SamplerCheck",
    "chain_moments",
    "check_sampler",
    "ddim_by_hand",
    "posterior_coefficients",
    "toy_log_density",
    "toy_posterior",
    "toy_score",
]


# ---------------------------------------------------------------------------------------------
# Write the sampler yourself: the reference, the usual mistakes, and the check.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Loop:
    """One way of writing the DDIM loop: every field "right" is what ``pipe(...)`` does."""

    guidance: str = "right"  # "u+wc" | "c+w(c-u)" | "swapped" | "none" | "cfg_at_w<=1"
    timesteps: str = "right"  # "no_offset" | "linspace"
    prev: str = "right"  # "t-1": ᾱ one training step back instead of the next visited timestep
    final: str = "right"  # "other": 1.0 where the scheduler uses ᾱ_0, or the reverse
    batch: str = "right"  # "separate": two U-Net calls of batch 1 instead of one of batch 2
    alphas: str = "right"  # "float64"
    update: str = "right"  # "one_line": x_{t′} = √(ᾱ′/ᾱ)·x_t + (√(1−ᾱ′) − √(ᾱ′(1−ᾱ)/ᾱ))·ε̂
    decode: str = "right"  # "no_scale" | "times_scale"


SAMPLER_MISTAKES: dict[str, tuple[_Loop, str]] = {
    "guidance u + w·c": (
        _Loop(guidance="u+wc"),
        "guidance formula: it matches ε̂_u + w·ε̂_c; classifier-free guidance is ε̂ = ε̂_u + w·(ε̂_c − ε̂_u) "
        "(w = guidance_scale), the unconditional output moved w times the difference towards the conditional one",
    ),
    "guidance c + w·(c − u)": (
        _Loop(guidance="c+w(c-u)"),
        "guidance formula: it matches ε̂_c + w·(ε̂_c − ε̂_u); the guided output starts from the unconditional "
        "one: ε̂ = ε̂_u + w·(ε̂_c − ε̂_u)",
    ),
    "halves swapped": (
        _Loop(guidance="swapped"),
        "batch order: it matches the two halves swapped; encode_prompt returns (prompt, negative), and the "
        "pipeline's batch is [unconditional, conditional]: torch.cat([uncond, cond]), then .chunk(2) gives "
        "ε̂_u first",
    ),
    "no guidance": (
        _Loop(guidance="none"),
        "guidance: it matches the conditional output alone; combine the halves with guidance_scale: "
        "ε̂ = ε̂_u + w·(ε̂_c − ε̂_u)",
    ),
    "guidance at w ≤ 1": (
        _Loop(guidance="cfg_at_w<=1"),
        "guidance at guidance_scale ≤ 1: the pipeline then skips the unconditional half and calls the U-Net "
        "once, on x alone with the prompt's vectors, and uses that output as it is",
    ),
    "timesteps without steps_offset": (
        _Loop(timesteps="no_offset"),
        "timesteps: it matches 0, T/steps, … without the config's steps_offset; use the scheduler's own "
        "list after set_timesteps(steps) (scheduler.timesteps)",
    ),
    "timesteps from linspace": (
        _Loop(timesteps="linspace"),
        "timesteps: it matches evenly spaced timesteps from T − 1 down to 0; use the scheduler's own list "
        "after set_timesteps(steps) (scheduler.timesteps: 'leading' spacing plus steps_offset)",
    ),
    "ᾱ of t − 1": (
        _Loop(prev="t-1"),
        "ᾱ_prev: it matches alphas_cumprod[t − 1], one training step back; a DDIM step jumps to the next "
        "visited timestep t′ = t − T // steps, so ᾱ_prev = alphas_cumprod[t′]",
    ),
    "ᾱ_prev at the last step": (
        _Loop(final="other"),
        "the last step: there is no next timestep, and the scheduler then uses scheduler.final_alpha_cumprod "
        "(1.0 when the config's set_alpha_to_one is True, else ᾱ_0 = alphas_cumprod[0])",
    ),
    "two U-Net calls": (
        _Loop(batch="separate"),
        "batching: it matches two U-Net calls of one sample each; the pipeline makes one call on the batch "
        "[x, x] with the text vectors [uncond, cond], and a different batch rounds differently in the last bits",
    ),
    "float64 ᾱ": (
        _Loop(alphas="float64"),
        "precision: it matches ᾱ in float64; use the scheduler's float32 ᾱ (scheduler.alphas_cumprod)",
    ),
    "DDIM update in one line": (
        _Loop(update="one_line"),
        "operation order: it matches the DDIM step written as one line, √(ᾱ′/ᾱ)·x_t + (…)·ε̂; the same "
        "mathematics rounds differently. Do as DDIMScheduler.step does: x̂_0 first, then "
        "x_{t′} = √ᾱ_{t′}·x̂_0 + √(1−ᾱ_{t′})·ε̂",
    ),
    "decoded without ÷ scaling_factor": (
        _Loop(decode="no_scale"),
        "decoding: it matches decoding the latents as they are; the VAE takes latents / vae.config.scaling_factor",
    ),
    "decoded × scaling_factor": (
        _Loop(decode="times_scale"),
        "decoding: it matches latents × scaling_factor; divide instead: vae.decode(latents / vae.config.scaling_factor)",
    ),
}
"""The usual mistakes of a hand-written DDIM loop: name → (how the loop differs, the hint to give)."""

_CHECKLIST = (
    "check, in order: the initial latents (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) × "
    "init_noise_sigma, before any U-Net call), the text vectors (pipe.encode_prompt, batch [uncond, cond]), "
    "the timesteps (scheduler.timesteps), the guidance ε̂_u + w·(ε̂_c − ε̂_u), ᾱ_t and ᾱ_prev "
    "(final_alpha_cumprod after the last step), x̂_0 then x_{t′} in float32, and the decoding "
    "(latents / vae.config.scaling_factor, then (image / 2 + 0.5).clamp(0, 1))"
)


def _sd_pipeline(pipe: Any) -> None:
    import diffusers

    if not isinstance(pipe, diffusers.StableDiffusionPipeline):
        raise InputError(
            f"check_sampler takes a StableDiffusionPipeline (SD 1.x/2.x, diffkit-tiny), got {type(pipe).__name__}; "
            "fix: load one with diffkit.load_pipeline"
        )


def _ddim(pipe: Any, steps: int) -> Any:
    from .pipeline import check_steps, make_scheduler

    sched = make_scheduler("ddim", pipe.scheduler.config)
    sched.set_timesteps(check_steps(sched, steps), device=pipe._execution_device)
    return sched


@dataclass(frozen=True)
class _Inputs:
    """What every version of the loop starts from: the pipeline's own text vectors and x_T."""

    cond: torch.Tensor
    uncond: torch.Tensor | None
    x_T: torch.Tensor
    cfg: bool


def _inputs(pipe: Any, prompt: str, negative_prompt: str | None, guidance_scale: float, seed: int, hw: Any) -> _Inputs:
    cfg = guidance_scale > 1.0  # the pipeline's do_classifier_free_guidance
    device = pipe._execution_device
    cond, uncond = pipe.encode_prompt(prompt, device, 1, True, negative_prompt)
    h, w = hw
    shape = (1, pipe.unet.config.in_channels, h // pipe.vae_scale_factor, w // pipe.vae_scale_factor)
    gen = torch.Generator().manual_seed(int(seed))
    x_T = torch.randn(shape, generator=gen, dtype=cond.dtype).to(device)  # diffusers' randn_tensor on a CPU generator
    return _Inputs(cond, uncond, x_T, cfg)


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
def _loop(pipe: Any, inp: _Inputs, steps: int, guidance_scale: float, how: _Loop) -> torch.Tensor:
    sched = _ddim(pipe, steps)
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
def _decode(pipe: Any, latents: torch.Tensor, how: _Loop = _Loop()) -> np.ndarray:
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
    _sd_pipeline(pipe)
    how = _Loop() if mistake is None else SAMPLER_MISTAKES[mistake][0]
    inp = _inputs(pipe, prompt, negative_prompt, float(guidance_scale), seed, _size(pipe, height, width))
    latents = _loop(pipe, inp, int(steps), float(guidance_scale), how)
    return latents, _decode(pipe, latents, how)


def _size(pipe: Any, height: int | None, width: int | None) -> tuple[int, int]:
    default = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return int(height or default), int(width or default)


_REFERENCES: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[torch.Tensor, np.ndarray]]] = weakref.WeakKeyDictionary()


def _reference(pipe: Any, key: tuple) -> tuple[torch.Tensor, np.ndarray]:
    """``pipe(...)`` itself with a DDIM scheduler: its final latents (read by a step-end callback) and image."""
    cache = _REFERENCES.setdefault(pipe, {})
    if key in cache:
        return cache[key]
    from .reverse.families import family_of, working_pipeline

    prompt, negative_prompt, steps, guidance_scale, seed, (h, w) = key
    family, _ = family_of(pipe)
    work = working_pipeline(pipe, family, False, _ddim(pipe, steps))
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
    _sd_pipeline(pipe)
    from .checks import check_seed
    from .pipeline import check_steps

    steps = check_steps(pipe.scheduler, steps)
    seed = check_seed(seed)
    guidance_scale = float(guidance_scale)
    hw = _size(pipe, height, width)
    key = (prompt, negative_prompt, steps, guidance_scale, seed, hw)
    ref_latents, ref_image = _reference(pipe, key)
    kind, mine = _as_result(result, pipe.unet.config.in_channels)
    ref = ref_image if kind == "image" else ref_latents[0].float().cpu().numpy()

    def verdict(cause: str | None, hint: str, certain: bool = False, equal: bool = False) -> SamplerCheck:
        d = np.abs(mine.astype(np.float64) - ref) if mine.shape == ref.shape else np.full(1, np.inf)
        return SamplerCheck(equal, kind, float(d.max()), float(d.mean()), cause, certain, hint)

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
        return verdict(None, _CHECKLIST)
    d_ref = float(np.abs(mine.astype(np.float64) - ref).max())
    inp = _inputs(pipe, prompt, negative_prompt, guidance_scale, seed, hw)
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
        latents = _loop(pipe, inp, steps, guidance_scale, how)
        theirs = _decode(pipe, latents, how) if kind == "image" else latents[0].float().cpu().numpy()
        d = float(np.abs(mine.astype(np.float64) - theirs).max())
        if d == 0.0:
            return verdict(name, SAMPLER_MISTAKES[name][1], certain=True)
        if d < best_d:
            best, best_d = name, d
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
    return verdict(None, "none of the usual mistakes matches; " + _CHECKLIST)


# ---------------------------------------------------------------------------------------------
# The theory bridge, on the two-pixel toy (float64).
# ---------------------------------------------------------------------------------------------


def chain_moments(schedule: NoiseSchedule | str = "linear") -> tuple[np.ndarray, np.ndarray]:
    """(mean scale, variance) of x_t given x_0 for every t, by iterating the Markov chain's moments.

    One step x_t = √α_t·x_{t−1} + √β_t·ε_t maps a Gaussian with mean m·x_0 and variance v to
    one with mean √α_t·m·x_0 and variance α_t·v + β_t. Starting from m = 1, v = 0 (x_0 itself),
    this loop never uses the closed form; the closed form says m_t = √ᾱ_t and v_t = 1 − ᾱ_t.
    """
    s = get_schedule(schedule)
    scale = np.empty(s.num_train_timesteps)
    var = np.empty(s.num_train_timesteps)
    m, v = 1.0, 0.0
    for t, (a, b) in enumerate(zip(s.alphas, s.betas)):
        m, v = math.sqrt(a) * m, a * v + b
        scale[t], var[t] = m, v
    return scale, var


def posterior_coefficients(t: int, schedule: NoiseSchedule | str = "linear") -> tuple[float, float, float]:
    """(coefficient of x_0, coefficient of x_t, variance β̃_t) of q(x_{t−1} | x_t, x_0) (Ho et al. 2020, eq. 7).

    μ̃_t = √ᾱ_{t−1}·β_t/(1−ᾱ_t)·x_0 + √α_t·(1−ᾱ_{t−1})/(1−ᾱ_t)·x_t and β̃_t = (1−ᾱ_{t−1})/(1−ᾱ_t)·β_t,
    with ᾱ_{t−1} = 1 at t = 0 (the step before the first is the clean image: μ̃ = x_0, β̃ = 0).
    """
    s = get_schedule(schedule)
    tt = s.check_timestep(t)
    if tt.ndim != 0:
        raise InputError(f"posterior_coefficients takes one timestep, got {t!r}")
    tt = int(tt)
    if tt == 0:  # x_{−1} is x_0 itself: exactly, not by rounding β_0/(1 − ᾱ_0) to 1
        return 1.0, 0.0, 0.0
    ab_t = float(s.alphas_cumprod[tt])
    ab_prev = float(s.alphas_cumprod[tt - 1]) if tt > 0 else 1.0
    beta, alpha = float(s.betas[tt]), float(s.alphas[tt])
    c0 = math.sqrt(ab_prev) * beta / (1 - ab_t)
    ct = math.sqrt(alpha) * (1 - ab_prev) / (1 - ab_t)
    return c0, ct, (1 - ab_prev) / (1 - ab_t) * beta


def toy_posterior(x_t: Any, x0: Any, t: int, schedule: NoiseSchedule | str = "linear") -> tuple[torch.Tensor, float]:
    """q(x_{t−1} | x_t, x_0) = N(μ̃, β̃·I): (μ̃ as float64, β̃) for points *x_t* and clean points *x0* (model units)."""
    c0, ct, var = posterior_coefficients(t, schedule)
    x_t = torch.as_tensor(x_t, dtype=torch.float64)
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    return c0 * x0 + ct * x_t, var


def _sq_dist(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """‖x_m − c_n‖² ``(M, N)``, computed directly (torch.cdist's matrix-product shortcut loses digits)."""
    return (x[:, None, :] - centres[None, :, :]).pow(2).sum(-1)


def _mixture(x: Any, t: int, data: Any, schedule: NoiseSchedule | str) -> tuple[torch.Tensor, torch.Tensor, float]:
    s = get_schedule(schedule)
    tt = int(s.check_timestep(t))
    ab = float(s.alphas_cumprod[tt])
    x = torch.as_tensor(x, dtype=torch.float64)
    data = torch.as_tensor(data, dtype=torch.float64).reshape(-1, x.shape[-1])
    return x, data, ab


def toy_log_density(x: Any, t: int, data: Any, schedule: NoiseSchedule | str = "linear") -> torch.Tensor:
    """log p_t(x) when the data are exactly the points *data* ``(N, D)``: a Gaussian mixture.

    q(x_t | x_0 = y_i) = N(√ᾱ_t·y_i, (1 − ᾱ_t)·I), so p_t = (1/N)·Σ_i N(x; √ᾱ_t·y_i, (1 − ᾱ_t)·I).
    *x* is ``(M, D)``; returns ``(M,)`` in float64 (differentiable in *x*).
    """
    x, data, ab = _mixture(x, t, data, schedule)
    var = 1.0 - ab
    d2 = _sq_dist(x, ab**0.5 * data)
    D = x.shape[-1]
    return torch.logsumexp(-d2 / (2 * var), dim=1) - math.log(len(data)) - 0.5 * D * math.log(2 * math.pi * var)


def toy_score(x: Any, t: int, data: Any, schedule: NoiseSchedule | str = "linear") -> torch.Tensor:
    """∇_x log p_t(x) of the mixture of :func:`toy_log_density`, in closed form, float64 ``(M, D)``.

    ∇ log p_t(x) = Σ_i w_i·(√ᾱ_t·y_i − x)/(1 − ᾱ_t), w = softmax_i(−‖x − √ᾱ_t·y_i‖² / (2(1 − ᾱ_t))):
    each component pulls x towards its centre, weighted by how likely it made x. Since
    Σ w_i·y_i = E[x_0 | x_t] (:func:`diffkit.toy.optimal_denoiser`), −√(1 − ᾱ_t)·∇ log p_t is the
    ideal ε̂.
    """
    x, data, ab = _mixture(x, t, data, schedule)
    var = 1.0 - ab
    w = torch.softmax(-_sq_dist(x, ab**0.5 * data) / (2 * var), dim=1)
    return (ab**0.5 * (w @ data) - x) / var
