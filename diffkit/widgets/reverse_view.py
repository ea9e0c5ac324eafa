"""What the reverse-chain explorer shows: its layout and one record of the trajectory in every panel.

:class:`ReverseChainView` is the showing half of :class:`~diffkit.widgets.reverse_chain.ReverseChainExplorer`
(the other half makes and runs the chain); it uses the explorer's widgets. x_t and x̂_0 are
shown as the VAE's exact decodes, made in the background by a
:class:`~diffkit.widgets.reverse_decoder.StepDecoder` once a run has ended (the fast preview
stands in until a step is decoded), encoded once as PNG, so a slider move only sends bytes.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..errors import InputError
from ..i18n import get_language
from ..i18n import gettext as _
from ..reverse import ReverseChain
from ._common import encode_image, guarded
from .reverse_decoder import DECODED, StepDecoder, undecoded
from .reverse_panels import (
    NOISE_PANELS,
    attention_panel,
    calls_done,
    image_titles,
    noise_titles,
    resize,
    step_table,
)

__all__ = ["MIN_DISPLAY", "ReverseChainView"]

#: The smallest side, in screen pixels, of the x_t and x̂_0 panels (a classroom projector).
MIN_DISPLAY = 256


class ReverseChainView:
    """The showing half of the reverse-chain explorer (a mixin: the explorer builds its widgets)."""

    def _layout(self) -> list[W.Widget]:
        def panel(img: W.Image, title: W.HTML) -> W.VBox:
            return W.VBox([title, img], layout=W.Layout(align_items="center"))

        return [
            W.VBox([self.prompt, self.negative]),
            W.HBox([self.seed, self.steps, self.guidance]),
            W.HBox([self.scheduler, self.size, self.capture]),
            W.HBox([self.run_button, self.cancel_button, self.progress, self.status]),
            W.HBox([self.play, self.step, self.next_button, self.exact]),
            W.HBox(
                [
                    panel(self.x_t, self._x_t_title),
                    panel(self.x0, self._x0_title),
                    W.VBox([self.token, self.attention, self.colorbar, self.attention_scale]),
                ],
                layout=W.Layout(flex_flow="row wrap"),
            ),
            W.HBox(
                [panel(img, title) for img, title in zip(self.noise, self._noise_titles)],
                layout=W.Layout(flex_flow="row wrap"),
            ),
            self.table,
        ]

    def _show_trajectory(self, chain: ReverseChain) -> None:
        traj = chain.trajectory
        n = len(traj)
        calls = calls_done(traj)  # "U-Net calls", or a transformer's steps
        if chain.done:
            done = _("done: {n} {calls}").format(n=n, calls=calls)
        elif self._cancelled:
            done = _("cancelled after {n} of {total} {calls}").format(n=n, total=len(chain), calls=calls)
        else:
            done = _("stepping by hand: {n} of {total} {calls}").format(n=n, total=len(chain), calls=calls)
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
            self._own_move = True
            try:
                self.step.value = n - 1  # renders
            finally:
                self._own_move = False
        else:
            self.render(n - 1)

    @guarded
    def _on_step(self, change: Any = None) -> None:
        if self.trajectory is not None and len(self.trajectory):
            self.render(int(self.step.value))
            if not self._own_move:  # the user moved on: decoding held by Cancel resumes
                self._held = False
                self._start_decoding()

    @guarded
    def _on_exact(self, change: Any = None) -> None:
        """The checkbox: ticked, decode in the background and show the decodes; unticked, stop
        decoding and show the fast preview."""
        if self.exact.value:
            self._held = False
            self._start_decoding()
        else:
            self._stop_decoding(wait=False)
        if self.trajectory is not None and len(self.trajectory):
            self._show_pictures(int(self.step.value))
        else:
            self._set_image_titles()

    def _set_noise_titles(self, prediction_type: str) -> None:
        for title, text in zip(self._noise_titles, noise_titles(prediction_type)):
            title.value = text

    def render(self, k: int) -> None:
        """Show record *k* of the current trajectory in every panel."""
        traj = self.trajectory
        if traj is None or not len(traj):
            raise InputError(_("nothing to show yet; fix: press Run (or call .run()) first"))
        rec = traj[k]
        for title, text in zip(self._noise_titles, noise_titles(rec.prediction_type, rec.guidance)):
            title.value = text
        self._size_panels(self._side(traj))
        self._show_pictures(k)
        noise, attention, table = self._step_panels(traj, k, self.token.value)
        for img, data in zip(self.noise, noise):
            img.layout.visibility = "visible" if data else "hidden"  # guidance ≤ 1: no unconditional branch
            img.value = data
        if attention is not None:
            self.attention.value, self.attention_scale.value = attention
        self.table.value = table

    def _step_panels(self, traj: Any, k: int, token: int | None) -> tuple[list[bytes], Any, str]:
        """Step *k*'s noise panels, the attention of the word at *token* (picture and scale, or None)
        and the table, made once per step and word (the decoder makes them ahead of the slider)."""
        key = (id(traj), k, "panels", token)
        panels = self._pictures.get(key)
        if panels is None:
            rec, ds = traj[k], self._side(traj)
            half = (max(ds // 2, 32),) * 2
            noise = [
                b""
                if rec.noise_pred_uncond is None and q in ("eps_uncond", "guidance")
                else encode_image(traj.preview(k, q, "fast", size=half))
                for q, _ in NOISE_PANELS
            ]
            attention = None
            if token is not None and rec.attention:
                pic, scale = attention_panel(traj, k, int(token))
                attention = (encode_image(resize(pic, ds)), scale)
            panels = self._pictures[key] = (noise, attention, step_table(traj, k))
        return panels

    def _size_panels(self, ds: int) -> None:
        """Fix each panel's on-screen size (a flex row must not shrink a picture to fit)."""
        half = max(ds // 2, 32)
        for img, side in ((self.x_t, ds), (self.x0, ds), (self.attention, ds), *((n, half) for n in self.noise)):
            img.layout.width = img.layout.height = img.layout.min_width = f"{side}px"
        for box in (self._x_t_title, self._x0_title, self.colorbar, self.attention_scale):
            box.layout.width = f"{ds}px"
        # equal heights keep the two pictures level: three lines hold the longest English title, Spanish needs four
        height = "4.5em" if get_language() == "en" else "5.5em"
        for title in (self._x_t_title, self._x0_title):
            title.layout.height = height
        self.colorbar.layout.height = "12px"

    def _side(self, traj: Any) -> int:
        """The x_t and x̂_0 panels' side in screen pixels."""
        return self.display_size or max(MIN_DISPLAY, int(traj.info["height"]), int(traj.info["width"]))

    def _set_image_titles(self, shown: str | None = None) -> None:
        """The x_t and x̂_0 titles: *shown* is what the panels show (default: what they showed last)."""
        self._shown = shown = shown or self._shown
        if shown == "exact" or not self.exact.value:
            shown = shown if self.exact.value else "fast"
            note = ""
        else:
            note = self._progress()
        rgb = self.trajectory.latent_rgb if shown != "exact" and self.trajectory is not None else None
        self._x_t_title.value, self._x0_title.value = image_titles(shown, rgb, note)

    # -- exact pictures, decoded in the background ---------------------------------------
    def _show_pictures(self, k: int) -> None:
        """x_t and x̂_0 of step *k*: the exact decodes once decoded (unless the checkbox is off),
        else the fast preview; and titles that say which. Any thread (the slider, the decoder)."""
        traj = self.trajectory
        with self._view_lock:
            if traj is None or not 0 <= k < len(traj):
                return
            exact = [self._exact_picture(traj, k, q) for q in DECODED] if self.exact.value else [None]
            if all(exact):
                pictures, fmt = exact, "png"
            else:
                ds = self._side(traj)
                pictures, fmt = [encode_image(resize(traj.preview(k, q, "fast"), ds)) for q in DECODED], "jpeg"
            for img, data in zip((self.x_t, self.x0), pictures):
                with img.hold_sync():
                    img.format, img.value = fmt, data
            self._set_image_titles("exact" if fmt == "png" else "pending")

    def _exact_picture(self, traj: Any, k: int, quantity: str) -> bytes | None:
        """Step *k*'s exact decode of *quantity* as PNG bytes at the panel's size (encoded once),
        or None while it is not decoded."""
        key = (id(traj), k, quantity)
        data = self._pictures.get(key)
        if data is None and traj.decoded(k, quantity):
            data = encode_image(resize(traj.preview(k, quantity, "exact"), self._side(traj)), "png")
            self._pictures[key] = data
        return data

    def _progress(self) -> str:
        """Where the background decoding is, for the fast preview's title."""
        traj, d = self.trajectory, self._decoder
        if traj is None or not len(traj):
            return ""
        done = len(traj) - len(undecoded(traj))
        if d is not None and d.running and not d.stopping and d.trajectory is traj:
            return _("decoding: {done} of {n} steps done").format(done=done, n=len(traj))
        if self.running:
            return _("decoded after the run")
        return _("decoding paused ({done} of {n}): move the slider").format(done=done, n=len(traj))

    def _start_decoding(self, *, run_over: bool = False) -> None:
        """Decode every recorded step in the background, unless it is all done, the checkbox is off,
        a run is going (its chain computes alone; *run_over*: the run's own end calls), or Cancel held it."""
        traj = self.trajectory
        if traj is None or not len(traj) or not self.exact.value or (self.running and not run_over) or self._held:
            return
        if self._decoder is not None and self._decoder.running and self._decoder.trajectory is traj:
            return
        if not undecoded(traj):
            return
        self._stop_decoding()
        self._decoder = StepDecoder(
            traj, shown=lambda: self.step.value, on_decoded=self._step_decoded, on_error=self._decoding_failed
        )
        self._decoder.start()
        self._refresh_pending_title()  # the fast preview's title says the decoding runs

    def _stop_decoding(self, *, wait: bool = True) -> None:
        """Stop the background decoding after the decode in flight (and wait for that, by default)."""
        if self._decoder is None or not self._decoder.running:
            return
        if wait:
            self._decoder.stop()
        else:
            self._decoder.cancel()
        self._refresh_pending_title()  # the fast preview's title says the decoding paused

    def _step_decoded(self, k: int) -> None:
        """The decoder's callback (its thread): encode step *k*'s pictures once, show them if the
        slider is there, else bring the progress in the titles up to date."""
        traj = self.trajectory
        if traj is None:
            return
        for q in DECODED:
            self._exact_picture(traj, k, q)
        self._step_panels(traj, k, self.token.value)  # so that a move of the slider only sends bytes
        d = self._decoder
        ms = d.ms_per_step if d is not None else None
        self.exact.description = (
            _("exact (VAE decode)") if ms is None else _("exact (VAE decode, {ms:.0f} ms a step)").format(ms=ms)
        )
        with self._view_lock:
            if int(self.step.value) == k:
                self._show_pictures(k)
            elif self._shown != "exact":
                self._set_image_titles()

    def _decoding_failed(self, error: BaseException) -> None:
        """The decoder's callback when a decode failed (its thread): the error, in the widget."""
        self.error.show(error)
        if self._decoder is not None:
            self._decoder.cancel()
        self._refresh_pending_title()

    def _refresh_pending_title(self) -> None:
        """Bring the fast preview's title (the decoding's progress) up to date; an exact picture's
        title says nothing of the decoding and stays."""
        with self._view_lock:
            if self._shown != "exact":
                self._set_image_titles()

    def wait_decoded(self, timeout: float | None = None) -> bool:
        """Block until the background decoding has decoded every recorded step (or stopped);
        False if *timeout* passed first."""
        d = self._decoder
        return d is None or d.wait(timeout)
