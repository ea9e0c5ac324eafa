"""TwoPixelExplorer: the seed article's picture of diffusion as a point wandering in the plane."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from ..checks import check_choice, check_int, check_seed
from ..errors import InputError
from ..forward import q_step
from ..i18n import N_
from ..i18n import gettext as _
from ..schedules import SCHEDULE_NAMES, NoiseSchedule, get_schedule
from ..toy import TWO_PIXEL_IMAGE, TwoPixelChains, step_density, two_pixel_chains, two_pixel_reverse
from ._common import Explorer, figure_png, guarded

__all__ = ["TwoPixelExplorer", "parse_points"]

_DEFAULT_DATA = ((170, 150), (60, 200), (210, 40))


def parse_points(text: str) -> list[tuple[float, float]]:
    """Parse ``"170,150; 60,200"`` into two-pixel images (values 0–255)."""
    pts = []
    for chunk in text.replace("\n", ";").split(";"):
        if not chunk.strip():
            continue
        try:
            a, b = (float(v) for v in chunk.replace("(", "").replace(")", "").split(","))
        except ValueError:
            raise InputError(
                _("could not read {text!r}; write points as 170,150; 60,200").format(text=chunk.strip())
            ) from None
        if not (0 <= a <= 255 and 0 <= b <= 255):
            raise InputError(_("pixel values must lie in [0, 255], got ({a:g}, {b:g})").format(a=a, b=b))
        pts.append((a, b))
    if not pts:
        raise InputError(_("give at least one two-pixel image, e.g. 170,150"))
    return pts


def _check_pixels(pixels: Any, *, name: str = "pixels") -> tuple[float, float]:
    """Two finite values in [0, 255] (a two-pixel image), else :class:`~diffkit.errors.InputError`."""
    try:
        values = tuple(float(p) for p in pixels)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 2 or not all(np.isfinite(v) and 0 <= v <= 255 for v in values):
        raise InputError(
            _(
                "{name} holds {pixels!r}, not a two-pixel image; fix: pass two values in [0, 255], e.g. (170, 150)"
            ).format(name=name, pixels=pixels)
        )
    return values


MAX_DATA = 1000
"""The most two-pixel "training images" the explorer takes: the exact denoiser weighs every one
at every step of every chain (1,000 points run backwards in a few seconds)."""


def _check_data(data: Any) -> list[tuple[float, float]]:
    """A list of two-pixel images (any sequence or an ``(N, 2)`` array), each checked."""
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__") or not hasattr(data, "__iter__"):
        raise InputError(
            _("data={data!r} is not a list of two-pixel images; fix: pass e.g. data=[(170, 150), (60, 200)]").format(
                data=data
            )
        )
    if len(data) == 0:
        raise InputError(_("data holds no two-pixel image; fix: pass at least one, e.g. data=[(170, 150)]"))
    if len(data) > MAX_DATA:
        raise InputError(
            _(
                "data holds {n:,} two-pixel images, more than the {most:,} the exact denoiser "
                "runs backwards at a slider's pace; fix: pass a sample of them, e.g. data[:1000]"
            ).format(n=len(data), most=MAX_DATA)
        )
    return [_check_pixels(point, name="data") for point in data]


def _check_schedule(schedule: str | NoiseSchedule) -> NoiseSchedule:
    if isinstance(schedule, str):
        return get_schedule(check_choice("schedule", schedule, SCHEDULE_NAMES))
    if not isinstance(schedule, NoiseSchedule):
        raise InputError(
            _("schedule={schedule!r} is not a schedule; fix: pass a name from {names} or a NoiseSchedule").format(
                schedule=schedule, names=list(SCHEDULE_NAMES)
            )
        )
    return schedule


class TwoPixelExplorer(Explorer):
    """A two-pixel image (170, 150) is a point in the plane.

    *One step*: the next point is drawn from a Gaussian bell around it (its width is a control);
    likely draws (within 2σ) are green, unlikely ones red. *Many chains*: 1,000 steps of the
    linear schedule take every chain to N(0, I). *Backwards*: for a few two-pixel "training
    images" the exact optimal denoiser runs the reverse chain and the points flow back to the data,
    which is what a U-Net is trained to approximate.
    """

    def __init__(
        self,
        pixels: Sequence[float] = TWO_PIXEL_IMAGE,
        *,
        data: Sequence[Sequence[float]] = _DEFAULT_DATA,
        schedule: str | NoiseSchedule = "linear",
        n_chains: int = 300,
        seed: int = 0,
    ) -> None:
        self.pixels = _check_pixels(pixels)
        data = _check_data(data)
        self.schedule = schedule = _check_schedule(schedule)
        n_chains = check_int("n_chains", n_chains, lo=1, hi=5000, hint=N_("300 is the default"))
        self.seed = seed = check_seed(seed)
        self._gen = torch.Generator().manual_seed(seed)
        # -- one step
        self.width = W.FloatSlider(
            value=3.0,
            min=0.5,
            max=40.0,
            step=0.5,
            description=_("bell width (px)"),
            style={"description_width": "initial"},
        )
        self.step_button = W.Button(description=_("one step"), icon="step-forward")
        self.reset_button = W.Button(description=_("reset"), icon="undo")
        self.step_plot = W.Image(format="png")
        self.step_readout = W.HTML()
        self.path: list[np.ndarray] = [np.asarray(self.pixels)]
        self.likely: list[bool] = []
        # -- many chains
        self.n_chains = W.BoundedIntText(value=n_chains, min=1, max=5000, description=_("chains"))
        self.run_chains = W.Button(description=_("run the chains"), icon="play")
        self.chain_t = W.IntSlider(
            value=0, min=0, max=self.schedule.num_train_timesteps - 1, description="t", layout=W.Layout(width="420px")
        )
        self.chain_play = W.Play(min=0, max=self.schedule.num_train_timesteps - 1, step=10, interval=60)
        self.link((self.chain_play, "value"), (self.chain_t, "value"))
        self.chain_plot = W.Image(format="png")
        self.chains: TwoPixelChains | None = None
        # -- backwards
        self.data_text = W.Text(
            value="; ".join(f"{a:g},{b:g}" for a, b in data), description=_("data"), layout=W.Layout(width="420px")
        )
        self.eta = W.ToggleButtons(options=[(_("DDPM (random)"), 1.0), (_("DDIM (deterministic)"), 0.0)], value=1.0)
        self.run_reverse = W.Button(description=_("run backwards"), icon="backward")
        self.rev_step = W.IntSlider(
            value=0, min=0, max=self.schedule.num_train_timesteps, description=_("step"), layout=W.Layout(width="420px")
        )
        self.rev_play = W.Play(min=0, max=self.schedule.num_train_timesteps, step=10, interval=60)
        self.link((self.rev_play, "value"), (self.rev_step, "value"))
        self.rev_plot = W.Image(format="png")
        self.reverse: np.ndarray | None = None

        self.tabs = tabs = self._tabs()
        super().__init__([tabs])
        self.step_button.on_click(self._on_step)
        self.reset_button.on_click(self._on_reset)
        self.width.observe(self._draw_step, names="value")
        self.run_chains.on_click(self._on_chains)
        self.chain_t.observe(self._draw_chains, names="value")
        self.run_reverse.on_click(self._on_reverse)
        self.rev_step.observe(self._draw_reverse, names="value")
        self._draw_step()
        self._on_chains()
        self._on_reverse()

    def _tabs(self) -> W.Tab:
        """The three tabs: one step, many chains, backwards."""
        tabs = W.Tab(
            children=[
                W.VBox([W.HBox([self.width, self.step_button, self.reset_button]), self.step_plot, self.step_readout]),
                W.VBox(
                    [W.HBox([self.n_chains, self.run_chains]), W.HBox([self.chain_play, self.chain_t]), self.chain_plot]
                ),
                W.VBox(
                    [
                        self.data_text,
                        W.HBox([self.eta, self.run_reverse]),
                        W.HBox([self.rev_play, self.rev_step]),
                        self.rev_plot,
                    ]
                ),
            ]
        )
        for i, title in enumerate([_("one step"), _("many chains"), _("backwards")]):
            tabs.set_title(i, title)
        return tabs

    # -- one step ------------------------------------------------------------------------
    def step_schedule(self) -> NoiseSchedule:
        """A constant-β schedule whose one-step bell has the chosen width (in pixel units)."""
        beta = min((self.width.value / 127.5) ** 2, 0.999)
        return NoiseSchedule.from_betas(np.full(2, beta), name=f"constant β={beta:.2e}")

    @guarded
    def _on_step(self, button: Any = None) -> None:
        s = self.step_schedule()
        x = torch.as_tensor(self.path[-1] / 127.5 - 1.0)
        nxt = q_step(x, 0, s, seed=self._gen)
        mean, sd = step_density(x.numpy(), 0, s)
        z = float(np.linalg.norm((nxt.numpy() - mean) / sd))
        self.likely.append(z < 2.0)
        self.path.append(TwoPixelChains.to_pixels(nxt.numpy()))
        self._draw_step()

    @guarded
    def _on_reset(self, button: Any = None) -> None:
        self.path = [np.asarray(self.pixels)]
        self.likely = []
        self._draw_step()

    @guarded
    def _draw_step(self, change: Any = None) -> None:
        s = self.step_schedule()
        cur = self.path[-1]
        mean, sd = step_density(cur / 127.5 - 1.0, 0, s)
        mean_px, sd_px = TwoPixelChains.to_pixels(mean), sd * 127.5
        fig = Figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.subplots()
        for k in (1, 2, 3):
            ax.add_patch(Circle(tuple(mean_px), k * sd_px, color="tab:blue", alpha=0.22 / k, lw=0))
        path = np.asarray(self.path)
        ax.plot(path[:, 0], path[:, 1], "-", color="0.6", lw=0.8)
        for p, ok in zip(path[1:], self.likely):
            ax.plot(*p, "o", color="tab:green" if ok else "tab:red", ms=5)
        ax.plot(*path[0], "k*", ms=12)
        span = max(4 * sd_px, 10, np.abs(path - path[0]).max() * 1.2)
        ax.set_xlim(path[0][0] - span, path[0][0] + span)
        ax.set_ylim(path[0][1] - span, path[0][1] + span)
        ax.set_aspect("equal")
        ax.set_xlabel(_("pixel 1"))
        ax.set_ylabel(_("pixel 2"))
        ax.set_title(_("next point ~ N(√α·x, β·I): green likely (< 2σ), red unlikely"), fontsize=8)
        self.step_plot.value = figure_png(fig)
        readout = _(
            "now at ({x:.1f}, {y:.1f}) after {n} step(s); "
            "bell centre ({cx:.1f}, {cy:.1f}), width √β = {width:.2f} px (β = {beta:.2e})"
        ).format(x=cur[0], y=cur[1], n=len(self.path) - 1, cx=mean_px[0], cy=mean_px[1], width=sd_px, beta=s.betas[0])
        self.step_readout.value = f"<small>{readout}</small>"

    # -- many chains -------------------------------------------------------------------
    @guarded
    def _on_chains(self, button: Any = None) -> None:
        self.chains = two_pixel_chains(self.pixels, self.schedule, n_chains=int(self.n_chains.value), seed=self.seed)
        self._draw_chains()

    @guarded
    def _draw_chains(self, change: Any = None) -> None:
        if self.chains is None:
            return
        t = int(self.chain_t.value)
        pts = TwoPixelChains.to_pixels(self.chains.at(t))
        fig = Figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.subplots()
        g = np.linspace(0, 2 * np.pi, 200)
        ax.plot(127.5 + 255 * np.cos(g), 127.5 + 255 * np.sin(g), "k--", lw=0.8, label="N(0, I), 2σ")
        ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.6, label=_("{n} chains at t={t}").format(n=len(pts), t=t))
        ax.plot(*self.pixels, "k*", ms=12)
        _finish_plane(ax)
        ab = self.schedule.alphas_cumprod[t]
        title = _("ᾱ_t = {alpha_bar:.4f}: centre {centre:.3f}·x₀, width {width:.3f}")
        ax.set_title(title.format(alpha_bar=ab, centre=ab**0.5, width=(1 - ab) ** 0.5), fontsize=8)
        self.chain_plot.value = figure_png(fig)

    # -- backwards ---------------------------------------------------------------------
    @guarded
    def _on_reverse(self, button: Any = None) -> None:
        self.data = parse_points(self.data_text.value)
        self.reverse = two_pixel_reverse(
            self.data, self.schedule, n_chains=int(self.n_chains.value), seed=self.seed, eta=float(self.eta.value)
        )
        self._draw_reverse()

    @guarded
    def _draw_reverse(self, change: Any = None) -> None:
        if self.reverse is None:
            return
        k = int(self.rev_step.value)
        T = self.schedule.num_train_timesteps
        pts = TwoPixelChains.to_pixels(self.reverse[k])
        fig = Figure(figsize=(4.6, 4.2), layout="constrained")
        ax = fig.subplots()
        d = np.asarray(self.data)
        ax.plot(d[:, 0], d[:, 1], "*", ms=16, mfc="none", mec="k", label=_("training images"), zorder=1)
        ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.6, color="tab:purple", zorder=2)
        _finish_plane(ax)
        # row k holds x_t for t = T − 1 − k; the last row is the clean x_0 the chain ends on
        if k == T:
            t_label = _("x₀, the end")
        elif k == 0:
            t_label = _("x_t, t = {t} (pure noise)").format(t=T - 1 - k)
        else:
            t_label = f"x_t, t = {T - 1 - k}"
        title = _("reverse step {k}/{T} ({where}) with the exact optimal denoiser")
        ax.set_title(title.format(k=k, T=T, where=t_label), fontsize=8)
        self.rev_plot.value = figure_png(fig)


def _finish_plane(ax) -> None:
    """The view of the plane shared by the chain plots: wide enough for N(0, I) in pixel units."""
    ax.set_xlim(-300, 560)
    ax.set_ylim(-300, 560)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", fontsize=7)
