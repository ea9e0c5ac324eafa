"""ScheduleExplorer: compare noise schedules, and see the same image noised under each."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image, ImageDraw

from ..checks import check_choice, check_int, check_seed
from ..errors import InputError
from ..forward import q_sample, to_model_range
from ..i18n import N_
from ..i18n import gettext as _
from ..images import MODEL_RANGE, to_uint8
from ..plots import plot_schedules
from ..samples import sample_image
from ..schedules import SCHEDULE_NAMES, NoiseSchedule, get_schedule
from ._common import Explorer, encode_image, guarded

__all__ = ["ScheduleExplorer"]

_TAKES_BETA_RANGE = ("linear", "scaled_linear", "sigmoid")


class ScheduleExplorer(Explorer):
    """Pick schedules, T and the β range; a t slider noises one image under each schedule.

    Readouts give ᾱ_t (the signal's share of x_t's variance), and √ᾱ_t and √(1 − ᾱ_t), the
    scales of x_0 and ε in x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε (amplitudes, not shares).

    Parameters
    ----------
    image
        A PIL image, array or tensor (see :func:`diffkit.to_model_range`); default a bundled photo.
    schedules
        Names from :data:`diffkit.SCHEDULE_NAMES` shown at first.
    image_size
        Side of the square the image is resized to when it comes from :func:`sample_image`.
    """

    def __init__(
        self,
        image: Any = None,
        *,
        schedules: Sequence[str] = ("linear", "scaled_linear", "cosine"),
        num_train_timesteps: int = 1000,
        image_size: int = 128,
        seed: int = 0,
    ) -> None:
        image_size = check_int("image_size", image_size, lo=8, hi=1024, hint=N_("128 is the default"))
        num_train_timesteps = check_int(
            "num_train_timesteps", num_train_timesteps, lo=10, hi=4000, hint=N_("1000 is what Stable Diffusion uses")
        )
        seed = check_seed(seed)
        if isinstance(schedules, str) or not all(isinstance(n, str) for n in schedules):
            raise InputError(
                _("schedules={schedules!r} is not a list of names; fix: pass e.g. ('linear', 'cosine')").format(
                    schedules=schedules
                )
            )
        for n in schedules:
            check_choice("schedules", n, SCHEDULE_NAMES)
        self.x0 = to_model_range(image if image is not None else sample_image("astronaut", image_size))
        if self.x0.ndim != 3:
            raise InputError(_("ScheduleExplorer shows one image, not a batch"))
        self.noise = torch.randn(self.x0.shape, generator=torch.Generator().manual_seed(seed))
        self.schedule_select = W.SelectMultiple(
            options=list(SCHEDULE_NAMES),
            value=tuple(schedules),
            rows=len(SCHEDULE_NAMES),
            description=_("schedules"),
        )
        self.T = W.BoundedIntText(value=num_train_timesteps, min=10, max=4000, description="T")
        self.beta_start = W.FloatLogSlider(
            value=1e-4, base=10, min=-5, max=-1, step=0.05, description="β_start", readout_format=".1e"
        )
        self.beta_end = W.FloatLogSlider(
            value=0.02, base=10, min=-4, max=-0.3, step=0.05, description="β_end", readout_format=".1e"
        )
        self.use_defaults = W.Checkbox(value=True, description=_("each schedule's own β range"))
        self.t = W.IntSlider(
            value=num_train_timesteps // 4,
            min=0,
            max=num_train_timesteps - 1,
            description="t",
            continuous_update=True,
            layout=W.Layout(width="420px"),
        )
        self.t.add_class("diffkit-t")  # a handle for browser tests and custom CSS
        self.play = W.Play(min=0, max=num_train_timesteps - 1, step=10, interval=60)
        self.link((self.play, "value"), (self.t, "value"))
        self.plot = W.Image(format="png")
        self.images = W.HBox()
        self.readout = W.HTML()
        self.schedules: list[NoiseSchedule] = []
        self._base: np.ndarray | None = None
        self._axes_x: list[tuple[Any, float, float]] = []
        controls = W.HBox([self.schedule_select, W.VBox([self.T, self.use_defaults, self.beta_start, self.beta_end])])
        super().__init__([controls, self.plot, W.HBox([self.play, self.t]), self.images, self.readout])
        for w in (self.schedule_select, self.T, self.beta_start, self.beta_end, self.use_defaults):
            w.observe(self._on_schedules, names="value")
        self.t.observe(self._on_t, names="value")
        self._on_schedules()

    # -- computing ---------------------------------------------------------------------
    def _build(self, name: str) -> NoiseSchedule:
        kw: dict[str, float] = {}
        if not self.use_defaults.value and name in _TAKES_BETA_RANGE:
            kw = {"beta_start": self.beta_start.value, "beta_end": self.beta_end.value}
        return get_schedule(name, int(self.T.value), **kw)

    @guarded
    def _on_schedules(self, change: Any = None) -> None:
        names = list(self.schedule_select.value)
        if not names:
            raise InputError(_("pick at least one schedule (hold Ctrl or Shift to pick several)"))
        self.schedules = [self._build(n) for n in names]
        T = int(self.T.value)
        self.t.max = self.play.max = T - 1
        fig = plot_schedules(self.schedules, figsize=(10.5, 2.8))
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        self._base = np.asarray(canvas.buffer_rgba())[..., :3].copy()
        height = self._base.shape[0]
        # where t falls on each panel, in image pixels (matplotlib's origin is bottom-left)
        self._axes_x = []
        for ax in fig.axes:  # keep numbers only, so the figure can be freed
            bb = ax.get_window_extent()
            lo, hi = ax.get_xlim()
            self._axes_x.append((bb.x0, bb.x1, lo, hi, height - bb.y1, height - bb.y0))
        fig.clear()
        self.images.children = [
            W.VBox(
                [W.Image(format="jpeg", layout=W.Layout(width="160px")), W.HTML()],
                layout=W.Layout(align_items="center"),
            )
            for _ in self.schedules
        ]
        self._on_t()

    def frame(self, schedule: NoiseSchedule, t: int) -> torch.Tensor:
        """The image at step t under *schedule* (one fixed ε for every schedule and t)."""
        return q_sample(self.x0, t, schedule, noise=self.noise)

    def values_at(self, t: int) -> list[dict[str, float]]:
        """The readout numbers, straight from each schedule's arrays."""
        return [
            {
                "schedule": s.name,
                "alpha_bar": float(s.alphas_cumprod[t]),
                "signal": float(s.sqrt_alphas_cumprod[t]),
                "noise": float(s.sqrt_one_minus_alphas_cumprod[t]),
                "log_snr": float(s.log_snr[t]),
            }
            for s in self.schedules
        ]

    @guarded
    def _on_t(self, change: Any = None) -> None:
        t = int(self.t.value)
        if self._base is not None:
            img = Image.fromarray(self._base)
            d = ImageDraw.Draw(img)
            for px0, px1, lo, hi, top, bottom in self._axes_x:
                x = px0 + (t - lo) / (hi - lo) * (px1 - px0)
                d.line([(x, top), (x, bottom)], fill=(0, 0, 0), width=1)
            self.plot.value = encode_image(np.asarray(img), "png")
        rows = self.values_at(t)
        for box, s, row in zip(self.images.children, self.schedules, rows):
            box.children[0].value = encode_image(to_uint8(self.frame(s, t), value_range=MODEL_RANGE))
            name, signal, noise = html.escape(s.name), row["signal"], row["noise"]
            box.children[1].value = f"<small><b>{name}</b><br>√ᾱ = {signal:.3f} · √(1−ᾱ) = {noise:.3f}</small>"
        body = "".join(
            f"<tr><td>{html.escape(r['schedule'])}</td><td>{r['alpha_bar']:.4f}</td><td>{r['signal']:.4f}</td>"
            f"<td>{r['noise']:.4f}</td><td>{r['log_snr']:.2f}</td></tr>"
            for r in rows
        )
        heads = (
            f"t = {t}",
            _("ᾱ_t (signal's share of the variance)"),
            _("√ᾱ_t (scale of x₀ in x_t)"),
            _("√(1−ᾱ_t) (scale of ε in x_t)"),
            "log SNR",
        )
        head = "".join(f"<th>{html.escape(h, quote=False)}</th>" for h in heads)
        self.readout.value = f"<table><tr>{head}</tr>{body}</table>"
