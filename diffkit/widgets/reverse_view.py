"""What the reverse-chain explorer shows: its layout and one record of the trajectory in every panel.

:class:`ReverseChainView` is the showing half of :class:`~diffkit.widgets.reverse_chain.ReverseChainExplorer`
(the other half makes and runs the chain); it uses the explorer's widgets.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from ..errors import InputError
from ..reverse import ReverseChain
from ._common import encode_image, guarded
from .reverse_panels import (
    NOISE_PANELS,
    attention_panel,
    calls_done,
    decode_ms,
    image_titles,
    noise_titles,
    resize,
    step_table,
)

__all__ = ["EXACT_BUDGET_MS", "MIN_DISPLAY", "ReverseChainView"]

#: The slider budget (ms) under which the explorer shows exact VAE decodes by default.
EXACT_BUDGET_MS = 50.0
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
            done = f"done: {n} {calls}"
        elif self._cancelled:
            done = f"cancelled after {n} of {len(chain)} {calls}"
        else:
            done = f"stepping by hand: {n} of {len(chain)} {calls}"
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
    def _on_step(self, change: Any = None) -> None:
        if self.trajectory is not None and len(self.trajectory):
            self.render(int(self.step.value))

    def _set_noise_titles(self, prediction_type: str) -> None:
        for title, text in zip(self._noise_titles, noise_titles(prediction_type)):
            title.value = text

    def render(self, k: int) -> None:
        """Show record *k* of the current trajectory in every panel."""
        traj = self.trajectory
        if traj is None or not len(traj):
            raise InputError("nothing to show yet; fix: press Run (or call .run()) first")
        rec = traj[k]
        for title, text in zip(self._noise_titles, noise_titles(rec.prediction_type, rec.guidance)):
            title.value = text
        ds = self.display_size or max(MIN_DISPLAY, int(traj.info["height"]), int(traj.info["width"]))
        half = (max(ds // 2, 32),) * 2
        if self._exact_auto:  # decide once, on the first picture: exact when it fits the budget
            ms = decode_ms(traj, k)
            self._exact_auto = False
            self.exact.value = ms <= EXACT_BUDGET_MS  # re-renders through the observer if it changes
            self.exact.description = f"exact (VAE decode, {ms:.0f} ms)"
        self._size_panels(ds)
        self._set_image_titles()
        mode = "exact" if self.exact.value else "fast"  # the VAE decode is cached per step
        self.x_t.value = encode_image(resize(traj.preview(k, "x_t", mode), ds))
        self.x0.value = encode_image(resize(traj.preview(k, "x0_hat", mode), ds))
        for img, (q, _) in zip(self.noise, NOISE_PANELS):
            if rec.noise_pred_uncond is None and q in ("eps_uncond", "guidance"):
                img.value = b""  # guidance ≤ 1: no unconditional branch was run
                img.layout.visibility = "hidden"
                continue
            img.layout.visibility = "visible"
            img.value = encode_image(traj.preview(k, q, "fast", size=half))
        if self.token.value is not None and rec.attention:
            pic, self.attention_scale.value = attention_panel(traj, k, int(self.token.value))
            self.attention.value = encode_image(resize(pic, ds))
        self.table.value = step_table(traj, k)

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
        rgb = self.trajectory.latent_rgb if not self.exact.value and self.trajectory is not None else None
        self._x_t_title.value, self._x0_title.value = image_titles(bool(self.exact.value), rgb)
