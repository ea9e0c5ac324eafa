"""Step through the reverse chain of a real Stable Diffusion pipeline, one U-Net call at a time.

:class:`ReverseChain` replays exactly what ``pipe(prompt, ...)`` does, with the pipeline's own
methods for everything around the loop (``check_inputs``, ``encode_prompt``,
``prepare_latents``, ``prepare_extra_step_kwargs``, SDXL's added time ids, img2img's
``get_timesteps``), and runs the loop itself so that it can stop after every step and keep
what the pipeline throws away. Each step yields a frozen :class:`StepRecord`:

=====================  ==========================  =============================================
symbol                 field                       meaning
=====================  ==========================  =============================================
t                      ``timestep``                the U-Net's timestep input
σ_t, ᾱ_t               ``sigma``, ``alpha_bar``    noise level, σ_t = √((1 − ᾱ_t)/ᾱ_t)
x_t                    ``latents``                 the latents entering the step
ε̂_u                    ``noise_pred_uncond``       U-Net output for the negative / empty prompt
ε̂_c                    ``noise_pred_text``         U-Net output for the prompt
ε̂ = ε̂_u + w(ε̂_c − ε̂_u) ``noise_pred``              the guided prediction the scheduler uses
x̂_0                    ``pred_original_sample``    the clean latents ε̂ implies
x_{t−1}                ``prev_sample``             what the scheduler returns
=====================  ==========================  =============================================

The running latents stay in the pipeline's own precision (so the final image equals the
pipeline's); records keep compact copies (float16 on the CPU by default), about 160 KB per
step for 64×64×4 latents.

**One record per U-Net call.** A record is one entry of ``scheduler.timesteps``: one
(batched) U-Net call and one ``scheduler.step``. For most schedulers that is one sampler
step. Heun's method (``HeunDiscreteScheduler``, ``order = 2``) evaluates the U-Net twice per
step, and diffusers lists every timestep but the first twice; ``steps=N`` gives ``2N − 1``
records. The first of a pair (``stage="predictor"``) is an Euler step from σ_i to σ_{i+1};
its ``prev_sample`` is that Euler estimate. The second (``stage="corrector"``) evaluates
the U-Net *at the Euler estimate* (so its ``latents`` are the estimate and its σ is σ_{i+1})
and returns the corrected x at σ_{i+1}, which averages the two slopes. PNDM without
``skip_prk_steps`` likewise starts with Runge–Kutta evaluations (``stage="prk"``, then
``"plms"``). All other records have ``stage="step"``.
"""

from __future__ import annotations

import inspect
import math
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .previews import _vae_decode
from .records import StepRecord, predicted_x0
from .text import tokenize_prompt
from .trajectory import Trajectory

__all__ = ["SUPPORTED_PIPELINES", "NonFiniteLatentsError", "ReverseChain"]

SUPPORTED_PIPELINES: tuple[str, ...] = (
    "StableDiffusionPipeline",
    "StableDiffusionImg2ImgPipeline",
    "StableDiffusionXLPipeline",
    "StableDiffusionXLImg2ImgPipeline",
)
"""The diffusers pipeline classes :class:`ReverseChain` steps through (and their subclasses)."""



class NonFiniteLatentsError(ValueError):
    """The latents became NaN or inf during the reverse chain."""



# ---------------------------------------------------------------------------------------
# The chain
# ---------------------------------------------------------------------------------------


def _family(pipe: Any) -> tuple[str, bool]:
    """(``"sd"`` or ``"sdxl"``, whether the class is an img2img pipeline)."""
    import diffusers

    table = [
        ("StableDiffusionXLImg2ImgPipeline", "sdxl", True),
        ("StableDiffusionXLPipeline", "sdxl", False),
        ("StableDiffusionImg2ImgPipeline", "sd", True),
        ("StableDiffusionPipeline", "sd", False),
    ]
    for name, fam, i2i in table:
        if isinstance(pipe, getattr(diffusers, name)):
            return fam, i2i
    raise ValueError(
        f"{type(pipe).__name__} is not supported: ReverseChain steps through {', '.join(SUPPORTED_PIPELINES)}. "
        "Load one with diffkit.load_pipeline (a Stable Diffusion 1.x/2.x or SDXL model, or 'tiny')"
    )


