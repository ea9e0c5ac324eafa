"""Figures for the forward half of the story: schedules, forward strips, the two-pixel toy.

Every function returns a ``matplotlib.figure.Figure`` and never calls ``plt.show``;
Jupyter displays the returned figure as a PNG (the first figure built in an IPython kernel
registers the PNG formatter, see :func:`show_figures_in_notebooks`; importing this module
changes nothing), scripts ``fig.savefig(...)`` it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .errors import InputError
from .forward import q_sample_all, to_model_range
from .i18n import N_
from .i18n import gettext as _
from .schedules import NoiseSchedule, get_schedule, schedules_frame
from .toy import TWO_PIXEL_IMAGE, TwoPixelChains, two_pixel_chains


def show_figures_in_notebooks() -> bool:
    """Make Jupyter show a returned ``Figure`` as a PNG, with or without ``%matplotlib inline``.

    The figures here are built with ``matplotlib.figure.Figure`` (no pyplot, so no global state).
    IPython shows such a figure only once the inline backend registered its PNG formatter, which
    recent ipykernel/matplotlib-inline releases no longer do by default: the cell printed
    ``<Figure size 560x170 with 4 Axes>``. This registers the same formatter ``%matplotlib inline``
    does, in the running IPython shell only, once. Every plotting function of diffkit calls it
    when it builds a figure; importing a module does not. Returns whether a shell was there.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None or not hasattr(shell, "display_formatter"):
        return False
    png = shell.display_formatter.formatters["image/png"]
    if Figure not in png.type_printers:
        png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))
    return True


def _figure(**kwargs) -> Figure:
    """A new ``Figure`` that a notebook will show (see :func:`show_figures_in_notebooks`)."""
    show_figures_in_notebooks()
    return Figure(**kwargs)


__all__ = [
    "image_grid",
    "plot_forward_strip",
    "plot_gaussian_bells",
    "plot_paint_drop",
    "plot_schedules",
    "plot_two_pixel",
    "show_figures_in_notebooks",
    "strip_timesteps",
    "plot_unet_anatomy",
]

_QUANTITIES = {
    "beta": N_("β_t (noise added per step)"),
    "alpha_bar": N_("ᾱ_t (signal's share of the variance)"),
    "log_snr": "log SNR_t",
    "sqrt_alpha_bar": "√ᾱ_t",
    "sqrt_one_minus_alpha_bar": "√(1 − ᾱ_t)",
    "snr": "SNR_t",
    "sigma": "σ_t",
}


def _schedules(schedules: Iterable[NoiseSchedule | str] | NoiseSchedule | str) -> list[NoiseSchedule]:
    if isinstance(schedules, (str, NoiseSchedule)):
        schedules = [schedules]
    out = [get_schedule(s) if isinstance(s, str) else s for s in schedules]
    if not out:
        raise InputError(_("give at least one schedule, e.g. ['linear', 'cosine']"))
    return out


