"""One scheduler step as a record: its stage, its noise level, its numbers and its compact tensors.

The recorder (:mod:`diffkit.reverse.recorder`) observes a step; :func:`make_record` turns what it
saw into a frozen :class:`~diffkit.reverse.records.StepRecord`: (σ, ᾱ) of the point the model
was evaluated at, x̂_0 (the scheduler's, or the formula's when it gives none), root-mean-square
scalars computed on the device and fetched in one transfer with the finiteness check, and
compact copies of ε̂_u, ε̂_c, ε̂, x̂_0 and x_{t−1} on the CPU.
"""

from __future__ import annotations

import math
import types
from typing import Any

import torch

from ..errors import NonFiniteLatentsError
from .records import StepRecord, predicted_x0

__all__ = ["make_record", "noise_level", "scheduler_stage"]


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square as a 0-d float32 tensor on x's device (no host sync)."""
    return x.detach().float().pow(2).mean().sqrt()


def scheduler_stage(sched: Any) -> str:
    """The stage of the step *sched* is about to take: Heun's ``"predictor"``/``"corrector"``,
    PNDM's Runge–Kutta ``"prk"`` or ``"plms"``, else ``"step"``. Call before ``scheduler.step``."""
    if getattr(sched, "order", 1) == 2 and hasattr(sched, "state_in_first_order"):
        return "predictor" if sched.state_in_first_order else "corrector"
    prk = getattr(sched, "prk_timesteps", None)
    if prk is not None and hasattr(sched, "counter"):
        return "prk" if sched.counter < len(prk) and not sched.config.skip_prk_steps else "plms"
    return "step"


def noise_level(sched: Any, t: Any, *, flow: bool) -> tuple[float, float]:
    """(σ, ᾱ) of the point the model was just evaluated at; call after ``scheduler.step``.

    σ is the scheduler's: k-diffusion's √((1 − ᾱ)/ᾱ) for DDPM-type schedules, the
    flow-matching σ_t for SD 3 (whose ᾱ is then the VP equivalent (1−σ)²/((1−σ)² + σ²)).
    """
    sigmas = getattr(sched, "sigmas", None)
    idx = getattr(sched, "step_index", None)
    if sigmas is not None and idx is not None:
        sigma = float(sigmas[idx - 1])
        if flow:
            return sigma, (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)
        return sigma, 1.0 / (1.0 + sigma**2)
    ab = float(sched.alphas_cumprod[int(t)])
    return math.sqrt((1.0 - ab) / ab), ab


def _stats(latents, text, noise_pred, x0, prev, uncond, prev_x0, *, index: int, n_steps: int, t: Any) -> dict:
    """The step's scalars, computed on the device and fetched in one go, with the finiteness check."""
    names = ["x_t", "eps_text", "eps", "x0_hat", "x_prev"]
    vals = [_rms(latents), _rms(text), _rms(noise_pred), _rms(x0), _rms(prev)]
    if uncond is not None:
        names += ["eps_uncond", "guidance", "cos_eps_text_uncond"]
        vals += [
            _rms(uncond),
            _rms(text.float() - uncond.float()),
            torch.nn.functional.cosine_similarity(text.float().flatten(), uncond.float().flatten(), dim=0),
        ]
    if prev_x0 is not None:
        names.append("x0_hat_change")
        vals.append(_rms(x0.float() - prev_x0))
    vals.append(torch.isfinite(prev).all().float())
    values = torch.stack([v.float() for v in vals]).tolist()
    if values.pop() != 1.0:
        raise NonFiniteLatentsError(
            f"the latents became NaN or inf at step {index} of {n_steps} (t={float(t):g}); the chain "
            "stops here. Usual causes: float16 overflow (fix: load the pipeline in float32: "
            "load_pipeline(..., dtype='float32')), a very large guidance_scale, or broken weights"
        )
    return dict(zip(names, values))


def make_record(
    *,
    index: int,
    n_steps: int,
    t: Any,
    stage: str,
    latents: torch.Tensor,
    noise_pred: torch.Tensor,
    output: tuple[torch.Tensor | None, torch.Tensor] | None,
    step_output: Any,
    scheduler: Any,
    flow: bool,
    sigma_scaled: bool,
    prediction_type: str,
    guidance_scale: float,
    guidance: str,
    true_cfg_scale: float | None,
    record_dtype: torch.dtype,
    prev_x0: torch.Tensor | None,
    prev_latents: torch.Tensor | None,
    attention: Any,
) -> tuple[StepRecord, torch.Tensor]:
    """The :class:`StepRecord` of one scheduler step, and x̂_0 in full precision (for the next step's change).

    *output* is the denoiser's (ε̂_u, ε̂_c) as the reader hook split it (None: no split was
    seen, so ε̂_c is the guided output itself); *step_output* what ``scheduler.step`` returned;
    *prev_latents* the previous record's x_{t−1} (this step's x_t), None at the first step;
    *guidance* what the step did (:data:`~diffkit.reverse.families.GUIDANCE_MODES`). Every tensor
    is latent-shaped ``(1, C, h, w)`` (Flux's tokens already unpacked).
    """
    prev = step_output.prev_sample
    uncond, text = output if output is not None else (None, noise_pred)
    sigma, alpha_bar = noise_level(scheduler, t, flow=flow)
    x0 = getattr(step_output, "pred_original_sample", None)
    source = "scheduler"
    if x0 is None:
        source = "formula"
        kw = {"sigma": sigma} if (sigma_scaled or flow) else {"alpha_bar": alpha_bar}
        x0 = predicted_x0(noise_pred, latents, prediction_type=prediction_type, **kw)
    stats = _stats(latents, text, noise_pred, x0, prev, uncond, prev_x0, index=index, n_steps=n_steps, t=t)
    stats["x_t_vp"] = stats["x_t"] / math.sqrt(sigma**2 + 1) if sigma_scaled else stats["x_t"]
    # compact copies, moved to the CPU in one transfer: (ε̂_u), ε̂_c, ε̂, x̂_0, x_{t−1}
    parts = [text, noise_pred, x0, prev] if uncond is None else [uncond, text, noise_pred, x0, prev]
    packed = torch.stack([x.detach()[0].to(record_dtype) for x in parts]).to("cpu").unbind(0)
    if uncond is None:
        packed = (None, *packed)
    uncond_rec, text_rec, eps_rec, x0_rec, prev_rec = packed
    x_t_rec = prev_latents if prev_latents is not None else latents.detach()[0].to("cpu", record_dtype)
    tv = float(t)
    rec = StepRecord(
        index=index,
        timestep=int(tv) if tv.is_integer() else tv,
        sigma=sigma,
        alpha_bar=alpha_bar,
        stage=stage,
        guidance_scale=guidance_scale,
        guidance=guidance,
        true_cfg_scale=None if true_cfg_scale is None else float(true_cfg_scale),
        sigma_scaled=sigma_scaled,
        latents=x_t_rec,
        noise_pred_uncond=uncond_rec,
        noise_pred_text=text_rec,
        noise_pred=eps_rec,
        pred_original_sample=x0_rec,
        prev_sample=prev_rec,
        x0_source=source,
        stats=types.MappingProxyType(stats),
        attention=attention,
        prediction_type=prediction_type,
    )
    return rec, x0.detach().float()