def _pipeline_class(family: str, img2img: bool) -> Any:
    import diffusers

    return getattr(
        diffusers,
        {("sd", False): "StableDiffusionPipeline", ("sd", True): "StableDiffusionImg2ImgPipeline",
         ("sdxl", False): "StableDiffusionXLPipeline", ("sdxl", True): "StableDiffusionXLImg2ImgPipeline"}[
            (family, img2img)
        ],
    )


def _scheduler_for(pipe: Any, scheduler: str | Any | None) -> Any:
    """A fresh scheduler (never the pipeline's own object, whose state ``set_timesteps`` changes)."""
    from ..pipeline import make_scheduler

    if scheduler is None:
        return type(pipe.scheduler).from_config(pipe.scheduler.config)
    if isinstance(scheduler, str):
        return make_scheduler(scheduler, pipe.scheduler.config)
    if hasattr(scheduler, "set_timesteps") and hasattr(scheduler, "config"):
        return type(scheduler).from_config(scheduler.config)
    raise ValueError(f"scheduler must be a name such as 'ddim' or a diffusers scheduler, got {type(scheduler).__name__}")


def _working_pipeline(pipe: Any, cls: Any, scheduler: Any) -> Any:
    """A pipeline of class *cls* sharing *pipe*'s modules, with its own scheduler.

    Its methods (``encode_prompt``, ``prepare_latents``, …) then run exactly as inside
    ``pipe(...)`` without touching *pipe*: no weights are copied, and *pipe*'s scheduler keeps
    its state (so several chains, and ``pipe(...)`` itself, can run side by side).
    """
    from diffusers.utils import logging as dlogging

    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in pipe.components.items() if k in params}
    kwargs["scheduler"] = scheduler
    for key in ("requires_safety_checker", "force_zeros_for_empty_prompt", "requires_aesthetics_score"):
        if key in params and key in pipe.config:
            kwargs[key] = pipe.config[key]
    if "add_watermarker" in params:
        kwargs["add_watermarker"] = False
    level = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        work = cls(**kwargs)
    finally:
        dlogging.set_verbosity(level)
    if "add_watermarker" in params:
        work.watermark = getattr(pipe, "watermark", None)
    work.set_progress_bar_config(disable=True)
    return work


def _call_default(cls: Any, name: str) -> Any:
    return inspect.signature(cls.__call__).parameters[name].default