def plot_schedules(
    schedules: Iterable[NoiseSchedule | str] | NoiseSchedule | str = ("linear", "scaled_linear", "cosine"),
    *,
    quantities: Sequence[str] = ("beta", "alpha_bar", "log_snr"),
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """β_t, ᾱ_t and log-SNR against t for several schedules overlaid (one panel per quantity)."""
    import seaborn as sns

    bad = [q for q in quantities if q not in _QUANTITIES]
    if bad or not quantities:
        raise InputError(
            _("unknown quantities {bad}; choose from {choices}").format(bad=bad, choices=list(_QUANTITIES))
        )
    frame = schedules_frame(_schedules(schedules))
    fig = _figure(figsize=figsize or (4.2 * len(quantities), 3.4), layout="constrained")
    axes = fig.subplots(1, len(quantities), squeeze=False)[0]
    for ax, q in zip(axes, quantities):
        sns.lineplot(data=frame, x="t", y=q, hue="schedule", ax=ax, legend=ax is axes[-1])
        ax.set_title(_(_QUANTITIES[q]))
        ax.set_xlabel(_("timestep t"))
        ax.set_ylabel("")
        if q in ("beta", "snr", "sigma"):
            ax.set_yscale("log")
    if axes[-1].get_legend() is not None:
        # (not sns.move_legend: it keeps every figure it touched alive)
        handles, labels = axes[-1].get_legend_handles_labels()
        axes[-1].legend(handles, labels, title=_("schedule"), loc="upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


def strip_timesteps(num_train_timesteps: int = 1000, n: int = 10) -> list[int]:
    """Timesteps for a forward strip: every T/n steps, ending at the last (99, 199, …, 999 for T = 1000)."""
    if n < 1:
        raise InputError(_("n must be ≥ 1, got {n}").format(n=n))
    return [int(round(num_train_timesteps * (i + 1) / n)) - 1 for i in range(n)]


def plot_forward_strip(
    image: object,
    schedule: NoiseSchedule | str = "linear",
    *,
    timesteps: Sequence[int] | None = None,
    seed: int = 0,
    panel_size: float = 1.6,
) -> Figure:
    """One image at x_0 and at several timesteps of the forward chain (default: every 100 of 1,000).

    Titles give the 0-based timestep t and ᾱ_t. All frames share one ε, as :func:`q_sample_all`.
    """
    s = get_schedule(schedule) if isinstance(schedule, str) else schedule
    ts = list(timesteps) if timesteps is not None else strip_timesteps(s.num_train_timesteps)
    x0 = to_model_range(image)
    if x0.ndim != 3:
        raise InputError(_("plot_forward_strip takes one image, not a batch"))
    frames = q_sample_all(x0, s, timesteps=ts, seed=seed)
    n = len(ts) + 1
    fig = _figure(figsize=(panel_size * n, panel_size + 0.5), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, x, title in zip(
        axes,
        [x0, *frames],
        [_("x₀ (clean)")] + [f"t={t}\nᾱ={s.alphas_cumprod[t]:.3f}" for t in ts],
    ):
        ax.imshow(((x.clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    fig.suptitle(_("forward chain, {name} schedule").format(name=s.name), fontsize=10)
    return fig


def plot_two_pixel(
    chains: TwoPixelChains | None = None,
    *,
    timesteps: Sequence[int] = (0, 9, 99, 299, 999),
    show_paths: int = 3,
    pixels: Sequence[float] = TWO_PIXEL_IMAGE,
) -> Figure:
    """The two-pixel image as a point in the plane, and where many forward chains take it.

    Left: the first Markov step's Gaussian bell around the image (contours at 1, 2, 3 σ) with a
    few paths. Right: the cloud of chains at several timesteps drifting to N(0, I).
    Axes are in pixel units (0–255 maps to [−1, 1] in the model).
    """
    ch = chains if chains is not None else two_pixel_chains(pixels, n_chains=300)
    s = ch.schedule
    px = TwoPixelChains.to_pixels
    fig = _figure(figsize=(10, 4.6), layout="constrained")
    ax0, ax1 = fig.subplots(1, 2)
    start = px(ch.points[0, 0])
    sd = float(np.sqrt(s.betas[0])) * 127.5  # one-step std in pixel units
    for k in (1, 2, 3):
        ax0.add_patch(_circle(start, k * sd, alpha=0.25 / k))
    for i in range(min(show_paths, ch.points.shape[1])):
        path = px(ch.points[:60, i])
        ax0.plot(path[:, 0], path[:, 1], "-", lw=0.8, alpha=0.8)
    ax0.plot(*start, "k*", ms=12, label=f"x₀ = ({start[0]:.0f}, {start[1]:.0f})")
    ax0.set_title(
        _("one Markov step: bell of width √β₀ = {sd:.2f} px\nand the first 60 steps of {n} chains").format(
            sd=sd, n=show_paths
        )
    )
    ax0.set_xlabel(_("pixel 1"))
    ax0.set_ylabel(_("pixel 2"))
    ax0.set_aspect("equal")
    ax0.legend(loc="lower right", fontsize=8)
    cmap = __import__("matplotlib").colormaps["viridis"]
    for j, t in enumerate(timesteps):
        pts = px(ch.at(t))
        ax1.scatter(pts[:, 0], pts[:, 1], s=5, color=cmap(j / max(1, len(timesteps) - 1)), label=f"t={t}")
    g = np.linspace(0, 2 * np.pi, 200)
    # N(0, I) lives in model units; in pixel units (x_px = 127.5·(x + 1)) its centre is 127.5 and σ = 127.5
    ax1.plot(
        127.5 + 127.5 * 2 * np.cos(g),
        127.5 + 127.5 * 2 * np.sin(g),
        "k--",
        lw=0.8,
        label=_("N(0, I) in pixels: 2σ = 255 around 127.5"),
    )
    ax1.plot(*start, "k*", ms=12)
    ax1.set_title(_("{n} chains drift to N(0, I)").format(n=ch.points.shape[1]))
    ax1.set_xlabel(_("pixel 1"))
    ax1.set_ylabel(_("pixel 2"))
    ax1.set_aspect("equal")
    ax1.legend(loc="upper left", fontsize=7, markerscale=2)
    return fig


def _circle(center: np.ndarray, radius: float, alpha: float):
    from matplotlib.patches import Circle

    return Circle(tuple(center), radius, color="tab:green", alpha=alpha, lw=0)


def image_grid(
    images: Sequence[object], *, titles: Sequence[str] | None = None, ncols: int = 8, panel_size: float = 1.4
) -> Figure:
    """A grid of images (PIL, NumPy HWC uint8, or torch (3, H, W) in [−1, 1]) with optional titles."""
    if not images:
        raise InputError(_("no images to show"))
    n = len(images)
    nrows = (n + ncols - 1) // ncols
    fig = _figure(figsize=(panel_size * min(n, ncols), (panel_size + 0.3) * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, min(n, ncols), squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= n:
            continue
        img = images[i]
        if isinstance(img, torch.Tensor):
            img = ((img.detach().float().cpu().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
        ax.imshow(img)
        if titles is not None:
            ax.set_title(titles[i], fontsize=7)
    return fig


def plot_paint_drop(
    positions: np.ndarray, *, steps: Sequence[int] = (0, 10, 100, 400), step_size: float = 1.0
) -> Figure:
    """Snapshots of :func:`diffkit.toy.paint_drop`: the drop spreads, its width grows as √steps.

    Each panel draws the particles and a dashed circle of radius 2·step_size·√k (where about 86%
    of a 2-D Gaussian cloud lies).
    """
    steps = [k for k in steps if k < len(positions)]
    if not steps:
        raise InputError(_("steps must be below {n}, the length of the simulation").format(n=len(positions)))
    lim = 2.5 * step_size * np.sqrt(max(steps)) + 1
    fig = _figure(figsize=(2.6 * len(steps), 2.8), layout="constrained")
    axes = fig.subplots(1, len(steps), squeeze=False)[0]
    g = np.linspace(0, 2 * np.pi, 200)
    for ax, k in zip(axes, steps):
        p = positions[k]
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, color="tab:purple")
        r = 2 * step_size * np.sqrt(k)
        ax.plot(r * np.cos(g), r * np.sin(g), "k--", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            _("step {k}: width {width:.1f} (√{k}·{step_size:g} = {expected:.1f})").format(
                k=k, width=p.std(), step_size=step_size, expected=step_size * np.sqrt(k)
            ),
            fontsize=8,
        )
    return fig


def plot_gaussian_bells(
    centre: float = 170.0, widths: Sequence[float] = (2.0, 5.0, 15.0), *, draws: Sequence[float] = (173.0, 190.0)
) -> Figure:
    """Gaussian bells around one pixel value: the narrower the bell, the likelier a draw near it.

    *draws* are marked green when within two widths of the centre for the narrowest bell (likely),
    red otherwise (unlikely), as in the seed article's (173, 152) example.
    """
    from scipy.stats import norm

    if not widths or min(widths) <= 0:
        raise InputError(_("widths must be positive numbers, got {widths}").format(widths=widths))
    span = 4 * max(widths)
    x = np.linspace(centre - span, centre + span, 600)
    fig = _figure(figsize=(6.5, 3.0), layout="constrained")
    ax = fig.subplots()
    for w in widths:
        ax.plot(x, norm.pdf(x, centre, w), label=_("width σ = {w:g}").format(w=w))
    w0 = min(widths)
    for d in draws:
        likely = abs(d - centre) <= 2 * w0
        ax.axvline(d, color="tab:green" if likely else "tab:red", ls=":", lw=1.5)
        ax.text(
            d,
            ax.get_ylim()[1] * 0.9,
            " " + (_("{d:g} (likely)") if likely else _("{d:g} (unlikely)")).format(d=d),
            fontsize=8,
            color="tab:green" if likely else "tab:red",
        )
    ax.axvline(centre, color="k", lw=0.8)
    ax.set_xlabel(_("pixel value"))
    ax.set_ylabel(_("density"))
    ax.legend(fontsize=8, loc="upper left")
    return fig


def plot_unet_anatomy(anatomy) -> Figure:
    """Draw a table from :func:`diffkit.unet_anatomy` as the U it is.

    Each part is a box at its place in the call order (x) and its resolution level (y: the
    down path descends, the up path climbs), labelled with its output channels; a T marks a
    transformer (cross-attention to the text), a dashed arc each skip connection from the part
    whose output it carries. Everything drawn comes from the table, that is from the model.
    """
    from matplotlib.patches import FancyArrowPatch, Rectangle

    df = anatomy[anatomy.resolution != ""].reset_index(drop=True)
    if df.empty:
        raise InputError(_("the table has no feature-map rows; pass the output of diffkit.unet_anatomy"))
    sides = sorted({int(r.split("×")[0]) for r in df.resolution}, reverse=True)
    level = {s: i for i, s in enumerate(sides)}
    fig = _figure(figsize=(max(7.0, 0.42 * len(df)), 1.1 * len(sides) + 1.6), layout="constrained")
    ax = fig.subplots()
    where = {}  # each part's box, for the skip arcs
    colours = {"in": "tab:gray", "out": "tab:gray", "middle": "tab:purple"}
    for x, r in df.iterrows():
        y = -level[int(r.resolution.split("×")[0])]
        colour = colours.get(r.stage, "tab:blue" if r.stage.startswith("down") else "tab:orange")
        ax.add_patch(
            Rectangle((x - 0.4, y - 0.3), 0.8, 0.6, color=colour, alpha=0.25 if "transformer" in r.kind else 0.5)
        )
        ax.text(x, y, "T" if "transformer" in r.kind else str(r.channels), ha="center", va="center", fontsize=7)
        where[r.part] = (x, y)
        if r.skip_from:
            src = where[r.skip_from]
            ax.add_patch(
                FancyArrowPatch(
                    (src[0], src[1] + 0.3),
                    (x, y + 0.3),
                    connectionstyle="arc3,rad=-0.25",
                    arrowstyle="->",
                    ls="--",
                    lw=0.8,
                    color="tab:green",
                    mutation_scale=8,
                )
            )
    ax.set_yticks([-i for i in range(len(sides))], [f"{s}×{s}" for s in sides])
    ax.set_xticks(
        range(len(df)),
        [
            p.replace("_blocks", "").replace("resnets", "res").replace("attentions", "attn").replace("samplers", "")
            for p in df.part
        ],
        rotation=90,
        fontsize=6,
    )
    ax.set_xlim(-0.7, len(df) - 0.3)
    ax.set_ylim(-len(sides) + 0.4, 1.6)  # room for the arcs over the top level
    ax.set_ylabel(_("feature map"))
    text = anatomy.attrs.get("text")
    ax.set_title(
        _(
            "the U-Net, one call (t = {t:g}): numbers are channels, "
            "T a transformer attending to the text {text}, dashed arcs skip connections"
        ).format(t=anatomy.attrs.get("timestep", 0), text=text),
        fontsize=8,
    )
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig
