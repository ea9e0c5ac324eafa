"""Step through the reverse chain of a real Stable Diffusion pipeline, one denoiser call at a time.

:class:`ReverseChain` does not re-implement the pipeline: it **records** the real
``pipe(prompt, ...)`` (:mod:`diffkit.reverse.recorder` says how). The pipeline runs its own
set-up, loop and decoding; diffkit only observes, so the final image *is* ``pipe(...)``'s.
Each denoiser call yields a frozen :class:`StepRecord`:

=====================  ==========================  =============================================
symbol                 field                       meaning
=====================  ==========================  =============================================
t                      ``timestep``                the denoiser's timestep input
σ_t, ᾱ_t               ``sigma``, ``alpha_bar``    noise level (see :attr:`StepRecord.sigma`)
x_t                    ``latents``                 the latents entering the step
ε̂_u                    ``noise_pred_uncond``       model output for the negative / empty prompt
ε̂_c                    ``noise_pred_text``         model output for the prompt
ε̂ = ε̂_u + w(ε̂_c − ε̂_u) ``noise_pred``              the guided output the scheduler uses
x̂_0                    ``pred_original_sample``    the clean latents the output implies
x_{t−1}                ``prev_sample``             what the scheduler returns
=====================  ==========================  =============================================

The "noise_pred" names are diffusers'; what the model outputs is :attr:`StepRecord.prediction_type`:
ε (``"epsilon"``, SD 1.x), v = √ᾱ ε − √(1−ᾱ) x_0 (``"v_prediction"``, SD 2.x 768), or the
flow-matching velocity v = ε − x_0 (``"flow"``, SD 3). :meth:`StepRecord.implied_eps` gives ε̂ in
every case.

**One record per denoiser call**: Heun's method gives ``2N − 1`` records for ``steps=N``
(``stage="predictor"``/``"corrector"``), PNDM starts with Runge–Kutta ones (``"prk"``, then
``"plms"``); all others have ``stage="step"`` (details in ``docs/recorder.md``).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..checks import wait_or_cancel
from ..errors import InputError, StateError
from ..i18n import gettext as _
from ..images import prepare_init_image, vae_factor
from ..pipeline import check_steps
from .arguments import (
    check_flux_options,
    check_numbers,
    check_size,
    check_text,
    generator_for,
    img2img_strength,
)
from .families import FAMILIES, family_of, scheduler_for, working_pipeline
from .recorder import ChainClosedError, NonFiniteLatentsError, Recorder
from .records import StepRecord
from .trajectory import Trajectory

__all__ = ["SUPPORTED_PIPELINES", "ChainClosedError", "NonFiniteLatentsError", "ReverseChain"]

SUPPORTED_PIPELINES: tuple[str, ...] = tuple(n for f in FAMILIES for n in (f.txt2img, f.img2img))
"""The diffusers pipeline classes :class:`ReverseChain` records (and their subclasses)."""


def _call_kwargs(
    work: Any,
    prompt: str,
    negative_prompt: str | None,
    steps: int,
    guidance_scale: float,
    generator: Any,
    height: int | None,
    width: int | None,
    image: Any,
    strength: float | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of the pipeline call the chain records (img2img: the image at the asked size)."""
    kwargs = dict(
        prompt=prompt,
        negative_prompt=negative_prompt,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        generator=generator,
        height=height,
        width=width,
        output_type="np",
    )
    if image is not None:
        if height is not None:  # img2img pipelines take the image's own size: resize it as diffusers does
            image = work.image_processor.resize(image, height=int(height), width=int(width))
        kwargs.update(image=image, strength=strength)
        kwargs.pop("height"), kwargs.pop("width")
    kwargs.update(options)
    return kwargs


