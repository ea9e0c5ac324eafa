"""ReverseChainExplorer: run a Stable Diffusion pipeline, then walk its reverse chain step by step."""

from __future__ import annotations

import atexit
import functools
import html
import os
import threading
import weakref
from typing import Any

import ipywidgets as W
import numpy as np
from PIL import Image

from ..checks import check_choice, check_float, check_int, check_seed
from ..errors import InputError
from ..pipeline import SCHEDULERS, scheduler_name
from ..reverse import ReverseChain, Trajectory
from ..reverse.attention import colorbar
from ..reverse.records import prediction_symbol
from ._common import Explorer, encode_image, guarded

__all__ = ["ReverseChainCompare", "ReverseChainExplorer"]

_NOISE_PANELS = (
    ("eps_uncond", "{s}_u (no text)"),
    ("eps_text", "{s}_c (with text)"),
    ("eps", "{s} guided"),
    ("guidance", "{s}_c − {s}_u"),
)
"""The model-output panels; ``{s}`` is what the model predicts (ε̂ or v̂), read from its records."""

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


_PREDICTS = {"epsilon": "the noise ε", "v_prediction": "v = √ᾱ ε − √(1−ᾱ) x₀", "flow": "the velocity v = ε − x₀"}


def _prediction_type(pipe: Any) -> str:
    """What *pipe*'s model predicts, from its scheduler config (``"epsilon"`` before a model is loaded)."""
    from ..reverse.families import family_of

    if pipe is None:
        return "epsilon"
    return family_of(pipe)[0].prediction_type(pipe.scheduler)


def _resize(arr: np.ndarray, size: int | None) -> np.ndarray:
    """Scale a picture to *size* × *size* screen pixels with nearest neighbour: the model's
    own pixels stay visible as blocks, nothing is smoothed that the model did not draw."""
    if size is None or (arr.shape[0] == size and arr.shape[1] == size):
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST))


#: The slider budget (ms) under which the explorer shows exact VAE decodes by default.
EXACT_BUDGET_MS = 50.0
#: The smallest side, in screen pixels, of the x_t and x̂_0 panels (a classroom projector).
MIN_DISPLAY = 256


