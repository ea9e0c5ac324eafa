"""The recorder: watch a real ``pipe(...)`` call step by step, without changing anything it computes.

``pipe(...)`` runs in a worker thread on a shallow copy of the pipeline that has a private
scheduler (never rebuilt through ``__init__``, which rewrites scheduler configs). Thin wrappers on
that scheduler's ``step`` and ``scale_model_input``, a gate (forward pre-hook) and a reader
(forward hook) on the denoiser, and, on request, capturing attention processors record each step;
each observes and returns nothing, acts only in the chain's thread, and is removed when the call
ends. One small :class:`Family` adapter per family says which classes, which denoiser, and what
the model predicts. The whole design, and why it cannot drift: ``docs/recorder.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import math
import threading
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ChainClosedError, InputError, NonFiniteLatentsError, StateError
from .records import StepRecord, predicted_x0

__all__ = [
    "FAMILIES",
    "FLOW_SCHEDULERS",
    "ChainClosedError",
    "Family",
    "NonFiniteLatentsError",
    "Recorder",
    "family_of",
    "scheduler_for",
    "working_pipeline",
]

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
        return int(work.vae_scale_factor) * (int(getattr(work, "patch_size", 1) or 1) if self.flow else 1)

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


class _Closed(BaseException):
    """Raised in the worker thread at the gate when the chain is abandoned (unwinds ``pipe(...)``)."""


_LIVE: weakref.WeakSet[Recorder] = weakref.WeakSet()
"""Recorders whose worker thread has started and not yet ended."""


@atexit.register
def _close_all() -> None:
    """At interpreter exit, unwind every unfinished chain and wait for its worker thread.

    A worker is a daemon thread inside ``pipe(...)``; left running while the interpreter
    finalises, it was stopped inside PyTorch's C++ code and the process aborted ("terminate
    called without an active exception", exit 134). Closing lets it finish the denoiser call
    in flight, unwind at the gate and end first.
    """
    for rec in list(_LIVE):
        rec.close()


def _rms(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square as a 0-d float32 tensor on x's device (no host sync)."""
    return x.detach().float().pow(2).mean().sqrt()


