"""The recorder: watch a real ``pipe(...)`` call step by step, without changing anything it computes.

``pipe(...)`` runs in a worker thread on a shallow copy of the pipeline that has a private
scheduler (never rebuilt through ``__init__``, which rewrites scheduler configs). Thin wrappers on
that scheduler's ``step`` and ``scale_model_input``, a gate (forward pre-hook) and a reader
(forward hook) on the denoiser, and, on request, capturing attention processors record each step;
each observes and returns nothing, acts only in the chain's thread, and is removed when the call
ends. One small :class:`~diffkit.reverse.families.Family` adapter per family
(:mod:`diffkit.reverse.families`) says which classes, which denoiser, and what the model predicts. The whole design, and why it cannot drift: ``docs/recorder.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..errors import ChainClosedError, NonFiniteLatentsError, StateError
from .families import Family
from .records import StepRecord
from .step_reader import StepReader

__all__ = ["ChainClosedError", "NonFiniteLatentsError", "Recorder"]


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


class Recorder(StepReader):
    """Runs ``work(**call_kwargs)`` in a worker thread and records it, one denoiser call per :meth:`advance`.

    The worker pauses at a gate before each denoiser call until it is allowed on: one call per
    :meth:`advance` (stepping by hand, the caller waiting), or every call at once after
    :meth:`run_in_background` (running in the background: the caller is free, ``on_record`` hears of each
    step from the worker thread, :meth:`stop` pauses it again at the next gate and
    :meth:`wait` waits for that). Either way the worker is the only thread that computes.

    *work* is the chain's pipeline (:func:`working_pipeline`), *family* its :class:`Family`,
    *call_kwargs* the pipeline call's keyword arguments (``output_type="np"``); *n_tokens* token
    positions are kept in attention maps, captured (*capture_attention*) by processors swapped in
    during each denoiser call; records' tensors are stored as *record_dtype*.
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
        self._outputs: list[torch.Tensor] = []  # the denoiser outputs of the step in flight
        self._calls = 0  # denoiser calls of the step in flight
        self.grid: tuple[int, int] | None = None  # Flux: the grid of latent tokens
        self._maps: Any = None
        self._store: Any = None  # the attention store of the call in flight (None: no capture in it)
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
                raise StateError(
                    "the chain is running in the background; fix: wait for it (wait()) or stop it "
                    "(cancel()) before stepping by hand"
                )
            records = self.trajectory  # the one sequence of records, the trajectory's
            i = len(records)
            n = len(self.timesteps)
            self._allowed = i + 1
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: (
                    self._error is not None or self._finished or self._closed or (len(records) > i and len(records) < n)
                )
            )
            error = self._error
        if error is not None:
            self._ended.wait()  # the worker has removed every hook and processor before the caller hears of it
            raise error
        with self._cond:
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

    def _before_call(self, module: Any, args: tuple, kwargs: dict) -> None:
        if not self._mine():
            return None
        x_in = args[0] if args else kwargs.get("hidden_states", kwargs.get("sample"))
        call = self._calls
        self._calls += 1
        if not self.family.gates(call):  # a later call of the same step (Flux's true CFG): no gate, no maps
            return None
        with self._cond:
            if self.latents is None:  # before the first call: x_T (or the noised image) as the pipeline holds it
                self.grid = self.family.token_grid(kwargs)
                x0 = self._unscaled if self._unscaled is not None else x_in[:1]
                self.latents = self.family.to_grid(x0, self.grid)
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
            self._install_attention(x_in, kwargs)
        return None
