"""What the reverse-chain explorer draws, as plain functions of a trajectory and a step.

The explorer (:mod:`diffkit.widgets.reverse_chain`) only binds these to its controls: the
model-output panels' titles read from the records (ε̂ or v̂, never assumed), the x_t and x̂_0
titles saying which preview they show, the attention panel on a scale shared by the prompt's
words, and the step's numbers as a small table.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
from PIL import Image

from ..i18n import N_
from ..i18n import gettext as _
from ..reverse import Trajectory
from ..reverse.records import prediction_symbol

__all__ = [
    "NOISE_PANELS",
    "attention_panel",
    "calls_done",
    "image_titles",
    "noise_titles",
    "resize",
    "stat_label",
    "step_table",
]

NOISE_PANELS = (
    ("eps_uncond", N_("{s}_u (no text)")),
    ("eps_text", N_("{s}_c (with text)")),
    ("eps", N_("{s} guided")),
    ("guidance", "{s}_c − {s}_u"),
)
"""The model-output panels; ``{s}`` is what the model predicts (ε̂ or v̂), read from its records
(the titles are marked for translation, and translated where shown)."""

_PREDICTS = {
    "epsilon": N_("the noise ε"),
    "v_prediction": "v = √ᾱ ε − √(1−ᾱ) x₀",
    "flow": N_("the velocity v = ε − x₀"),
}


def resize(arr: np.ndarray, size: int | None) -> np.ndarray:
    """Scale a picture to *size* × *size* screen pixels with nearest neighbour: the model's
    own pixels stay visible as blocks, nothing is smoothed that the model did not draw."""
    if size is None or (arr.shape[0] == size and arr.shape[1] == size):
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.Resampling.NEAREST))


def noise_titles(prediction_type: str, guidance: str = "cfg") -> list[str]:
    """The model-output panels' titles (HTML) in what this model predicts (never assumed to be ε),
    and, where the guidance is embedded (Flux), saying that the one output is already guided."""
    symbol = prediction_symbol(prediction_type)
    what = _("the model predicts {what}").format(what=_(_PREDICTS.get(prediction_type, prediction_type)))
    formats = [fmt for _key, fmt in NOISE_PANELS]
    if guidance == "embedded":
        formats[1] = formats[2] = N_("{s} (with text, guidance embedded: one call)")
    elif guidance == "embedded+cfg":
        formats[1] = N_("{s}_c (with text, guidance embedded)")
        formats[0] = N_("{s}_u (negative prompt, guidance embedded)")
        formats[2] = N_("{s} after true CFG")
    return [
        f"<small><b title='{html.escape(what)}'>{html.escape(_(fmt).format(s=symbol))}</b></small>" for fmt in formats
    ]


def calls_done(traj: Trajectory) -> str:
    """What the progress counts: ``"U-Net calls"`` (one record each), or a transformer's ``"steps"``
    (Flux's true CFG makes two calls a step)."""
    return _("U-Net calls") if traj.info.get("denoiser") == "unet" else _("steps")


def image_titles(shown: str, latent_rgb: Any = None, note: str = "") -> tuple[str, str]:
    """The x_t and x̂_0 panels' titles (HTML), saying which picture they show.

    *shown* is ``"exact"`` (the VAE's decode), ``"pending"`` (the fast preview until this step's
    decode is ready; *note* says how far the decoding is) or ``"fast"`` (the fast preview, chosen).
    The fast preview's least-squares fit error is given where the map was fitted.
    """
    fit = latent_rgb is not None and latent_rgb.rms_error is not None
    if shown == "exact":
        how = _("exact VAE decode")
    elif shown == "pending":
        how = (
            _("fast preview")
            + (_(" (fit RMS error {error:.3f})").format(error=latent_rgb.rms_error) if fit else "")
            + (f"; {note}" if note else "")
        )
    else:
        how = _("fast linear preview") + (
            _(" (fit RMS error {error:.3f} on [−1, 1])").format(error=latent_rgb.rms_error) if fit else ""
        )
    x_t, x0 = _("x_t, the noisy latents"), _("x̂₀, the clean image the model implies")
    return (
        f"<div style='line-height:1.3'><small><b>{x_t}</b><br>{how}</small></div>",
        f"<div style='line-height:1.3'><small><b>{x0}</b><br>{how}</small></div>",
    )


def attention_panel(traj: Trajectory, k: int, position: int) -> tuple[np.ndarray, str]:
    """The word at *position*'s map at step *k* over the exact x̂_0, on a scale shared by the
    prompt's words at this step (0 … their largest value), and the sentence that says so (HTML)."""
    from ..reverse.attention import aggregate_attention, overlay

    n = traj.tokens.n_tokens
    size = (int(traj.info["height"]), int(traj.info["width"]))
    maps = aggregate_attention([traj[k]], list(range(n)), size=size)  # every prompt position, once
    heat = maps[int(position)]
    words = maps[traj.tokens.content] if n > traj.tokens.n_start + 1 else maps[:1]  # no start or end token
    vmax = max(float(words.max()), float(heat.max()), 1e-6)
    pic = overlay(traj.decode([k])[0], heat, vmax=vmax, vmin=0.0)
    n_keys = traj.tokens.max_length
    if traj.info.get("denoiser") == "unet":
        over = _("softmax over all {n} text positions, padding included").format(n=n_keys)
    elif traj.info.get("family") == "flux":
        over = _(
            "one softmax over all {n} T5 positions and the image tokens, of the double- and single-stream blocks"
        ).format(n=n_keys)
    else:
        over = _("softmax over the text keys")
    layers = _("attention") if traj.info.get("family") == "flux" else _("cross-attention")
    scale = _(
        "share of each pixel's attention that goes to this word ({over}, mean of the {layers} layers and heads, "
        "step {step}): 0 (left) … {vmax:.3f} (right), the largest value of any word of the prompt at this step, "
        "so the words can be compared"
    ).format(over=over, layers=layers, step=k + 1, vmax=vmax)
    return pic, f"<small>{scale}</small>"


def step_table(traj: Trajectory, k: int) -> str:
    rec = traj[k]
    rows = [
        (_("step"), _("{k} of {n} ({stage})").format(k=k + 1, n=len(traj), stage=_(rec.stage))),  # "step" translated
        (_("timestep t"), f"{rec.timestep:g}"),
        ("σ_t", f"{rec.sigma:.4f}"),
        ("ᾱ_t", f"{rec.alpha_bar:.4f}"),
        (_("guidance"), rec.guidance_label),
        (_("model predicts"), rec.prediction_symbol),
    ]
    rows += [(stat_label(name, rec.prediction_symbol), f"{value:.4f}") for name, value in rec.stats.items()]
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table style='font-size:small'>{body}</table>"


def stat_label(name: str, symbol: str) -> str:
    """A readable row label for one of :attr:`StepRecord.stats`, in the model's own symbol (ε̂ or v̂)."""
    labels = {
        "x_t": N_("rms of x_t"),
        "x_t_vp": N_("rms of x_t on the variance-preserving scale"),
        "eps_text": N_("rms of {s}_c (with text)"),
        "eps_uncond": N_("rms of {s}_u (no text)"),
        "eps": N_("rms of {s} guided"),
        "guidance": N_("rms of {s}_c − {s}_u"),
        "cos_eps_text_uncond": N_("cosine of {s}_c and {s}_u"),
        "x0_hat": N_("rms of x̂₀ (latents)"),
        "x0_hat_change": N_("rms of x̂₀'s change since the last step"),
        "x_prev": N_("rms of the next latents"),
    }
    if name in labels:
        return _(labels[name]).format(s=symbol)
    return _("rms of {name}").format(name=name)