class Recorder:
    """Runs ``work(**call_kwargs)`` in a worker thread and records it, one denoiser call per :meth:`advance`.

    The worker pauses at a gate before each denoiser call until it is allowed on: one call per
    :meth:`advance` (stepping by hand, the caller waiting), or every call at once after
    :meth:`run_in_background` (running in the background: the caller is free, ``on_record`` hears of each
    step from the worker thread, :meth:`stop` pauses it again at the next gate and
    :meth:`wait` waits for that). Either way the worker is the only thread that computes.

    Parameters
    ----------
    work
        The chain's pipeline (from :func:`working_pipeline`).
    family
        Its :class:`Family`.
    call_kwargs
        The keyword arguments of the pipeline call (``output_type="np"``).
    n_tokens
        Token positions to keep in attention maps.
    capture_attention
        Swap in capturing attention processors during each denoiser call.
    record_dtype
        Storage dtype of the records' tensors.
    """

    def __init__(
        self,
        work: Any,
        family: Family,
        call_kwargs: dict[str, Any],
        *,
        n_tokens: int,
        capture_attention: bool,
        record_dtype: torch.dtype,
    ) -> None:
        self.work, self.family, self.call_kwargs = work, family, call_kwargs
        self.scheduler = work.scheduler
        self.denoiser = getattr(work, family.denoiser)
        self.n_tokens = n_tokens
        self.capture_attention = capture_attention
        self.record_dtype = record_dtype
        self.trajectory: Any = None  # set by the chain; records are appended to it
        self.latents: torch.Tensor | None = None
        self.timesteps: list[Any] = []
        self.sigma_scaled = float(getattr(self.scheduler, "init_noise_sigma", 1.0)) != 1.0
        self.prediction_type = family.prediction_type(self.scheduler)
        self._cond = threading.Condition()
        self._allowed = 0  # denoiser calls the worker may start
        self._started = 0
        self._paused = False
        self._finished = False
        self._closed = False
        self._free = False  # running in the background: the gate lets every call through
        self._on_record: Callable[[StepRecord], Any] | None = None
        self._on_idle: Callable[[BaseException | None], Any] | None = None
        self._idle = threading.Event()  # set while the worker is not running in the background
        self._idle.set()
        self._ended = threading.Event()  # set by the worker thread as its very last act
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._tid: int | None = None
        self._unscaled: torch.Tensor | None = None
        self._output: tuple[torch.Tensor | None, torch.Tensor] | None = None
        self._maps: Any = None
        self._store: Any = None
        self._attn: list[tuple[str, Any]] | None = None
        self._capture = contextlib.ExitStack()  # the attention processors of the call in flight
        self._prev_x0: torch.Tensor | None = None
        self._prev_latents: torch.Tensor | None = None

    # -- the caller's side ---------------------------------------------------------------
    def start(self) -> None:
        """Start ``pipe(...)`` and wait until it pauses before its first denoiser call (or fails)."""
        thread = threading.Thread(target=self._main, name="diffkit-reverse-chain", daemon=True)
        self._thread = thread
        _LIVE.add(self)
        thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._paused or self._finished or self._error is not None)
        if self._error is not None:
            self._ended.wait()
            raise self._error

    def advance(self) -> StepRecord:
        """Let the pipeline make its next denoiser call and scheduler step; return that step's record.

        After the last step it also waits for the pipeline to decode the final image.
        """
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise ChainClosedError("this chain was closed; fix: make a new ReverseChain to run it again")
            if self._free:
                raise StateError("the chain is running in the background; fix: wait for it (wait()) or stop it "
                                 "(cancel()) before stepping by hand")
            records = self.trajectory  # the one sequence of records, the trajectory's
            i = len(records)
            n = len(self.timesteps)
            self._allowed = i + 1
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._error is not None
                or self._finished
                or self._closed
                or (len(records) > i and len(records) < n)
            )
            if self._error is not None:
                raise self._error
            if len(records) <= i and self._closed:
                raise ChainClosedError(
                    f"the chain was closed before step {i}; fix: make a new ReverseChain to run it again"
                )
            if len(records) <= i:
                raise RuntimeError(
                    f"the pipeline finished after {len(records)} denoiser calls, where its "
                    f"timesteps promised {n}; please report this with the pipeline and scheduler"
                )
            return records[i]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def running(self) -> bool:
        """Whether the worker is running in the background (after :meth:`run_in_background`, until it stops or ends)."""
        return not self._idle.is_set()

    def run_in_background(
        self,
        on_record: Callable[[StepRecord], Any] | None = None,
        on_idle: Callable[[BaseException | None], Any] | None = None,
    ) -> None:
        """Let the worker run every remaining call without pausing; return at once.

        *on_record* is called from the worker thread with each new record, *on_idle* once when
        the run has paused (:meth:`stop`), finished or failed (with the error, or None).
        :meth:`wait` waits for that moment (a failure is raised by the next :meth:`advance` or
        :meth:`wait`).
        """
        with self._cond:
            if self._closed:
                raise ChainClosedError("this chain was closed; fix: make a new ReverseChain to run it again")
            if self._free:
                raise StateError("the chain is already running in the background; fix: wait() or cancel() first")
            over = self._finished or self._error is not None
            if not over:
                self._on_record, self._on_idle = on_record, on_idle
                self._free = True
                self._idle.clear()
                self._allowed = len(self.timesteps)
                self._cond.notify_all()
        if over and on_idle is not None:
            on_idle(self._error)

    def stop(self) -> None:
        """Pause a background run before its next denoiser call (the call in flight completes)."""
        with self._cond:
            if not self._free:
                return
            self._allowed = self._started
            # a worker already waiting at the gate will not pass it again: the run is idle now
            idle = self._go_idle() if self._paused else None
            self._cond.notify_all()
        if idle is not None:
            idle()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until a background run has paused, finished or failed; False if *timeout* passed first.

        Raises the run's error, if it failed. An ``Event``, not ``Thread.join``: Ctrl-C while
        waiting leaves every state true (the caller may :meth:`stop` and wait again).
        """
        done = self._idle.wait(timeout)
        if done and self._error is not None:
            raise self._error
        return done

    def _go_idle(self) -> Callable[[], Any] | None:
        """The worker stops running in the background (call with the lock held); returns the
        *on_idle* call to make once the lock is released (None if there is none)."""
        if not self._free:
            return None
        self._free = False
        on_idle, error = self._on_idle, self._error
        self._on_record = self._on_idle = None
        self._idle.set()
        return None if on_idle is None else functools.partial(on_idle, error)

    def close(self, timeout: float | None = 120.0) -> None:
        """Abandon the call and wait for it to end: the worker finishes the denoiser call in
        flight (if any), unwinds ``pipe(...)`` at the gate and removes every hook.

        Waits at most *timeout* seconds (None: as long as it takes); from the worker thread
        itself it does not wait. Calling it again is harmless.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._ended.wait(timeout)  # an Event, not Thread.join: Ctrl-C in join() can corrupt the thread's state

    # -- the worker's side ---------------------------------------------------------------
    def _main(self) -> None:
        self._tid = threading.get_ident()
        sched = self.scheduler
        hooks = [
            self.denoiser.register_forward_pre_hook(self._before_call, with_kwargs=True),
            self.denoiser.register_forward_hook(self._after_call, with_kwargs=True),
        ]
        step, scale = sched.step, getattr(sched, "scale_model_input", None)
        sched.step = self._wrap_step(step)
        if scale is not None:
            sched.scale_model_input = self._wrap_scale(scale)
        try:
            out = self.work(**self.call_kwargs)
            image = np.asarray(out.images[0], dtype=np.float32)
            nsfw = getattr(out, "nsfw_content_detected", None)
            with self._cond:
                self.trajectory.finish(image, None if nsfw is None else bool(nsfw[0]))
                self._finished = True
                self._cond.notify_all()
        except _Closed:
            pass
        except BaseException as e:  # handed to the caller's thread by advance() or wait()
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            with self._cond:
                idle = self._go_idle()
                self._cond.notify_all()
            if idle is not None:
                idle()
            for h in hooks:
                h.remove()
            self._restore_attention()
            sched.step = step
            if scale is not None:
                sched.scale_model_input = scale
            _LIVE.discard(self)
            self._ended.set()

    def _mine(self) -> bool:
        return threading.get_ident() == self._tid

    def _wrap_scale(self, scale: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        @functools.wraps(scale)
        def scale_model_input(sample: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            if self._mine():
                self._unscaled = sample[:1]
            return scale(sample, *args, **kwargs)

        return scale_model_input

    def _before_call(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not self._mine():
            return None
        x_in = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        with self._cond:
            if self.latents is None:  # before the first call: x_T (or the noised image) as the pipeline holds it
                self.latents = self._unscaled if self._unscaled is not None else x_in[:1]
                # the pipeline's own count (img2img runs only the last ones of the scheduler's list)
                n = int(self.work.num_timesteps)
                self.timesteps = list(self.scheduler.timesteps[len(self.scheduler.timesteps) - n :])
            self._unscaled = None
            self._paused = True
            idle = self._go_idle() if self._started >= self._allowed else None  # a background run stops here
            self._cond.notify_all()
        if idle is not None:
            idle()  # outside the lock: the caller's on_idle may look at the chain
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._started < self._allowed)
            self._paused = False
            if self._closed:
                raise _Closed
            self._started += 1
        if self.capture_attention:
            self._install_attention(x_in)
        return None

    def _after_call(self, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        if not self._mine():
            return None
        out = output[0] if isinstance(output, tuple) else output.sample
        uncond, text = out.chunk(2) if out.shape[0] == 2 else (None, out)
        self._output = (uncond, text)
        if self.capture_attention:
            self._maps = types.MappingProxyType(self._store.pop())
            self._restore_attention()
        return None

    def _install_attention(self, x_in: torch.Tensor) -> None:
        from .attention import CrossAttentionStore, capture_cross_attention, cross_attention_layers

        if self._attn is None:
            self._attn = cross_attention_layers(self.denoiser)
        cond = slice(1, 2) if x_in.shape[0] == 2 else slice(0, 1)
        self._store = CrossAttentionStore(self.n_tokens, tuple(self.latents.shape[-2:]), cond, dtype=torch.float16)
        self._capture.enter_context(capture_cross_attention(self.denoiser, self._store, self._attn))

    def _restore_attention(self) -> None:
        self._capture.close()

    # -- one record per scheduler step -------------------------------------------------------
    def _stage(self) -> str:
        sched = self.scheduler
        if getattr(sched, "order", 1) == 2 and hasattr(sched, "state_in_first_order"):
            return "predictor" if sched.state_in_first_order else "corrector"
        prk = getattr(sched, "prk_timesteps", None)
        if prk is not None and hasattr(sched, "counter"):
            return "prk" if sched.counter < len(prk) and not sched.config.skip_prk_steps else "plms"
        return "step"

    def _noise_level(self, t: Any) -> tuple[float, float]:
        """(σ, ᾱ) of the point the model was just evaluated at; call after ``scheduler.step``.

        σ is the scheduler's: k-diffusion's √((1 − ᾱ)/ᾱ) for DDPM-type schedules, the
        flow-matching σ_t for SD 3 (whose ᾱ is then the VP equivalent (1−σ)²/((1−σ)² + σ²)).
        """
        sched = self.scheduler
        sigmas = getattr(sched, "sigmas", None)
        idx = getattr(sched, "step_index", None)
        if sigmas is not None and idx is not None:
            sigma = float(sigmas[idx - 1])
            if self.family.flow:
                return sigma, (1 - sigma) ** 2 / ((1 - sigma) ** 2 + sigma**2)
            return sigma, 1.0 / (1.0 + sigma**2)
        ab = float(sched.alphas_cumprod[int(t)])
        return math.sqrt((1.0 - ab) / ab), ab

    def _wrap_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        # functools.wraps keeps step's signature visible: pipelines inspect it to decide
        # whether to pass ``generator`` and ``eta``
        @functools.wraps(step)
        def wrapped(model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any,
                    return_dict: bool = True, **kwargs: Any) -> Any:
            if not self._mine():
                return step(model_output, timestep, sample, *args, return_dict=return_dict, **kwargs)
            stage = self._stage()
            out = step(model_output, timestep, sample, *args, return_dict=True, **kwargs)
            self._record(model_output, timestep, sample, out, stage)
            return out if return_dict else out.to_tuple()

        return wrapped

    def _record(self, noise_pred: torch.Tensor, t: Any, latents: torch.Tensor, out: Any, stage: str) -> None:
        i = len(self.trajectory)
        prev = out.prev_sample
        uncond, text = self._output if self._output is not None else (None, noise_pred)
        self._output = None
        sigma, alpha_bar = self._noise_level(t)
        x0 = getattr(out, "pred_original_sample", None)
        source = "scheduler"
        if x0 is None:
            source = "formula"
            kw = {"sigma": sigma} if (self.sigma_scaled or self.family.flow) else {"alpha_bar": alpha_bar}
            x0 = predicted_x0(noise_pred, latents, prediction_type=self.prediction_type, **kw)
        # scalars, computed on the device and fetched in one go, with the finiteness check
        names = ["x_t", "eps_text", "eps", "x0_hat", "x_prev"]
        vals = [_rms(latents), _rms(text), _rms(noise_pred), _rms(x0), _rms(prev)]
        if uncond is not None:
            names += ["eps_uncond", "guidance", "cos_eps_text_uncond"]
            vals += [
                _rms(uncond),
                _rms(text.float() - uncond.float()),
                torch.nn.functional.cosine_similarity(text.float().flatten(), uncond.float().flatten(), dim=0),
            ]
        if self._prev_x0 is not None:
            names.append("x0_hat_change")
            vals.append(_rms(x0.float() - self._prev_x0))
        vals.append(torch.isfinite(prev).all().float())
        values = torch.stack([v.float() for v in vals]).tolist()
        if values.pop() != 1.0:
            raise NonFiniteLatentsError(
                f"the latents became NaN or inf at step {i} of {len(self.timesteps)} (t={float(t):g}); the chain "
                "stops here. Usual causes: float16 overflow (load the pipeline in float32: "
                "load_pipeline(..., dtype='float32')), a very large guidance_scale, or broken weights"
            )
        stats = dict(zip(names, values))
        stats["x_t_vp"] = stats["x_t"] / math.sqrt(sigma**2 + 1) if self.sigma_scaled else stats["x_t"]
        # compact copies, moved to the CPU in one transfer: (ε̂_u), ε̂_c, ε̂, x̂_0, x_{t−1}
        parts = [text, noise_pred, x0, prev] if uncond is None else [uncond, text, noise_pred, x0, prev]
        packed = torch.stack([x.detach()[0].to(self.record_dtype) for x in parts]).to("cpu").unbind(0)
        if uncond is None:
            packed = (None, *packed)
        uncond_rec, text_rec, eps_rec, x0_rec, prev_rec = packed
        x_t_rec = self._prev_latents
        if x_t_rec is None:
            x_t_rec = latents.detach()[0].to("cpu", self.record_dtype)
        tv = float(t)
        rec = StepRecord(
            index=i, timestep=int(tv) if tv.is_integer() else tv, sigma=sigma, alpha_bar=alpha_bar, stage=stage,
            guidance_scale=float(self.call_kwargs["guidance_scale"]), sigma_scaled=self.sigma_scaled,
            latents=x_t_rec, noise_pred_uncond=uncond_rec, noise_pred_text=text_rec, noise_pred=eps_rec,
            pred_original_sample=x0_rec, prev_sample=prev_rec, x0_source=source,
            stats=types.MappingProxyType(stats), attention=self._maps, prediction_type=self.prediction_type,
        )
        self._maps = None
        self._prev_x0 = x0.detach().float()
        self._prev_latents = prev_rec
        with self._cond:
            self.latents = prev
            self.trajectory.add(rec)
            on_record = self._on_record
            self._cond.notify_all()
        if on_record is not None:
            on_record(rec)