class ReverseChain:
    """Walk the reverse diffusion chain of a Stable Diffusion pipeline one U-Net call at a time.

    ``next(chain)`` (or :meth:`step`) runs one step and returns its :class:`StepRecord`;
    :meth:`run` runs the rest and returns the :class:`Trajectory`. The final image equals
    ``pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
    generator=torch.Generator().manual_seed(seed))`` (with the same scheduler, size and
    negative prompt), and with an *image* it equals the img2img pipeline's.

    Parameters
    ----------
    pipe
        A ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline`` or their img2img variants
        (e.g. from :func:`diffkit.load_pipeline`). It is not modified: the chain uses its own
        scheduler copy.
    prompt
        The text.
    negative_prompt
        Text for the unconditional branch. None does what the pipeline does with none (SD: the
        empty prompt; SDXL with ``force_zeros_for_empty_prompt``: zero embeddings). ``""`` encodes
        the empty prompt.
    steps
        ``num_inference_steps`` (≥ 1).
    guidance_scale
        w in ε̂ = ε̂_u + w (ε̂_c − ε̂_u) (≥ 0). At w ≤ 1 the unconditional branch is skipped, as in diffusers.
    seed
        An int (a CPU ``torch.Generator`` seeded with it, as in the reference call) or a generator.
    scheduler
        A short name (:data:`diffkit.SCHEDULERS`: ``"ddim"``, ``"euler"``, …), a diffusers scheduler
        (its config is copied), or None for a copy of the pipeline's.
    height, width
        Image size; default the pipeline's. Must be multiples of the VAE factor. With *image*
        they resize it.
    image
        An init image (PIL, array or tensor, as ``pipe.image_processor.preprocess`` accepts) for img2img.
    strength
        How far into the forward chain the image is noised, in (0, 1] (img2img only; default the
        img2img pipeline's: 0.8 for SD, 0.3 for SDXL).
    guidance_rescale
        φ of Lin et al. 2023 (§3.4), as the pipelines' ``guidance_rescale``.
    eta
        DDIM's η, passed like the pipeline does.
    capture_attention
        Record cross-attention maps per step and layer (:mod:`diffkit.reverse.attention`).
        Does not change the image.
    record_dtype
        Storage dtype of the records' tensors (float16 keeps 50 steps of 64×64×4 under 10 MB).

    Examples
    --------
    >>> from diffkit.testing import tiny_random_pipeline
    >>> pipe = tiny_random_pipeline("sd")
    >>> chain = ReverseChain(pipe, "a photo of a cat", steps=3, height=32, width=32, scheduler="ddim")
    >>> rec = next(chain)
    >>> rec.index, rec.stage, tuple(rec.latents.shape)
    (0, 'step', (4, 16, 16))
    >>> traj = chain.run()
    >>> len(traj), traj.image.shape
    (3, (32, 32, 3))
    """

    def __init__(
        self,
        pipe: Any,
        prompt: str,
        *,
        negative_prompt: str | None = None,
        steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int | torch.Generator = 0,
        scheduler: str | Any | None = None,
        height: int | None = None,
        width: int | None = None,
        image: Any = None,
        strength: float | None = None,
        guidance_rescale: float = 0.0,
        eta: float = 0.0,
        capture_attention: bool = False,
        record_dtype: torch.dtype = torch.float16,
    ) -> None:
        family, _ = _family(pipe)
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a whole number ≥ 1, got {steps!r}; try steps=25")
        steps = int(steps)
        guidance_scale = float(guidance_scale)
        if not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise ValueError(
                f"guidance_scale must be ≥ 0, got {guidance_scale}; 0–1 turns guidance off, 7.5 is usual for SD"
            )
        if not 0.0 <= float(guidance_rescale) <= 1.0:
            raise ValueError(f"guidance_rescale must be in [0, 1], got {guidance_rescale}")
        img2img = image is not None
        if not img2img and strength is not None:
            raise ValueError("strength applies to img2img only; pass image=... too, or drop strength")
        cls = _pipeline_class(family, img2img)
        if img2img:
            if strength is None:
                strength = float(_call_default(cls, "strength"))
            strength = float(strength)
            if not (0.0 < strength <= 1.0):
                raise ValueError(
                    f"strength must be in (0, 1], got {strength}: 1 noises the image completely, "
                    "small values keep it close to the original"
                )
            if int(steps * strength) < 1:
                raise ValueError(
                    f"steps × strength = {steps} × {strength} < 1 leaves no denoising step; "
                    f"raise steps to at least {math.ceil(1 / strength)} or raise strength"
                )
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if record_dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise ValueError(f"record_dtype must be a floating dtype, got {record_dtype}")

        sched = _scheduler_for(pipe, scheduler)
        work = _working_pipeline(pipe, cls, sched)
        factor = int(work.vae_scale_factor)
        if not img2img or height is not None or width is not None:
            if family == "sd":
                default = work.unet.config.sample_size
                default = default if isinstance(default, int) else default[0]
                default *= factor
            else:
                default = work.default_sample_size * factor
            if img2img and (height is None or width is None):
                raise ValueError("with an image give both height and width, or neither (keep the image's size)")
            height = int(height or default)
            width = int(width or default)
            for nm, v in (("height", height), ("width", width)):
                if v < factor or v % factor:
                    lo = max(factor, v // factor * factor)
                    raise ValueError(
                        f"{nm}={v} is not a multiple of the VAE factor {factor}; use {lo} or {lo + factor}"
                    )
        self.tokens = tokenize_prompt(pipe, prompt)  # warns, naming dropped words

        self.pipe = pipe
        self.family = family
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.steps = steps
        self.guidance_scale = guidance_scale
        self.guidance_rescale = float(guidance_rescale)
        self.strength = strength
        self.scheduler = sched
        self.capture_attention = bool(capture_attention)
        self.record_dtype = record_dtype
        self._work = work
        self._unet = work.unet
        self.do_cfg = guidance_scale > 1 and work.unet.config.time_cond_proj_dim is None
        if isinstance(seed, torch.Generator):
            self.generator = seed
            seed_value = seed.initial_seed()
        else:
            seed_value = int(seed)
            self.generator = torch.Generator().manual_seed(seed_value)

        with torch.no_grad():
            self._prepare(image, height, width, eta)

        lat_h, lat_w = self._latents.shape[-2:]
        self.height, self.width = int(lat_h) * factor, int(lat_w) * factor
        from ..pipeline import scheduler_name

        self._sigma_scaled = float(getattr(sched, "init_noise_sigma", 1.0)) != 1.0
        self._i = 0
        self._cancel = False
        self._prev_x0: torch.Tensor | None = None
        self._prev_record_latents: torch.Tensor | None = None
        self._attn_layers = None
        info = dict(
            prompt=prompt, negative_prompt=negative_prompt, steps=steps, n_calls=len(self._timesteps),
            guidance_scale=guidance_scale, guidance_rescale=self.guidance_rescale, seed=seed_value,
            scheduler=scheduler_name(sched), pipeline=type(pipe).__name__, family=family,
            prediction_type=sched.config.get("prediction_type", "epsilon"), height=self.height, width=self.width,
            img2img=img2img, strength=strength, capture_attention=self.capture_attention,
        )
        self.trajectory = Trajectory(work, info, self.tokens)

    # -- set-up: the pipeline's own code before its loop ---------------------------------
    def _check_inputs(self, prompt: str, negative_prompt: str | None, height: int | None,
                      width: int | None, strength: float | None) -> None:
        work = self._work
        params = inspect.signature(work.check_inputs).parameters
        given = dict(prompt=prompt, prompt_2=None, height=height, width=width, strength=strength,
                     num_inference_steps=self.steps, callback_steps=None, negative_prompt=negative_prompt,
                     negative_prompt_2=None)
        work.check_inputs(**{k: v for k, v in given.items() if k in params})

    def _prepare(self, image: Any, height: int | None, width: int | None, eta: float) -> None:
        work, sched, gen = self._work, self.scheduler, self.generator
        img2img = image is not None
        self._check_inputs(self.prompt, self.negative_prompt, height, width, self.strength)
        device = work._execution_device
        self.device = device
        added_cond_kwargs = None
        if self.family == "sd":
            pe, npe = work.encode_prompt(self.prompt, device, 1, self.do_cfg, self.negative_prompt)
            if self.do_cfg:
                pe = torch.cat([npe, pe])
        else:
            pe, npe, ppe, nppe = work.encode_prompt(
                prompt=self.prompt, prompt_2=None, device=device, num_images_per_prompt=1,
                do_classifier_free_guidance=self.do_cfg, negative_prompt=self.negative_prompt,
                negative_prompt_2=None,
            )
        if img2img:
            if height is not None:
                image_t = work.image_processor.preprocess(image, height=height, width=width)
            else:
                image_t = work.image_processor.preprocess(image)
            sched.set_timesteps(self.steps, device=device)
            if self.family == "sd":
                timesteps, _ = work.get_timesteps(self.steps, self.strength, device)
            else:
                timesteps, _ = work.get_timesteps(self.steps, self.strength, device, denoising_start=None)
            latent_timestep = timesteps[:1].repeat(1)
            args = (image_t, latent_timestep, 1, 1, pe.dtype, device, gen)
            latents = work.prepare_latents(*args) if self.family == "sd" else work.prepare_latents(*args, True)
        else:
            sched.set_timesteps(self.steps, device=device)
            timesteps = sched.timesteps
            latents = work.prepare_latents(
                1, work.unet.config.in_channels, height, width, pe.dtype, device, gen, None
            )
        self._extra = work.prepare_extra_step_kwargs(gen, eta)
        if self.family == "sdxl":
            h, w = (int(s) * work.vae_scale_factor for s in latents.shape[-2:])
            proj = int(ppe.shape[-1]) if work.text_encoder_2 is None else work.text_encoder_2.config.projection_dim
            add_text_embeds = ppe
            if img2img:
                add_time_ids, add_neg_time_ids = work._get_add_time_ids(
                    (h, w), (0, 0), (h, w),
                    _call_default(type(work), "aesthetic_score"),
                    _call_default(type(work), "negative_aesthetic_score"),
                    (h, w), (0, 0), (h, w), dtype=pe.dtype, text_encoder_projection_dim=proj,
                )
                add_time_ids = add_time_ids.repeat(1, 1)
                add_neg_time_ids = add_neg_time_ids.repeat(1, 1)
            else:
                add_time_ids = work._get_add_time_ids(
                    (h, w), (0, 0), (h, w), dtype=pe.dtype, text_encoder_projection_dim=proj
                )
                add_neg_time_ids = add_time_ids
            if self.do_cfg:
                pe = torch.cat([npe, pe], dim=0)
                add_text_embeds = torch.cat([nppe, add_text_embeds], dim=0)
                add_time_ids = torch.cat([add_neg_time_ids, add_time_ids], dim=0)
            pe = pe.to(device)
            add_text_embeds = add_text_embeds.to(device)
            add_time_ids = add_time_ids.to(device)
            if not img2img:
                add_time_ids = add_time_ids.repeat(1, 1)
                if hasattr(sched, "set_begin_index"):
                    sched.set_begin_index(0)
            added_cond_kwargs = {"text_embeds": add_text_embeds, "time_ids": add_time_ids}
        self._timestep_cond = None
        if work.unet.config.time_cond_proj_dim is not None:
            g = torch.tensor(self.guidance_scale - 1).repeat(1)
            self._timestep_cond = work.get_guidance_scale_embedding(
                g, embedding_dim=work.unet.config.time_cond_proj_dim
            ).to(device=device, dtype=latents.dtype)
        self._prompt_embeds = pe
        self._added_cond_kwargs = added_cond_kwargs
        self._timesteps = timesteps
        self._latents = latents
        self.init_latents = latents.detach().to("cpu", torch.float32)[0]

    # -- iteration -------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of U-Net calls the whole chain takes (records when finished)."""
        return len(self._timesteps)

    def __iter__(self) -> ReverseChain:
        return self

    def __next__(self) -> StepRecord:
        if self.done:
            raise StopIteration
        return self._advance()

    @property
    def index(self) -> int:
        """How many steps have run."""
        return self._i

    @property
    def done(self) -> bool:
        """Whether every step has run."""
        return self._i >= len(self._timesteps)

    @property
    def timesteps(self) -> list[float]:
        """The timesteps of all steps, in order (Heun lists all but the first twice)."""
        return [_num(t) for t in self._timesteps]

    @property
    def latents(self) -> torch.Tensor:
        """The current latents, full precision, as the pipeline holds them ``(1, C, h, w)``."""
        return self._latents

    @property
    def records(self) -> tuple[StepRecord, ...]:
        """The records so far."""
        return self.trajectory.records

    @property
    def image(self) -> np.ndarray | None:
        """The final image ``(H, W, 3)`` in ``[0, 1]`` once the chain has finished."""
        return self.trajectory.image

    def step(self) -> StepRecord:
        """Run the next step and return its record."""
        if self.done:
            raise RuntimeError(
                f"the chain has run all {len(self)} steps; look at chain.trajectory, or make a new ReverseChain"
            )
        return self._advance()

    def cancel(self) -> None:
        """Ask a running :meth:`run` (e.g. in another thread) to stop after the current step."""
        self._cancel = True

    def run(self, *, callback: Callable[[StepRecord], Any] | None = None) -> Trajectory:
        """Run the remaining steps, decode the final image, return the :class:`Trajectory`.

        *callback* is called with each new record (for progress bars). :meth:`cancel` stops
        the run early; the trajectory is then incomplete (``image`` None) and ``run`` can resume.
        """
        self._cancel = False
        while not self.done:
            if self._cancel:
                return self.trajectory
            rec = self._advance()
            if callback is not None:
                callback(rec)
        return self.trajectory

    # -- one step --------------------------------------------------------------------------
    def _compact(self, x: torch.Tensor) -> torch.Tensor:
        return x.detach()[0].to("cpu", self.record_dtype)

    def _noise_level(self, t: torch.Tensor) -> tuple[float, float]:
        """(σ, ᾱ) of the point the U-Net was just evaluated at; call after ``scheduler.step``."""
        sched = self.scheduler
        sigmas = getattr(sched, "sigmas", None)
        idx = getattr(sched, "step_index", None)
        if sigmas is not None and idx is not None:
            sigma = float(sigmas[idx - 1])
            return sigma, 1.0 / (1.0 + sigma**2)
        ab = float(sched.alphas_cumprod[int(t)])
        return math.sqrt((1.0 - ab) / ab), ab

    def _stage(self) -> str:
        sched = self.scheduler
        if getattr(sched, "order", 1) == 2 and hasattr(sched, "state_in_first_order"):
            return "predictor" if sched.state_in_first_order else "corrector"
        prk = getattr(sched, "prk_timesteps", None)
        if prk is not None and hasattr(sched, "counter"):
            return "prk" if sched.counter < len(prk) and not sched.config.skip_prk_steps else "plms"
        return "step"

    def _advance(self) -> StepRecord:
        from .attention import CrossAttentionStore, capture_cross_attention, cross_attention_layers

        i = self._i
        t = self._timesteps[i]
        sched, latents = self.scheduler, self._latents
        stage = self._stage()
        with torch.no_grad():
            # 1. the U-Net sees [x_t, x_t] (unconditional, conditional) under guidance
            latent_model_input = torch.cat([latents] * 2) if self.do_cfg else latents
            latent_model_input = sched.scale_model_input(latent_model_input, t)
            call = dict(
                encoder_hidden_states=self._prompt_embeds, timestep_cond=self._timestep_cond,
                cross_attention_kwargs=None, added_cond_kwargs=self._added_cond_kwargs, return_dict=False,
            )
            maps = None
            if self.capture_attention:
                if self._attn_layers is None:
                    self._attn_layers = cross_attention_layers(self._unet)
                store = CrossAttentionStore(
                    self.tokens.n_tokens, tuple(latents.shape[-2:]),
                    slice(1, 2) if self.do_cfg else slice(0, 1), dtype=torch.float16,
                )
                with capture_cross_attention(self._unet, store, self._attn_layers):
                    noise_pred = self._unet(latent_model_input, t, **call)[0]
                maps = types.MappingProxyType(store.pop())
            else:
                noise_pred = self._unet(latent_model_input, t, **call)[0]
            # 2. classifier-free guidance: ε̂ = ε̂_u + w (ε̂_c − ε̂_u)
            if self.do_cfg:
                noise_pred_uncond, noise_pred_text = noise_pred.chunk(2)
                noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_text - noise_pred_uncond)
            else:
                noise_pred_uncond, noise_pred_text = None, noise_pred
            if self.do_cfg and self.guidance_rescale > 0.0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import (
                    rescale_noise_cfg,
                )

                noise_pred = rescale_noise_cfg(noise_pred, noise_pred_text, guidance_rescale=self.guidance_rescale)
            # 3. one scheduler step x_t → x_{t−1}, exactly once
            out = sched.step(noise_pred, t, latents, **self._extra, return_dict=True)
            prev = out.prev_sample
            # 4. x̂_0: the scheduler's when it returns one, else from ᾱ or σ
            sigma, alpha_bar = self._noise_level(t)
            x0 = getattr(out, "pred_original_sample", None)
            source = "scheduler"
            if x0 is None:
                source = "formula"
                pt = sched.config.get("prediction_type", "epsilon")
                if self._sigma_scaled:
                    x0 = predicted_x0(noise_pred, latents, prediction_type=pt, sigma=sigma)
                else:
                    x0 = predicted_x0(noise_pred, latents, prediction_type=pt, alpha_bar=alpha_bar)
            # 5. scalars (computed on the device, fetched in one go) and the finiteness check
            names = ["x_t", "eps_text", "eps", "x0_hat", "x_prev"]
            vals = [_rms_t(latents), _rms_t(noise_pred_text), _rms_t(noise_pred), _rms_t(x0), _rms_t(prev)]
            if noise_pred_uncond is not None:
                names += ["eps_uncond", "guidance", "cos_eps_text_uncond"]
                vals += [
                    _rms_t(noise_pred_uncond),
                    _rms_t(noise_pred_text.float() - noise_pred_uncond.float()),
                    torch.nn.functional.cosine_similarity(
                        noise_pred_text.float().flatten(), noise_pred_uncond.float().flatten(), dim=0
                    ),
                ]
            if self._prev_x0 is not None:
                names.append("x0_hat_change")
                vals.append(_rms_t(x0.float() - self._prev_x0))
            vals.append(torch.isfinite(prev).all().float())
            values = torch.stack([v.float() for v in vals]).tolist()
            if values.pop() != 1.0:
                raise NonFiniteLatentsError(
                    f"the latents became NaN or inf at step {i} of {len(self)} (t={_num(t)}); the chain "
                    "stops here. Usual causes: float16 overflow (load the pipeline in float32: "
                    "load_pipeline(..., dtype='float32')), a very large guidance_scale, or broken weights"
                )
            stats = dict(zip(names, values))
            stats["x_t_vp"] = stats["x_t"] / math.sqrt(sigma**2 + 1) if self._sigma_scaled else stats["x_t"]
            # 6. compact copies, moved to the CPU in one transfer: (ε̂_u), ε̂_c, ε̂, x̂_0, x_{t−1}
            parts = [noise_pred_text, noise_pred, x0, prev]
            if noise_pred_uncond is not None:
                parts.insert(0, noise_pred_uncond)
            packed = torch.stack([x.detach()[0].to(self.record_dtype) for x in parts]).to("cpu").unbind(0)
            if noise_pred_uncond is None:
                packed = (None, *packed)
            uncond_rec, text_rec, eps_rec, x0_rec, prev_rec = packed
            x_t_rec = self._prev_record_latents if self._prev_record_latents is not None else self._compact(latents)
            rec = StepRecord(
                index=i,
                timestep=_num(t),
                sigma=sigma,
                alpha_bar=alpha_bar,
                stage=stage,
                guidance_scale=self.guidance_scale,
                sigma_scaled=self._sigma_scaled,
                latents=x_t_rec,
                noise_pred_uncond=uncond_rec,
                noise_pred_text=text_rec,
                noise_pred=eps_rec,
                pred_original_sample=x0_rec,
                prev_sample=prev_rec,
                x0_source=source,
                stats=types.MappingProxyType(stats),
                attention=maps,
            )
        self._prev_x0 = x0.detach().float()
        self._prev_record_latents = prev_rec
        self._latents = prev
        self._i += 1
        self.trajectory._records.append(rec)
        if self.done:
            self._finish()
        return rec

    def _finish(self) -> None:
        """Decode the final latents exactly as the pipeline does (safety checker and watermark included)."""
        work = self._work
        with torch.no_grad():
            # SD passes its generator to vae.decode; SDXL does not
            image = _vae_decode(work, self._latents, generator=self.generator if self.family == "sd" else None)
            denormalize = None
            if self.family == "sd" and getattr(work, "safety_checker", None) is not None:
                image, nsfw = work.run_safety_checker(image, self.device, self._prompt_embeds.dtype)
                denormalize = [not flag for flag in nsfw]
                self.trajectory.nsfw = bool(nsfw[0])
            if self.family == "sdxl" and getattr(work, "watermark", None) is not None:
                image = work.watermark.apply_watermark(image)
            image = work.image_processor.postprocess(image, output_type="np", do_denormalize=denormalize)[0]
        self.trajectory.image = image.astype(np.float32, copy=False)


def _rms_t(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square as a 0-d float32 tensor on x's device (no host sync)."""
    return x.detach().float().pow(2).mean().sqrt()


def _num(t: Any) -> float:
    v = float(t)
    return int(v) if v.is_integer() else v