class ReverseChain:
    """Walk the reverse diffusion chain of a Stable Diffusion pipeline one denoiser call at a time.

    ``next(chain)`` (or :meth:`step`) runs one step and returns its :class:`StepRecord`;
    :meth:`run` runs the rest and returns the :class:`Trajectory`. The chain *is* the call
    ``pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale,
    generator=torch.Generator().manual_seed(seed), output_type="np")`` (with the same scheduler,
    size and negative prompt; with an *image*, the img2img pipeline's), run in a worker thread
    that pauses before each denoiser call until you ask for the next step; so its final image
    equals that call's exactly.

    Parameters
    ----------
    pipe
        A ``StableDiffusionPipeline``, ``StableDiffusionXLPipeline``, ``StableDiffusion3Pipeline``,
        ``FluxPipeline`` or their img2img variants (e.g. from :func:`diffkit.load_pipeline`). It is not modified:
        the chain runs a shallow copy of it with its own scheduler copy.
    prompt
        The text.
    negative_prompt
        Text for the unconditional branch (None: what the pipeline does with none).
    steps
        ``num_inference_steps`` (a whole number ≥ 1).
    guidance_scale
        w in ε̂ = ε̂_u + w (ε̂_c − ε̂_u) (≥ 0). At w ≤ 1 the unconditional branch is skipped, as in diffusers.
    seed
        A whole number in [0, 2⁶³ − 1] (a CPU ``torch.Generator`` seeded with it, as in the
        reference call; :func:`diffkit.checks.check_seed`) or a generator.
    scheduler
        A short name (SD/SDXL: :data:`diffkit.SCHEDULERS`, ``"ddim"``, ``"euler"``, …; SD 3:
        ``"flow_euler"``), a diffusers scheduler (its config is copied), or None for a copy of
        the pipeline's.
    height, width
        Image size; default the pipeline's. Multiples of the VAE factor (times the patch size
        for SD 3). With *image* they resize it first, with the pipeline's own
        ``image_processor.resize`` (the chain is then ``pipe(image=resized, ...)``; img2img
        pipelines draw at their image's size).
    image
        An init image for img2img: PIL (any mode), a ``uint8`` array ``(H, W[, 3|4])``, a float
        array in [0, 1], or a float tensor ``(3, H, W)`` in [0, 1]; see
        :func:`diffkit.reverse.images.prepare_init_image`.
    strength
        How far into the forward chain the image is noised, in (0, 1] (img2img only; default the
        img2img pipeline's).
    guidance_rescale
        φ of Lin et al. 2023 (§3.4), as the SD/SDXL pipelines' ``guidance_rescale``.
    eta
        DDIM's η, passed like the SD/SDXL pipelines do.
    true_cfg_scale
        Flux only: true classifier-free guidance, two transformer calls per step (the prompt's,
        the negative prompt's) combined with this scale; it runs when it is > 1 and a
        *negative_prompt* is given, as in diffusers. *guidance_scale* is then still the distilled
        guidance embedded in each call (FLUX.1-dev; schnell has none).
    max_sequence_length
        Flux only: T5 tokens of the prompt (the pipeline's default, 512, when None).
    capture_attention
        Record cross-attention maps (SD 3: the image→text part of the joint attention) per step
        and layer (:mod:`diffkit.reverse.attention`). Does not change the image.
    record_dtype
        Storage dtype of the records' tensors (float16 keeps 50 steps of 64×64×4 under 10 MB;
        float32 makes hand checks against the records exact).

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
        true_cfg_scale: float = 1.0,
        max_sequence_length: int | None = None,
        capture_attention: bool = False,
        record_dtype: torch.dtype = torch.float16,
    ) -> None:
        family = family_of(pipe)[0]
        guidance_scale, guidance_rescale, eta = check_numbers(guidance_scale, guidance_rescale, eta)
        check_text(prompt, negative_prompt, record_dtype)
        generator, seed_value = generator_for(seed)
        img2img = image is not None
        if not img2img and strength is not None:
            raise InputError(_("strength applies to img2img only; fix: pass image=... too, or drop strength"))
        sched = scheduler_for(pipe, family, scheduler)
        steps = check_steps(sched, steps)  # 1 … the scheduler's num_train_timesteps
        work = working_pipeline(pipe, family, img2img, sched)
        if img2img:
            strength = img2img_strength(work, steps, strength, height, width)
            image = prepare_init_image(image)
        check_size(family.size_factor(work), height, width)
        true_cfg_scale, max_sequence_length = check_flux_options(true_cfg_scale, max_sequence_length)
        options = family.call_options(
            pipe,
            eta=eta,
            guidance_rescale=guidance_rescale,
            true_cfg_scale=true_cfg_scale,
            max_sequence_length=max_sequence_length,
        )
        self.tokens = family.prompt_tokens(pipe, prompt, max_sequence_length)  # warns, naming dropped words

        self.pipe, self.family, self.prompt, self.negative_prompt = pipe, family.name, prompt, negative_prompt
        self.steps, self.guidance_scale, self.guidance_rescale = steps, guidance_scale, guidance_rescale
        self.strength, self.scheduler, self.generator = strength, sched, generator
        self.capture_attention, self.record_dtype = bool(capture_attention), record_dtype
        kwargs = _call_kwargs(
            work, prompt, negative_prompt, steps, guidance_scale, generator, height, width, image, strength, options
        )
        self._recorder = rec = Recorder(
            work,
            family,
            kwargs,
            n_tokens=self.tokens.n_tokens,
            capture_attention=self.capture_attention,
            record_dtype=record_dtype,
        )
        self._cancel = threading.Event()
        weakref.finalize(self, rec.close)  # an abandoned chain lets its paused pipeline call go
        rec.start()  # runs the pipeline's set-up and pauses before its first denoiser call

        self.do_cfg = family.does_cfg(work, kwargs)  # the pipeline's own decision (SD: read during its call)
        lat_h, lat_w = rec.latents.shape[-2:]
        factor = vae_factor(work)
        self.height, self.width = int(lat_h) * factor, int(lat_w) * factor
        self.device = rec.latents.device
        self.init_latents = rec.latents.detach().to("cpu", torch.float32)[0]
        self.trajectory = Trajectory(work, self._info(family, seed_value, img2img), self.tokens)
        rec.trajectory = self.trajectory

    def _info(self, family: Any, seed: int, img2img: bool) -> dict[str, Any]:
        """The chain's settings as its trajectory keeps them (``Trajectory.info``)."""
        from ..pipeline import scheduler_name

        return dict(
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            steps=self.steps,
            n_calls=len(self._recorder.timesteps),
            guidance_scale=self.guidance_scale,
            guidance_rescale=self.guidance_rescale,
            seed=seed,
            scheduler=scheduler_name(self.scheduler),
            pipeline=type(self.pipe).__name__,
            family=family.name,
            prediction_type=family.prediction_type(self.scheduler),
            height=self.height,
            width=self.width,
            img2img=img2img,
            strength=self.strength,
            capture_attention=self.capture_attention,
            denoiser=family.denoiser,
            token_limit=self.tokens.max_length,
            true_cfg_scale=self._recorder.call_kwargs.get("true_cfg_scale"),
            guidance_embedded=bool(getattr(self._recorder.denoiser, "config", {}).get("guidance_embeds", False)),
        )

    # -- iteration -------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of denoiser calls the whole chain takes (records when finished)."""
        return len(self._recorder.timesteps)

    def __iter__(self) -> ReverseChain:
        return self

    def __next__(self) -> StepRecord:
        if self.done:
            raise StopIteration
        return self._recorder.advance()

    @property
    def index(self) -> int:
        """How many steps have run."""
        return len(self.trajectory)

    @property
    def done(self) -> bool:
        """Whether every step has run (the final image then exists)."""
        return self.index >= len(self)

    @property
    def timesteps(self) -> list[float]:
        """The timesteps of all steps, in order (Heun lists all but the first twice)."""
        return [_num(t) for t in self._recorder.timesteps]

    @property
    def latents(self) -> torch.Tensor:
        """The current latents, full precision, as the pipeline holds them ``(1, C, h, w)``."""
        return self._recorder.latents

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
            raise StateError(
                f"the chain has run all {len(self)} steps; look at chain.trajectory, or make a new ReverseChain"
            )
        return self._recorder.advance()

    def cancel(self) -> None:
        """Stop a running :meth:`run` (e.g. in another thread) or :meth:`run_in_background` after the current step.

        The pipeline stays paused before its next denoiser call, so :meth:`run`, :meth:`step` or
        :meth:`run_in_background` later carries on from there.
        """
        self._cancel.set()
        self._recorder.stop()

    def run_in_background(
        self,
        *,
        callback: Callable[[StepRecord], Any] | None = None,
        done: Callable[[BaseException | None], Any] | None = None,
    ) -> None:
        """Run the remaining steps in the chain's own worker thread and return at once.

        *callback* is called from that thread with each new record (progress bars, widgets);
        *done* once, when the run has finished, paused (:meth:`cancel`) or failed, with the
        error or None. :meth:`wait` waits for that moment; :attr:`running` says whether it
        still runs. The explorers use it, so a notebook stays free to answer buttons while the
        chain runs, with no thread of their own.
        """
        self._cancel.clear()
        self._recorder.run_in_background(callback, done)

    @property
    def running(self) -> bool:
        """Whether a :meth:`run_in_background` is still going."""
        return self._recorder.running

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a :meth:`run_in_background` to finish or pause; False if *timeout* passed first.

        A failure of the run is raised here. Ctrl-C while waiting cancels the run, waits for the
        step in flight to end, then raises ``KeyboardInterrupt``: no step runs on unseen.
        """
        return wait_or_cancel(self._recorder.wait, self.cancel, timeout)

    def close(self) -> None:
        """Abandon the chain and wait until its pipeline call has unwound and its hooks are removed.

        A step running in another thread finishes first. Later steps raise
        :class:`ChainClosedError`; the records so far stay in :attr:`trajectory`. Chains left
        unfinished are closed this way at interpreter exit.
        """
        self._recorder.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (or the interpreter is exiting)."""
        return self._recorder.closed

    def run(self, *, callback: Callable[[StepRecord], Any] | None = None) -> Trajectory:
        """Run the remaining steps and return the :class:`Trajectory` (with the final image).

        *callback* is called with each new record (for progress bars). :meth:`cancel` stops
        the run after the current step; the trajectory is then incomplete (``image`` None)
        and ``run`` can resume.
        """
        self._cancel.clear()
        while not self.done:
            if self._cancel.is_set():
                return self.trajectory
            rec = self._recorder.advance()
            if callback is not None:
                callback(rec)
        return self.trajectory


def _num(t: Any) -> float:
    v = float(t)
    return int(v) if v.is_integer() else v
