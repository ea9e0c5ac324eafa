"""ReverseChainExplorer: run a Stable Diffusion pipeline, then walk its reverse chain step by step."""

from __future__ import annotations

import atexit
import functools
import html
import threading
import weakref
from typing import Any

import ipywidgets as W

from ..checks import wait_or_cancel
from ..errors import InputError
from ..i18n import gettext as _
from ..reverse import ReverseChain, Trajectory
from ..reverse.attention import colorbar
from ..reverse.families import family_of
from ._common import Explorer, encode_image, guarded
from .reverse_decoder import StepDecoder
from .reverse_panels import (
    NOISE_PANELS,
)
from .reverse_settings import (
    check_settings,
    check_size,
    default_size,
    pipeline_for,
    prediction_type_of,
    scheduler_choices,
    short_name,
)
from .reverse_view import MIN_DISPLAY, ReverseChainView

__all__ = ["ReverseChainExplorer"]

_RUNNING: weakref.WeakSet[ReverseChainExplorer] = weakref.WeakSet()
"""Explorers whose background run has not ended."""


@atexit.register
def _stop_runs() -> None:
    """At interpreter exit, cancel every background run and wait for its worker to stop (a
    worker stopped inside PyTorch's C++ code by the interpreter's exit aborts the process)."""
    running = list(_RUNNING)
    for ex in running:
        ex.cancel()
    for ex in running:
        ex._done.wait(120)


