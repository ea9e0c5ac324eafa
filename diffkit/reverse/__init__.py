"""The reverse chain: step through a real Stable Diffusion pipeline and see what the U-Net predicted.

- :mod:`~diffkit.reverse.trace`: :class:`ReverseChain`, one denoiser call per step; it records
  the real ``pipe(...)``, so its image is that call's.
- :mod:`~diffkit.reverse.recorder`: how: hooks that observe the pipeline and change nothing, and
  one small adapter per family (SD 1.x/2.x, SDXL, SD 3).
- :mod:`~diffkit.reverse.records`: :class:`StepRecord` (frozen, one per U-Net call) and
  :func:`predicted_x0`.
- :mod:`~diffkit.reverse.trajectory`: :class:`Trajectory` (tidy frame, cached previews, PNG
  strip, GIF, MP4, attention maps).
- :mod:`~diffkit.reverse.previews`: latents to pictures, exact (VAE), fast (linear map,
  published or fitted) and raw (channels).
- :mod:`~diffkit.reverse.attention`: per-token, per-step, per-layer cross-attention maps.
- :mod:`~diffkit.reverse.text`: the tokenizer's view of a prompt.

Examples
--------
>>> from diffkit.testing import tiny_random_pipeline
>>> from diffkit.reverse import ReverseChain
>>> chain = ReverseChain(tiny_random_pipeline("sd"), "a red cube", steps=2, height=32, width=32)
>>> traj = chain.run()
>>> sorted(traj.to_frame().quantity.unique())[:3]
['cos_eps_text_uncond', 'eps', 'eps_text']
"""

from __future__ import annotations

from .attention import (
    CrossAttentionStore,
    aggregate_attention,
    capture_cross_attention,
    cross_attention_layers,
    overlay,
)
from .families import FLOW_SCHEDULERS
from .previews import (
    PUBLISHED_LATENT_RGB,
    LatentRGB,
    channel_grid,
    decode_latents,
    fast_preview,
    fit_latent_rgb,
    latent_channels,
    latent_rgb,
    to_uint8,
)
from .recorder import ChainClosedError
from .records import QUANTITIES, StepRecord, predicted_x0
from .text import PromptTokens, PromptTruncatedWarning, tokenize_prompt
from .trace import SUPPORTED_PIPELINES, NonFiniteLatentsError, ReverseChain
from .trajectory import Trajectory

__all__ = [
    "FLOW_SCHEDULERS",
    "PUBLISHED_LATENT_RGB",
    "QUANTITIES",
    "SUPPORTED_PIPELINES",
    "ChainClosedError",
    "CrossAttentionStore",
    "LatentRGB",
    "NonFiniteLatentsError",
    "PromptTokens",
    "PromptTruncatedWarning",
    "ReverseChain",
    "StepRecord",
    "Trajectory",
    "aggregate_attention",
    "capture_cross_attention",
    "channel_grid",
    "cross_attention_layers",
    "decode_latents",
    "fast_preview",
    "fit_latent_rgb",
    "latent_channels",
    "latent_rgb",
    "overlay",
    "predicted_x0",
    "to_uint8",
    "tokenize_prompt",
]