class ReverseChainExplorer(Explorer):
    """Type a prompt, press Run, then scrub the reverse chain one denoising step at a time.

    Panels: the noisy latents x_t (fast preview), the clean image the U-Net implies x̂_0 (fast,
    or the exact VAE decode, cached), the noise predictions without and with the text, the
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
        Show x_t and x̂_0 as exact VAE decodes (True) or the fast linear preview (False). The
        default, None, decides at the first picture: exact when decoding both panels takes
        under 50 ms (the slider's budget; diffkit-tiny on a laptop), else fast.
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
        steps = check_int("steps", steps, lo=1, hi=1000, hint="25 is usual")
        guidance_scale = check_float("guidance_scale", guidance_scale, lo=0.0, hi=50.0,
                                     hint="7.5 is usual; 0 or 1 turns guidance off")
        seed = check_seed(seed)
        for name, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if not isinstance(text, str):
                raise InputError(f"{name}={text!r} is not text; fix: pass a string such as 'a red circle'")
        if scheduler is not None:
            scheduler = check_choice("scheduler", _SCHEDULER_ALIASES.get(scheduler, scheduler), SCHEDULERS)
        if display_size is not None:
            display_size = check_int("display_size", display_size, lo=16, hi=4096, hint="screen pixels")
        if exact is not None and not isinstance(exact, bool):
            raise InputError(f"exact={exact!r} is not True, False or None; fix: pass exact=True for VAE "
                             "decodes, exact=False for the fast preview, or leave it out to decide by speed")
        load_error = None
        if pipe is None or isinstance(pipe, (str, os.PathLike)):  # a name: "tiny", a hub id or a folder
            from ..pipeline import load_pipeline

            try:
                pipe = load_pipeline("tiny" if pipe is None else pipe)
            except (OSError, ValueError) as e:  # shown in the widget, with the fix
                load_error = e
        else:
            from ..reverse.families import family_of

            family_of(pipe)  # not a pipeline the chain records: InputError naming the supported ones
        self.pipe = pipe
        factor = int(getattr(pipe, "vae_scale_factor", 8))
        default_size = int(pipe.unet.config.sample_size) * factor if pipe is not None else 64
        if size is not None:
            size = check_int("size", size, lo=factor, hi=2048, hint=f"the model's own size is {default_size}")
            if size % factor:
                raise InputError(
                    f"size={size} is not a multiple of {factor} (the VAE's scale factor); fix: pass "
                    f"{max(factor, size - size % factor)} or {size - size % factor + factor}"
                )
        sizes = sorted({default_size, *(s for s in (32, 64, 128, 256, 512, 768, 1024) if s % factor == 0),
                        *((size,) if size else ())})
        self.prompt = W.Textarea(value=prompt, description="prompt", rows=2, layout=W.Layout(width="460px"))
        self.negative = W.Text(value=negative_prompt, description="negative", layout=W.Layout(width="460px"))
        self.seed = W.IntText(value=seed, description="seed", layout=W.Layout(width="180px"))
        self.steps = W.IntSlider(value=steps, min=1, max=max(100, steps), description="steps")
        self.steps.add_class("diffkit-steps")
        self.guidance = W.FloatSlider(value=guidance_scale, min=0.0, max=max(15.0, guidance_scale), step=0.5,
                                      description="guidance")
        self.scheduler = W.Dropdown(
            options=list(SCHEDULERS), value=scheduler or (_short_name(pipe.scheduler) if pipe is not None else "ddim"),
            description="scheduler",
        )
        self.size = W.Dropdown(options=sizes, value=size or default_size, description="size")
        self.capture = W.Checkbox(value=capture_attention, description="capture attention")
        self.run_button = W.Button(description="Run", icon="play", button_style="primary")
        self.cancel_button = W.Button(description="Cancel", icon="stop", disabled=True)
        self.progress = W.IntProgress(value=0, min=0, max=1, description="", layout=W.Layout(width="240px"))
        self.status = W.HTML()
        self.step = W.IntSlider(value=0, min=0, max=0, description="step", disabled=True,
                                layout=W.Layout(width="420px"))
        self.step.add_class("diffkit-step")
        self.play = W.Play(min=0, max=0, interval=250, disabled=True)
        self.link((self.play, "value"), (self.step, "value"))
        self.next_button = W.Button(description="next step", icon="step-forward",
                                    tooltip="run one more U-Net call of a new chain, or move the slider on")
        self.exact = W.Checkbox(value=bool(exact), description="exact (VAE decode)")
        self._exact_auto = exact is None
        self.display_size = display_size  # None: follow the image size, at least MIN_DISPLAY
        self.x_t = W.Image(format="jpeg")
        self.x0 = W.Image(format="jpeg")
        self.noise = [W.Image(format="jpeg") for _ in _NOISE_PANELS]
        self.token = W.Dropdown(options=[], description="word")
        self.attention = W.Image(format="jpeg")
        self.colorbar = W.Image(format="png", value=encode_image(colorbar(256, 12), "png"), layout=W.Layout(width=f"{display_size or MIN_DISPLAY}px"))
        self.attention_scale = W.HTML()
        self.table = W.HTML()
        self.chain: ReverseChain | None = None
        self.trajectory: Trajectory | None = None
        self._done = threading.Event()  # set while no background run is going
        self._done.set()
        self._lock = threading.Lock()
        self._notes = ""
        self._cancelled = False

        def panel(img: W.Image, title: W.HTML) -> W.VBox:
            return W.VBox([title, img], layout=W.Layout(align_items="center"))

        self._x_t_title, self._x0_title = W.HTML(), W.HTML()
        self._set_image_titles()
        self.exact.observe(lambda change: self._set_image_titles(), names="value")

        self._noise_titles = [W.HTML() for _ in _NOISE_PANELS]
        self._set_noise_titles(_prediction_type(self.pipe))

        super().__init__([
            W.VBox([self.prompt, self.negative]),
            W.HBox([self.seed, self.steps, self.guidance]),
            W.HBox([self.scheduler, self.size, self.capture]),
            W.HBox([self.run_button, self.cancel_button, self.progress, self.status]),
            W.HBox([self.play, self.step, self.next_button, self.exact]),
            W.HBox([panel(self.x_t, self._x_t_title), panel(self.x0, self._x0_title),
                    W.VBox([self.token, self.attention, self.colorbar, self.attention_scale])],
                   layout=W.Layout(flex_flow="row wrap")),
            W.HBox([W.VBox([title, img], layout=W.Layout(align_items="center"))
                    for img, title in zip(self.noise, self._noise_titles)], layout=W.Layout(flex_flow="row wrap")),
            self.table,
        ])
        self.run_button.on_click(self._on_run)
        self.cancel_button.on_click(self._on_cancel)
        self.next_button.on_click(self._on_next)
        self.step.observe(self._on_step, names="value")
        self.exact.observe(self._on_step, names="value")
        self.token.observe(self._on_step, names="value")
        if load_error is not None:
            self.run_button.disabled = self.next_button.disabled = True
            self.error.show(ValueError(f"no pipeline to run: {load_error}. Or pass one: "
                                       "ReverseChainExplorer(load_pipeline('a hub id or folder'))"))
        elif run:
            self.run()

    # -- running ---------------------------------------------------------------------------
    def _new_chain(self) -> ReverseChain:
        chain = ReverseChain(
            self.pipe, self.prompt.value, negative_prompt=self.negative.value or None,
            steps=int(self.steps.value), guidance_scale=float(self.guidance.value), seed=int(self.seed.value),
            scheduler=self.scheduler.value, height=int(self.size.value), width=int(self.size.value),
            capture_attention=bool(self.capture.value),
        )
        tokens = chain.tokens  # what the tokenizer kept, read from the chain (no process-wide warning capture)
        self._notes = "" if not tokens.truncated else (
            f"<div style='color:#a60'>the prompt is longer than the text encoder's {tokens.max_length - 2} "
            f"tokens; these words are dropped: {html.escape(repr(tokens.dropped))}. Shorten the prompt or "
            "move the important words to the front</div>"
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
                raise InputError("a run is already going; fix: press Cancel (or call .cancel()) and wait "
                                 "for it to stop first: two runs never go at once")
            chain = self._new_chain()  # bad settings fail here, before anything runs
            if self.chain is not None:
                self.chain.close()  # a cancelled or hand-stepped chain: its paused pipeline call unwinds
            self.chain = chain
            self.trajectory = chain.trajectory
            self.progress.max, self.progress.value = len(chain), 0
            self.run_button.disabled, self.cancel_button.disabled = True, False
            self._done.clear()
            _RUNNING.add(self)
        chain.run_in_background(callback=lambda rec: setattr(self.progress, "value", rec.index + 1),
                                done=functools.partial(self._run_ended, chain))
        if wait:
            self.wait()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current run has ended (tests and scripts); False if *timeout* passed first.

        Ctrl-C while waiting cancels the run and waits for the step in flight to end, then
        re-raises ``KeyboardInterrupt``.
        """
        try:
            return self._done.wait(timeout)
        except KeyboardInterrupt:
            self.cancel()
            self._done.wait()
            raise

    def cancel(self) -> None:
        """Stop a background run after the U-Net call in flight (what the Cancel button does)."""
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
        finally:
            _RUNNING.discard(self)
            self._done.set()

    def _show_trajectory(self, chain: ReverseChain) -> None:
        traj = chain.trajectory
        n = len(traj)
        if chain.done:
            done = f"done: {n} U-Net calls"
        elif self._cancelled:
            done = f"cancelled after {n} of {len(chain)} U-Net calls"
        else:
            done = f"stepping by hand: {n} of {len(chain)} U-Net calls"
        self.status.value = self._notes + f"<small>{done}</small>"
        if n == 0:
            return
        if traj.records[0].attention:
            options = [(f"{i}: {w}", i) for i, w in enumerate(traj.tokens.words)]
            if [o for _, o in options] != [o for _, o in self.token.options]:
                self.token.options = options
                self.token.value = traj.tokens.first_content_position  # "red" in "a red circle"
        else:
            self.token.options = []
        shown = "visible" if self.token.options else "hidden"
        self.attention.layout.visibility = self.colorbar.layout.visibility = shown
        self.step.max = self.play.max = n - 1
        self.step.disabled = self.play.disabled = False
        if self.step.value != n - 1:
            self.step.value = n - 1  # renders
        else:
            self.render(n - 1)

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
            raise InputError("a run is going; fix: wait for it, or press Cancel, then step by hand")
        if self.chain is None or self.chain.done or self.chain.closed:
            self.chain = self._new_chain()
            self.trajectory = self.chain.trajectory
            self.progress.max, self.progress.value = len(self.chain), 0
        rec = self.chain.step()
        self.progress.value = rec.index + 1
        self._show_trajectory(self.chain)

    def close(self) -> None:
        """Stop a background run, let the chain's pipeline call unwind, and close every widget."""
        if "error" not in self.__dict__:  # a constructor that failed: nothing was built
            return
        self.cancel()
        self._done.wait(120)
        if self.chain is not None:
            self.chain.close()
        super().close()

    # -- showing a step ----------------------------------------------------------------------
    @guarded
    def _on_step(self, change: Any = None) -> None:
        if self.trajectory is not None and len(self.trajectory):
            self.render(int(self.step.value))

    def _set_noise_titles(self, prediction_type: str) -> None:
        """Label the model-output panels with what this model predicts (never assumed to be ε)."""
        symbol = prediction_symbol(prediction_type)
        what = _PREDICTS.get(prediction_type, prediction_type)
        for title, (_, fmt) in zip(self._noise_titles, _NOISE_PANELS):
            text = html.escape(fmt.format(s=symbol))
            title.value = f"<small><b title='the model predicts {html.escape(what)}'>{text}</b></small>"

    def render(self, k: int) -> None:
        """Show record *k* of the current trajectory in every panel."""
        traj = self.trajectory
        if traj is None or not len(traj):
            raise InputError("nothing to show yet; fix: press Run (or call .run()) first")
        rec = traj[k]
        self._set_noise_titles(rec.prediction_type)
        ds = self.display_size or max(MIN_DISPLAY, int(traj.info["height"]), int(traj.info["width"]))
        half = (max(ds // 2, 32),) * 2
        if self._exact_auto:  # decide once, on the first picture: exact when it fits the budget
            import time

            traj.decode([k], "x_t")  # the first decode warms the VAE up (and is cached)
            traj.decode([k], "x0_hat")
            times = []  # the best of up to 3 steps not decoded yet: a busy machine's noise removed
            for j in [i for i in range(len(traj)) if i != k][:3] or [k]:
                t0 = time.perf_counter()
                traj.decode([j], "x_t")
                traj.decode([j], "x0_hat")
                times.append((time.perf_counter() - t0) * 1e3)
            ms = min(times)
            self._exact_auto = False
            self.exact.value = ms <= EXACT_BUDGET_MS  # re-renders through the observer if it changes
            self.exact.description = f"exact (VAE decode, {ms:.0f} ms)"
        self._size_panels(ds)
        self._set_image_titles()
        mode = "exact" if self.exact.value else "fast"  # the VAE decode is cached per step
        self.x_t.value = encode_image(_resize(traj.preview(k, "x_t", mode), ds))
        self.x0.value = encode_image(_resize(traj.preview(k, "x0_hat", mode), ds))
        for img, (q, _) in zip(self.noise, _NOISE_PANELS):
            if rec.noise_pred_uncond is None and q in ("eps_uncond", "guidance"):
                img.value = b""  # guidance ≤ 1: no unconditional branch was run
                img.layout.visibility = "hidden"
                continue
            img.layout.visibility = "visible"
            img.value = encode_image(traj.preview(k, q, "fast", size=half))
        if self.token.value is not None and rec.attention:
            self._render_attention(traj, k, ds)
        self.table.value = _step_table(traj, k)

    def _size_panels(self, ds: int) -> None:
        """Fix each panel's on-screen size (a flex row must not shrink a picture to fit)."""
        half = max(ds // 2, 32)
        for img, side in ((self.x_t, ds), (self.x0, ds), (self.attention, ds), *((n, half) for n in self.noise)):
            img.layout.width = img.layout.height = img.layout.min_width = f"{side}px"
        for box in (self._x_t_title, self._x0_title, self.colorbar, self.attention_scale):
            box.layout.width = f"{ds}px"
        for title in (self._x_t_title, self._x0_title):  # equal heights keep the two pictures level
            title.layout.height = "4.5em"
        self.colorbar.layout.height = "12px"

    def _set_image_titles(self) -> None:
        how = "VAE decode" if self.exact.value else "fast linear preview of the latents"
        rgb = self.trajectory.latent_rgb if not self.exact.value and self.trajectory is not None else None
        if rgb is not None and rgb.rms_error is not None:
            how += f" (least-squares fit, RMS error {rgb.rms_error:.3f} on [−1, 1])"
        self._x_t_title.value = f"<small><b>x_t, the noisy latents</b> · {how}</small>"
        self._x0_title.value = f"<small><b>x̂₀, the clean image the model implies</b> · {how}</small>"

    def _render_attention(self, traj: Trajectory, k: int, ds: int) -> None:
        """The chosen word's map at step *k* over the exact x̂_0, on a scale shared by the
        prompt's words at this step (0 … their largest value), with its colour bar."""
        from ..reverse.attention import aggregate_attention, overlay

        n = traj.tokens.n_tokens
        size = (int(traj.info["height"]), int(traj.info["width"]))
        maps = aggregate_attention([traj[k]], list(range(n)), size=size)  # every prompt position, once
        heat = maps[int(self.token.value)]
        words = maps[1 : n - 1] if n > 2 else maps[:1]  # the words, without <|startoftext|> and <|endoftext|>
        vmax = max(float(words.max()), float(heat.max()), 1e-6)
        pic = overlay(traj.decode([k])[0], heat, vmax=vmax, vmin=0.0)
        self.attention.value = encode_image(_resize(pic, ds))
        over = (f"softmax over all {traj.tokens.max_length} text positions, padding included"
                if traj.info.get("denoiser") == "unet" else "softmax over the text keys")
        self.attention_scale.value = (
            f"<small>share of each pixel's attention that goes to this word ({over}, mean of the "
            f"cross-attention layers and heads, step {k + 1}): 0 (left) … {vmax:.3f} "
            "(right), the largest value of any word of the prompt at this step, so the words can be "
            "compared</small>"
        )


class ReverseChainCompare(W.HBox):
    """Two reverse-chain explorers side by side on one pipeline, their step sliders linked.

    Give each side its own settings (different scheduler, guidance, seed or prompt), e.g.
    ``ReverseChainCompare(pipe, left=dict(scheduler="ddim"), right=dict(scheduler="euler"))``.
    """

    def __init__(self, pipe: Any = None, *, left: dict | None = None, right: dict | None = None, **common: Any):
        import inspect

        allowed = set(inspect.signature(ReverseChainExplorer.__init__).parameters) - {"self", "pipe"}
        for name, settings in (("common settings", common), ("left", left or {}), ("right", right or {})):
            if not isinstance(settings, dict):
                raise InputError(f"{name}={settings!r} is not a dict; fix: pass e.g. {name}=dict(scheduler='ddim')")
            unknown = sorted(set(settings) - allowed)
            if unknown:
                raise InputError(f"{name} has the unknown setting {unknown[0]!r}; fix: use any of {sorted(allowed)}")
        if pipe is None or isinstance(pipe, (str, os.PathLike)):  # one pipeline, shared by both sides
            from ..pipeline import load_pipeline

            pipe = load_pipeline("tiny" if pipe is None else pipe)
        self.left = ReverseChainExplorer(pipe, **{**common, **(left or {})})
        self.right = ReverseChainExplorer(pipe, **{**common, **(right or {})})
        self._link = W.jslink((self.left.step, "value"), (self.right.step, "value"))
        super().__init__([self.left, self.right])

    def run(self, *, wait: bool = False) -> None:
        """Run both sides (one after the other when *wait*, else both in the background)."""
        self.left.run(wait=wait)
        self.right.run(wait=wait)

    @property
    def running(self) -> bool:
        """Whether either side's background run is going."""
        return self.left.running or self.right.running

    def cancel(self) -> None:
        """Stop both sides' background runs after the U-Net call in flight."""
        self.left.cancel()
        self.right.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both sides' runs have ended (Ctrl-C cancels both, as in :meth:`ReverseChainExplorer.wait`)."""
        try:
            return self.left.wait(timeout) and self.right.wait(timeout)
        except KeyboardInterrupt:
            self.cancel()
            self.left.wait()
            self.right.wait()
            raise

    def close(self) -> None:
        if "error" not in self.__dict__:  # a constructor that failed: nothing was built (see Explorer.close)
            return
        self._link.close()
        self.left.close()
        self.right.close()
        super().close()


_SCHEDULER_ALIASES = {cls: short for short, cls in SCHEDULERS.items()}  # "DDIMScheduler" → "ddim"


def _short_name(scheduler: Any) -> str:
    name = scheduler_name(scheduler)
    return name if name in SCHEDULERS else "ddim"


def _step_table(traj: Trajectory, k: int) -> str:
    rec = traj[k]
    rows = [("step", f"{k + 1} of {len(traj)} ({rec.stage})"), ("timestep t", f"{rec.timestep:g}"),
            ("σ_t", f"{rec.sigma:.4f}"), ("ᾱ_t", f"{rec.alpha_bar:.4f}"),
            ("guidance w", f"{rec.guidance_scale:g}")]
    rows += [(_stat_label(name, rec.prediction_symbol), f"{value:.4f}") for name, value in rec.stats.items()]
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table style='font-size:small'>{body}</table>"


def _stat_label(name: str, symbol: str) -> str:
    """A readable row label for one of :attr:`StepRecord.stats`, in the model's own symbol (ε̂ or v̂)."""
    labels = {
        "x_t": "rms of x_t",
        "x_t_vp": "rms of x_t on the variance-preserving scale",
        "eps_text": f"rms of {symbol}_c (with text)",
        "eps_uncond": f"rms of {symbol}_u (no text)",
        "eps": f"rms of {symbol} guided",
        "guidance": f"rms of {symbol}_c − {symbol}_u",
        "cos_eps_text_uncond": f"cosine of {symbol}_c and {symbol}_u",
        "x0_hat": "rms of x̂₀ (latents)",
        "x0_hat_change": "rms of x̂₀'s change since the last step",
        "x_prev": "rms of the next latents",
    }
    return labels.get(name, f"rms of {name}")