class ReverseChainExplorer(ReverseChainView, Explorer):
    """Type a prompt, press Run, then scrub the reverse chain one denoising step at a time.

    Panels: the noisy latents x_t and the clean image the U-Net implies x̂_0 (the exact VAE
    decodes, made in the background once a run has ended; the fast preview until a step is
    decoded), the noise predictions without and with the text, the
    guided one and the guidance direction ε̂_c − ε̂_u, the cross-attention of a chosen prompt
    word, and the step's numbers. Everything shown comes from :class:`diffkit.ReverseChain`
    and its :class:`diffkit.Trajectory`.

    Parameters
    ----------
    pipe
        Any pipeline :func:`diffkit.load_pipeline` returns, or what it takes (``"tiny"``, a hub
        id, a folder); default diffkit-tiny.
    prompt, negative_prompt, steps, guidance_scale, seed, scheduler, size
        Initial values of the controls.
    display_size
        Side, in screen pixels, of the x_t and x̂_0 panels (default: the image size, at least
        256; smaller images are enlarged with nearest neighbour). The noise panels are half.
    exact
        Show x_t and x̂_0 as exact VAE decodes (None, the default, or True): every step is
        decoded in a thread of the explorer's own after the run (the shown step first, one
        decode at a time, stopped by Cancel, a new Run and :meth:`close`), and the fast linear
        preview stands in until a step is decoded. False: the fast preview only, nothing decoded.
    run
        Start a run at once (in the background).
    """

    def __init__(
        self,
        pipe: Any = None,
        *,
        prompt: str = "a red circle",
        negative_prompt: str = "",
        steps: int = 25,
        guidance_scale: float = 7.5,
        seed: int = 0,
        scheduler: str | None = None,
        size: int | None = None,
        display_size: int | None = None,
        capture_attention: bool = True,
        exact: bool | None = None,
        run: bool = False,
    ) -> None:
        steps, guidance_scale, seed, scheduler, display_size = check_settings(
            prompt, negative_prompt, steps, guidance_scale, seed, scheduler, display_size, exact
        )
        self.pipe, load_error = pipeline_for(pipe)
        # the size step: the VAE factor (× 2 for Flux's packing); no model: the size list is just shown
        factor = family_of(self.pipe)[0].size_factor(self.pipe) if self.pipe is not None else 1
        own_size = default_size(self.pipe, factor)
        size = check_size(size, factor, own_size)
        self._settings_controls(
            prompt, negative_prompt, steps, guidance_scale, seed, scheduler, capture_attention, size, own_size, factor
        )
        self.chain: ReverseChain | None = None
        self.trajectory: Trajectory | None = None
        self._decoder: StepDecoder | None = None  # the background decoding of the trajectory's steps
        self._pictures: dict[tuple, Any] = {}  # (id(trajectory), step, what) → PNG bytes, or a step's other panels
        self._view_lock = threading.RLock()  # the slider and the decoder both show pictures
        self._held = False  # Cancel held the decoding until the next move of the slider
        self._own_move = False  # the explorer itself moves the slider (a finished run)
        self._shown = "pending"
        self._viewer_controls(exact, display_size)
        self._done = threading.Event()  # set while no background run is going
        self._done.set()
        self._lock = threading.Lock()
        self._notes = ""
        self._cancelled = False
        super().__init__(self._layout())
        self.run_button.on_click(self._on_run)
        self.cancel_button.on_click(self._on_cancel)
        self.next_button.on_click(self._on_next)
        self.step.observe(self._on_step, names="value")
        self.exact.observe(self._on_exact, names="value")
        self.token.observe(self._on_step, names="value")
        if load_error is not None:
            self.run_button.disabled = self.next_button.disabled = True
            self.error.show(
                ValueError(
                    _(
                        "no pipeline to run: {error}. Or pass one: "
                        "ReverseChainExplorer(load_pipeline('a hub id or folder'))"
                    ).format(error=load_error)
                )
            )
        elif run:
            self.run()

    def _settings_controls(
        self,
        prompt: str,
        negative_prompt: str,
        steps: int,
        guidance_scale: float,
        seed: int,
        scheduler: str | None,
        capture_attention: bool,
        size: int | None,
        default_size: int,
        factor: int,
    ) -> None:
        """The controls of a run: prompt, negative prompt, seed, steps, guidance, scheduler, size."""
        sizes = sorted(
            {
                default_size,
                *(s for s in (32, 64, 128, 256, 512, 768, 1024) if s % factor == 0),
                *((size,) if size else ()),
            }
        )
        self.prompt = W.Textarea(value=prompt, description=_("prompt"), rows=2, layout=W.Layout(width="460px"))
        self.negative = W.Text(value=negative_prompt, description=_("negative"), layout=W.Layout(width="460px"))
        self.seed = W.IntText(value=seed, description=_("seed"), layout=W.Layout(width="180px"))
        self.steps = W.IntSlider(value=steps, min=1, max=max(100, steps), description=_("steps"))
        self.steps.add_class("diffkit-steps")
        self.guidance = W.FloatSlider(
            value=guidance_scale, min=0.0, max=max(15.0, guidance_scale), step=0.5, description=_("guidance")
        )
        choices = scheduler_choices(self.pipe)
        own = short_name(self.pipe.scheduler, choices) if self.pipe is not None else "ddim"
        if scheduler is not None and scheduler not in choices:
            raise InputError(
                _("scheduler {scheduler!r} does not fit this pipeline; fix: choose one of {choices}").format(
                    scheduler=scheduler, choices=sorted(choices)
                )
            )
        self.scheduler = W.Dropdown(
            options=list(choices),
            value=scheduler or own,
            description=_("scheduler"),
            style={"description_width": "initial"},  # Spanish's "programador" is wider than a label's 80 px
        )
        self.size = W.Dropdown(options=sizes, value=size or default_size, description=_("size"))
        self.capture = W.Checkbox(value=capture_attention, description=_("capture attention"))
        self.run_button = W.Button(description=_("Run"), icon="play", button_style="primary")
        self.cancel_button = W.Button(description=_("Cancel"), icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="240px"))
        self.status = W.HTML()

    def _viewer_controls(self, exact: bool | None, display_size: int | None) -> None:
        """The step slider and the panels that show one step."""
        self.step = W.IntSlider(
            value=0, min=0, max=0, description=_("step"), disabled=True, layout=W.Layout(width="420px")
        )
        self.step.add_class("diffkit-step")
        self.play = W.Play(min=0, max=0, interval=250, disabled=True)
        self.link((self.play, "value"), (self.step, "value"))
        self.next_button = W.Button(
            description=_("next step"),
            icon="step-forward",
            tooltip=_("run one more U-Net call of a new chain, or move the slider on"),
        )
        self.exact = W.Checkbox(
            value=exact is not False, description=_("exact (VAE decode)"), indent=False, layout=W.Layout(width="auto")
        )
        self.exact.add_class("diffkit-exact")
        self.display_size = display_size  # None: follow the image size, at least MIN_DISPLAY
        self.x_t, self.x0 = W.Image(format="jpeg"), W.Image(format="jpeg")
        self.x_t.add_class("diffkit-x-t")
        self.x0.add_class("diffkit-x0")
        self.noise = [W.Image(format="jpeg") for _ in NOISE_PANELS]
        self.token = W.Dropdown(options=[], description=_("word"))
        self.attention = W.Image(format="jpeg")
        self.colorbar = W.Image(
            format="png",
            value=encode_image(colorbar(256, 12), "png"),
            layout=W.Layout(width=f"{display_size or MIN_DISPLAY}px"),
        )
        self.attention_scale = W.HTML()
        self.table = W.HTML()
        self._x_t_title, self._x0_title = W.HTML(), W.HTML()
        self._x_t_title.add_class("diffkit-title")
        self._x0_title.add_class("diffkit-title")
        self._noise_titles = [W.HTML() for _ in NOISE_PANELS]
        self._set_image_titles()
        self._set_noise_titles(prediction_type_of(self.pipe))

    # -- running ---------------------------------------------------------------------------
    def _new_chain(self) -> ReverseChain:
        chain = ReverseChain(
            self.pipe,
            self.prompt.value,
            negative_prompt=self.negative.value or None,
            steps=int(self.steps.value),
            guidance_scale=float(self.guidance.value),
            seed=int(self.seed.value),
            scheduler=self.scheduler.value,
            height=int(self.size.value),
            width=int(self.size.value),
            capture_attention=bool(self.capture.value),
        )
        tokens = chain.tokens  # what the tokenizer kept, read from the chain (no process-wide warning capture)
        self._notes = (
            ""
            if not tokens.truncated
            else "<div style='color:#a60'>{}</div>".format(
                _(
                    "the prompt is longer than the text encoder's {n} tokens; these words are dropped: {words}. "
                    "Shorten the prompt or move the important words to the front"
                ).format(n=tokens.max_length - 2, words=html.escape(repr(tokens.dropped)))
            )
        )
        self.status.value = self._notes
        self._cancelled = False
        return chain

    @property
    def running(self) -> bool:
        """Whether a background run is going (it has not yet finished, paused or failed)."""
        return not self._done.is_set()

    def run(self, *, wait: bool = False) -> None:
        """Start a run in the background (what the Run button does); *wait* blocks until it ends.

        The chain runs in its own worker thread (:meth:`ReverseChain.run_in_background`), so the
        notebook stays free to answer the Cancel button; the explorer adds no thread. Ctrl-C
        while waiting cancels the run: the step in flight ends, and only then does the
        interrupt reach the caller, so no step runs on unseen.
        """
        with self._lock:
            if self.running:
                raise InputError(
                    _(
                        "a run is already going; fix: press Cancel (or call .cancel()) and wait "
                        "for it to stop first: two runs never go at once"
                    )
                )
            chain = self._new_chain()  # bad settings fail here, before anything runs
            self._stop_decoding()  # the old trajectory's decodes are dropped with it
            self._pictures.clear()
            self._held = False
            if self.chain is not None:
                self.chain.close()  # a cancelled or hand-stepped chain: its paused pipeline call unwinds
            self.chain = chain
            self.trajectory = chain.trajectory
            self.progress.max, self.progress.value = len(chain), 0
            self.run_button.disabled, self.cancel_button.disabled = True, False
            self._done.clear()
            _RUNNING.add(self)
        chain.run_in_background(
            callback=lambda rec: setattr(self.progress, "value", rec.index + 1),
            done=functools.partial(self._run_ended, chain),
        )
        if wait:
            self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run has ended (tests and scripts); False if *timeout* passed first.

        Ctrl-C while waiting cancels the run and waits for the step in flight to end, then
        re-raises ``KeyboardInterrupt``.
        """
        return wait_or_cancel(self._done.wait, self.cancel, timeout)

    def cancel(self) -> None:
        """Stop a background run after the U-Net call in flight (what the Cancel button does), and
        the background decoding after the decode in flight (it goes on at the next move of the slider)."""
        self._held = True
        self._stop_decoding(wait=False)
        if self.chain is not None and self.running:
            self._cancelled = True
            self.chain.cancel()

    def _run_ended(self, chain: ReverseChain, error: BaseException | None) -> None:
        """The chain's *done* callback (its worker thread): show the result, then mark the run over."""
        try:
            if error is not None and not isinstance(error, Exception):
                return  # an interrupt or an exit unwinding the worker: nothing to show
            if error is not None:
                self.error.show(error)
            self.run_button.disabled, self.cancel_button.disabled = False, True
            if not chain.closed and self.chain is chain:
                self._show_trajectory(chain)
                if error is None and not self._cancelled:
                    self._start_decoding(run_over=True)  # before the run counts as over: wait_decoded() sees it
        finally:
            _RUNNING.discard(self)
            self._done.set()

    @guarded
    def _on_run(self, button: Any = None) -> None:
        self.status.value = ""
        self.run()

    @guarded
    def _on_cancel(self, button: Any = None) -> None:
        self.cancel()

    @guarded
    def _on_next(self, button: Any = None) -> None:
        """Step a chain by hand: one U-Net call at a time (a new chain if none is going)."""
        if self.running:
            raise InputError(_("a run is going; fix: wait for it, or press Cancel, then step by hand"))
        self._stop_decoding()  # the chain computes alone; decoding goes on after the step
        self._held = False
        if self.chain is None or self.chain.done or self.chain.closed:
            self._pictures.clear()
            self.chain = self._new_chain()
            self.trajectory = self.chain.trajectory
            self.progress.max, self.progress.value = len(self.chain), 0
        rec = self.chain.step()
        self.progress.value = rec.index + 1
        self._show_trajectory(self.chain)
        self._start_decoding()

    def close(self) -> None:
        """Stop a background run and the background decoding, let the chain's pipeline call unwind,
        and close every widget."""
        if "error" not in self.__dict__:  # a constructor that failed: nothing was built
            return
        self.cancel()
        self._done.wait(120)
        self._stop_decoding()  # and wait for it: no thread of the explorer's outlives it
        if self.chain is not None:
            self.chain.close()
        super().close()
