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
    ("eps_uncond", "{s}_u (no text)"),
    ("eps_text", "{s}_c (with text)"),
    ("eps", "{s} guided"),
    ("guidance", "{s}_c − {s}_u"),
)
"""The model-output panels; ``{s}`` is what the model predicts (ε̂ or v̂), read from its records."""

_PREDICTS = {"epsilon": "the noise ε", "v_prediction": "v = √ᾱ ε − √(1−ᾱ) x₀", "flow": "the velocity v = ε − x₀"}


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
    what = html.escape(_PREDICTS.get(prediction_type, prediction_type))
    formats = [fmt for _, fmt in NOISE_PANELS]
    if guidance == "embedded":
        formats[1] = formats[2] = "{s} (with text, guidance embedded: one call)"
    elif guidance == "embedded+cfg":
        formats[1] = "{s}_c (with text, guidance embedded)"
        formats[0] = "{s}_u (negative prompt, guidance embedded)"
        formats[2] = "{s} after true CFG"
    return [
        f"<small><b title='the model predicts {what}'>{html.escape(fmt.format(s=symbol))}</b></small>"
        for fmt in formats
    ]


def calls_done(traj: Trajectory) -> str:
    """What the progress counts: ``"U-Net calls"`` (one record each), or a transformer's ``"steps"``
    (Flux's true CFG makes two calls a step)."""
    return "U-Net calls" if traj.info.get("denoiser") == "unet" else "steps"


def image_titles(shown: str, latent_rgb: Any = None, note: str = "") -> tuple[str, str]:
    """The x_t and x̂_0 panels' titles (HTML), saying which picture they show.

    *shown* is ``"exact"`` (the VAE's decode), ``"pending"`` (the fast preview until this step's
    decode is ready; *note* says how far the decoding is) or ``"fast"`` (the fast preview, chosen).
    The fast preview's least-squares fit error is given where the map was fitted.
    """
    fit = latent_rgb is not None and latent_rgb.rms_error is not None
    if shown == "exact":
        how = "exact VAE decode"
    elif shown == "pending":
        how = (
            "fast preview"
            + (f" (fit RMS error {latent_rgb.rms_error:.3f})" if fit else "")
            + (f"; {note}" if note else "")
        )
    else:
        how = "fast linear preview" + (f" (fit RMS error {latent_rgb.rms_error:.3f} on [−1, 1])" if fit else "")
    return (
        f"<div style='line-height:1.3'><small><b>x_t, the noisy latents</b><br>{how}</small></div>",
        f"<div style='line-height:1.3'><small><b>x̂₀, the clean image the model implies</b><br>{how}</small></div>",
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
    if traj.info.get("denoiser") == "unet":
        over = f"softmax over all {traj.tokens.max_length} text positions, padding included"
    elif traj.info.get("family") == "flux":
        over = (
            f"one softmax over all {traj.tokens.max_length} T5 positions and the image tokens, of the "
            "double- and single-stream blocks"
        )
    else:
        over = "softmax over the text keys"
    scale = (
        f"<small>share of each pixel's attention that goes to this word ({over}, mean of the "
        f"{'attention' if traj.info.get('family') == 'flux' else 'cross-attention'} layers and heads, "
        f"step {k + 1}): 0 (left) … {vmax:.3f} "
        "(right), the largest value of any word of the prompt at this step, so the words can be "
        "compared</small>"
    )
    return pic, scale


def step_table(traj: Trajectory, k: int) -> str:
    rec = traj[k]
    rows = [
        ("step", f"{k + 1} of {len(traj)} ({rec.stage})"),
        ("timestep t", f"{rec.timestep:g}"),
        ("σ_t", f"{rec.sigma:.4f}"),
        ("ᾱ_t", f"{rec.alpha_bar:.4f}"),
        ("guidance", rec.guidance_label),
        ("model predicts", rec.prediction_symbol),
    ]
    rows += [(stat_label(name, rec.prediction_symbol), f"{value:.4f}") for name, value in rec.stats.items()]
    body = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in rows)
    return f"<table style='font-size:small'>{body}</table>"


def stat_label(name: str, symbol: str) -> str:
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
