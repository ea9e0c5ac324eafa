"""Cross-attention maps: which latent pixels each prompt token was looked at by, per step and layer.

In every cross-attention layer of the U-Net, each latent pixel (a query) spreads one unit of
attention over the 77 token embeddings (the keys): ``softmax(Q Kᵀ / √d)``. One column of that
matrix, folded back to the layer's ``h × w`` grid, is the map of one token.

PyTorch's fused ``scaled_dot_product_attention`` never materialises that softmax, so the maps
are captured with diffusers' attention-processor API (the approach of DAAM, Tang et al. 2023):
:func:`capture_cross_attention` installs, with ``Attention.set_processor``, a processor on each
cross-attention layer that first calls the layer's *original* processor (so the U-Net's output,
and hence the image, is bit-for-bit unchanged) and then recomputes ``Q`` and ``K`` and the
softmax explicitly for the conditional half of the batch. The original processors are put back
when the context ends, also after an exception.

Maps are stored per step and per layer as ``(n_tokens, h, w)`` float16 tensors on the CPU,
averaged over heads, for the prompt's own positions (start token, words, end token).
:func:`aggregate_attention` averages any subset over steps and layers and upsamples;
:func:`overlay` draws a map over an image.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from ..errors import InputError

__all__ = [
    "AttentionTap",
    "CrossAttentionStore",
    "aggregate_attention",
    "attention_probs",
    "capture_cross_attention",
    "colorbar",
    "cross_attention_layers",
    "joint_attention_probs",
    "overlay",
    "tap_cross_attention",
]


class CrossAttentionStore:
    """Collects the cross-attention maps of one U-Net call.

    Parameters
    ----------
    n_tokens
        How many token positions to keep (the prompt's, from :class:`~diffkit.reverse.text.PromptTokens`).
    latent_size
        ``(h, w)`` of the latents entering the U-Net; each layer's grid is found from it.
    cond_slice
        The rows of the U-Net batch that carry the text condition (the second half under
        classifier-free guidance, everything otherwise).
    dtype
        Storage dtype of the maps.
    """

    def __init__(
        self,
        n_tokens: int,
        latent_size: tuple[int, int],
        cond_slice: slice = slice(None),
        dtype: torch.dtype = torch.float16,
    ) -> None:
        self.n_tokens = int(n_tokens)
        self.latent_size = (int(latent_size[0]), int(latent_size[1]))
        self.cond_slice = cond_slice
        self.dtype = dtype
        self.maps: dict[str, torch.Tensor] = {}

    def grid(self, n_queries: int) -> tuple[int, int]:
        """The ``(h, w)`` of a layer with *n_queries* latent pixels (the U-Net halves sizes, rounding up)."""
        h, w = self.latent_size
        for _ in range(8):
            if h * w == n_queries:
                return h, w
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        side = int(round(math.sqrt(n_queries)))
        if side * side == n_queries:
            return side, side
        raise InputError(f"cannot fold {n_queries} queries into a grid for latents {self.latent_size}")

    def add(self, name: str, probs: torch.Tensor) -> None:
        """Store ``probs`` ``(B, N, T)`` (heads already averaged) of layer *name*: first batch row,
        the first ``n_tokens`` tokens, folded to ``(n_tokens, h, w)``."""
        p = probs[0, :, : self.n_tokens]  # (N, n_tokens)
        h, w = self.grid(p.shape[0])
        self.maps[name] = p.t().reshape(-1, h, w).to("cpu", self.dtype)

    def pop(self) -> dict[str, torch.Tensor]:
        """The maps collected since the last pop, and a fresh start."""
        maps, self.maps = self.maps, {}
        return maps


def attention_probs(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, n_tokens: int | None = None
) -> torch.Tensor:
    """``softmax(Q Kᵀ · scale)`` averaged over heads: ``(B, N, T)``, computed explicitly in float32."""
    hs = hidden_states
    if hs.ndim == 4:  # (B, C, h, w) → (B, h·w, C)
        b, c, h, w = hs.shape
        hs = hs.view(b, c, h * w).transpose(1, 2)
    if getattr(attn, "group_norm", None) is not None:
        hs = attn.group_norm(hs.transpose(1, 2)).transpose(1, 2)
    q = attn.to_q(hs)
    ehs = encoder_hidden_states
    if getattr(attn, "norm_cross", None):
        ehs = attn.norm_encoder_hidden_states(ehs)
    k = attn.to_k(ehs)
    b = q.shape[0]
    head_dim = k.shape[-1] // attn.heads
    q = q.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, N, d)
    k = k.view(b, -1, attn.heads, head_dim).transpose(1, 2)  # (B, heads, T, d)
    if getattr(attn, "norm_q", None) is not None:
        q = attn.norm_q(q)
    if getattr(attn, "norm_k", None) is not None:
        k = attn.norm_k(k)
    scores = torch.matmul(q.float() * float(attn.scale), k.float().transpose(-1, -2))  # scale the (N, d) side
    return scores.softmax(dim=-1)[..., :n_tokens].mean(dim=1)  # (B, N, n_tokens): heads averaged after the cut


def joint_attention_probs(
    attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, n_tokens: int | None = None
) -> torch.Tensor:
    """SD 3's joint attention seen from the image: ``(B, N_img, T)``, averaged over heads.

    MMDiT attends over [image tokens, text tokens] together. The map keeps each image query's
    scores on the text keys, with the softmax taken over the text keys alone: the same quantity
    as a U-Net's cross-attention map (which text token each pixel reads from), and it costs
    N_img × T instead of N_img × (N_img + T).
    """
    b = hidden_states.shape[0]

    def heads(x: torch.Tensor, norm: Any) -> torch.Tensor:
        x = x.view(b, -1, attn.heads, x.shape[-1] // attn.heads).transpose(1, 2)
        return norm(x) if norm is not None else x

    q = heads(attn.to_q(hidden_states), getattr(attn, "norm_q", None))
    k = heads(attn.add_k_proj(encoder_hidden_states), getattr(attn, "norm_added_k", None))
    scores = torch.matmul(q.float() * float(attn.scale), k.float().transpose(-1, -2))  # scale the (N, d) side
    return scores.softmax(dim=-1)[..., :n_tokens].mean(dim=1)  # (B, N_img, n_tokens)


class AttentionTap:
    """A cross-attention layer's processor that calls the layer's own, then hands what the layer
    saw (``attn, hidden_states, encoder_hidden_states``) to *listener*. The layer's output is
    the original processor's, unchanged; the listener computes what it wants (the recorder the
    softmax without a gradient, the tiny model's token loss with one)."""

    def __init__(self, inner: Any, listener: Callable[[Any, torch.Tensor, torch.Tensor], None]) -> None:
        self.inner = inner
        self.listener = listener

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        out = self.inner(
            attn,
            hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            attention_mask=attention_mask,
            **kwargs,
        )
        if encoder_hidden_states is not None:
            self.listener(attn, hidden_states, encoder_hidden_states)
        return out


@contextmanager
def tap_cross_attention(
    denoiser: Any,
    listener: Callable[[str, Any, torch.Tensor, torch.Tensor], None],
    layers: Sequence[tuple[str, Any]] | None = None,
) -> Iterator[None]:
    """Within the block, every cross-attention layer of *denoiser* calls
    ``listener(name, attn, hidden_states, encoder_hidden_states)`` after computing its output
    (:class:`AttentionTap`); the original processors are restored on exit, also when it raises."""
    layers = list(layers) if layers is not None else cross_attention_layers(denoiser)
    originals = [(m, m.processor) for _, m in layers]
    try:
        for name, m in layers:
            m.set_processor(AttentionTap(m.processor, functools.partial(listener, name)))
        yield
    finally:
        for m, p in originals:
            m.set_processor(p)


def _is_joint(attn: Any) -> bool:
    """Whether *attn* is an MMDiT joint-attention layer (SD 3: text has its own projections)."""
    return getattr(attn, "add_k_proj", None) is not None and not getattr(attn, "is_cross_attention", False)


def cross_attention_layers(denoiser: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of every layer where text meets image, in registration order: the
    cross-attention layers of a U-Net, or the joint-attention layers of SD 3's MMDiT."""
    joint = [(n, m) for n, m in denoiser.named_modules() if hasattr(m, "set_processor") and _is_joint(m)]
    layers = joint or [
        (n, m)
        for n, m in denoiser.named_modules()
        if hasattr(m, "set_processor") and getattr(m, "is_cross_attention", False)
    ]
    if not layers:
        raise InputError(f"{type(denoiser).__name__} has no cross-attention layers to capture")
    return layers


@contextmanager
def capture_cross_attention(
    unet: Any, store: CrossAttentionStore, layers: Sequence[tuple[str, Any]] | None = None
) -> Iterator[CrossAttentionStore]:
    """Within the block, every cross-attention layer of *unet* records its maps into *store*.

    The original processors are restored on exit, also when the block raises. The U-Net's
    outputs are unchanged: the capturing processor delegates the attention itself to the
    original processor and computes the softmax a second time, explicitly, for the maps.

    Examples
    --------
    >>> from diffkit.testing import tiny_random_pipeline
    >>> pipe = tiny_random_pipeline("sd")
    >>> store = CrossAttentionStore(n_tokens=4, latent_size=(8, 8))
    >>> with capture_cross_attention(pipe.unet, store):
    ...     _ = pipe.unet(torch.randn(1, 4, 8, 8), 10, encoder_hidden_states=torch.randn(1, 77, 32))
    >>> maps = store.pop()
    >>> len(maps), sorted({tuple(m.shape) for m in maps.values()})
    (6, [(4, 4, 4)])
    """
    sl = store.cond_slice

    def record(name: str, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        probs_of = joint_attention_probs if _is_joint(attn) else attention_probs
        with torch.no_grad():
            store.add(name, probs_of(attn, hidden_states[sl], encoder_hidden_states[sl], store.n_tokens))

    with tap_cross_attention(unet, record, layers):
        yield store


def _select_layers(names: Iterable[str], layers: Any) -> list[str]:
    names = list(names)
    if layers is None:
        return names
    if callable(layers):
        chosen = [n for n in names if layers(n)]
    elif isinstance(layers, str):
        chosen = [n for n in names if layers in n]
    else:
        wanted = set(layers)
        chosen = [n for n in names if n in wanted or any(w in n for w in wanted)]
    if not chosen:
        raise InputError(f"no captured layer matches {layers!r}; layers are {names}")
    return chosen


def _pick(x: torch.Tensor, token: Any) -> torch.Tensor:
    if token is None:
        return x
    if isinstance(token, int):
        if not -x.shape[0] <= token < x.shape[0]:
            raise InputError(f"token position {token} is not stored; the maps hold positions 0…{x.shape[0] - 1}")
        return x[token : token + 1]
    if isinstance(token, slice):
        return x[token]
    return x[list(token)]


def aggregate_attention(
    maps: Iterable[Mapping[str, torch.Tensor] | Any],
    token: int | Sequence[int] | slice | None = None,
    *,
    layers: str | Sequence[str] | Callable[[str], bool] | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Average cross-attention maps over steps and layers, upsampled to one size.

    Parameters
    ----------
    maps
        Per-step maps: dicts ``layer → (n_tokens, h, w)`` or records with an ``attention`` attribute.
    token
        A position (returns ``(H, W)``), several positions or a slice (returns ``(k, H, W)``),
        or None for all stored positions.
    layers
        Which layers: a substring (``"up_blocks"``), a list of names/substrings, or a predicate.
    size
        ``(H, W)`` of the result (bilinear upsampling); default the largest layer grid.

    Returns
    -------
    torch.Tensor
        float32 maps; each is a mean of attention probabilities (values in ``[0, 1]``).
    """
    per_step = []
    for m in maps:
        m = getattr(m, "attention", m)
        if m is None:
            raise InputError("these records hold no attention maps; run the chain with capture_attention=True")
        per_step.append(m)
    if not per_step:
        raise InputError("no steps to aggregate; pass at least one record")
    names = _select_layers(per_step[0].keys(), layers)
    if size is None:
        size = max((tuple(per_step[0][n].shape[-2:]) for n in names), key=lambda s: s[0] * s[1])
    total = None
    count = 0
    for m in per_step:
        for n in names:
            x = _pick(m[n], token).float()
            if tuple(x.shape[-2:]) != tuple(size):
                x = torch.nn.functional.interpolate(x[None], size=tuple(size), mode="bilinear", align_corners=False)[0]
            total = x if total is None else total + x
            count += 1
    out = total / count
    return out[0] if isinstance(token, int) else out


def overlay(
    image: torch.Tensor | np.ndarray,
    heatmap: torch.Tensor | np.ndarray,
    *,
    alpha: float = 0.5,
    cmap: str = "viridis",
    normalize: bool = True,
    vmin: float | None = None,
    vmax: float | None = None,
) -> np.ndarray:
    """Draw *heatmap* over *image*: ``uint8`` ``(H, W, 3)``.

    Parameters
    ----------
    image
        ``(H, W, 3)`` in ``[0, 1]`` (float) or ``uint8``, or ``(3, H, W)`` float.
    heatmap
        ``(h, w)``; upsampled bilinearly to the image size.
    alpha
        Opacity of the heat map.
    cmap
        A Matplotlib colormap name (default viridis: perceptually uniform, readable in grey).
    normalize
        Stretch the map's own min…max to the full colormap (ignored when *vmin* or *vmax* is
        given).
    vmin, vmax
        A fixed scale: *vmin* and *vmax* map to the ends of the colormap (values beyond are
        clipped), so several maps drawn with the same scale can be compared; pair it with
        :func:`colorbar`.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    img = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise InputError(f"image must be (H, W, 3) or (3, H, W), got shape {img.shape}")
    heat = torch.as_tensor(np.asarray(heatmap, dtype=np.float32) if not isinstance(heatmap, torch.Tensor) else heatmap)
    heat = heat.detach().float().cpu()
    if heat.ndim != 2:
        raise InputError(f"heatmap must be (h, w), got shape {tuple(heat.shape)}")
    heat = torch.nn.functional.interpolate(heat[None, None], size=img.shape[:2], mode="bilinear", align_corners=False)[
        0, 0
    ]
    if vmin is not None or vmax is not None:
        lo = float(heat.min()) if vmin is None else float(vmin)
        hi = float(heat.max()) if vmax is None else float(vmax)
        if not hi > lo:
            raise InputError(f"vmax must be greater than vmin, got vmin={lo} and vmax={hi}")
        heat = (heat - lo) / (hi - lo)
    elif normalize:
        lo, hi = heat.min(), heat.max()
        heat = (heat - lo) / (hi - lo) if hi > lo else torch.zeros_like(heat)
    colours = matplotlib.colormaps[cmap](heat.clamp(0, 1).numpy())[..., :3]
    out = (1 - alpha) * img + alpha * colours
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def colorbar(width: int = 256, height: int = 12, *, cmap: str = "viridis") -> np.ndarray:
    """A horizontal colour bar, ``uint8`` ``(height, width, 3)``: the colormap from its low
    end (left) to its high end (right), for labelling maps drawn by :func:`overlay`."""
    import matplotlib

    if width < 2 or height < 1:
        raise InputError(f"colorbar needs width ≥ 2 and height ≥ 1, got {width}×{height}")
    ramp = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, width))[:, :3]
    return (np.repeat(ramp[None], height, axis=0) * 255 + 0.5).astype(np.uint8)
