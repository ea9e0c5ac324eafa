"""Token grounding: a training loss that puts each word's cross-attention on its object.

diffkit-tiny 2 reads the text only through cross-attention, as SD 1.x does, but trained on
the plain denoising loss its colour and shape words attended almost as much to the
background as to the object (inside/outside 1.1 per pixel): a 16×16 latent with one flat
object lets every pixel read the colour from anywhere. SD's maps localise because of its
scale and its data; a miniature needs to be told. This module implements the token loss of
TokenCompose (Wang et al. 2024, "TokenCompose: Text-to-Image Diffusion with Token-level
Supervision", eq. 2): for a word *i* with object mask *B_i*, and its attention map *A_i*
over the latent pixels of one cross-attention layer,

    L_token = (1 − Σ_{u ∈ B_i} A_i(u) / Σ_u A_i(u))²,

averaged over the grounded words of the batch and over every cross-attention layer. The
masks are soft (the share of each latent pixel the object covers) and come from the world's
truth: the drawn shape, or each object of a two-object scene on its own. Only the colour and
shape words of shape images are grounded; occupation words also set the background colour,
so they are left free.

The loss changes training only; the architecture and the inference config are SD 1.x's.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffkit.reverse.attention import attention_probs, tap_cross_attention
from diffkit.reverse.text import word_positions
from diffkit.tiny import data as _d
from diffkit.tiny import world as _w

__all__ = ["object_masks", "word_objects", "GroundingProbe", "token_loss"]


def _soft(mask: np.ndarray, factor: int) -> torch.Tensor:
    """The share of each ``factor × factor`` block that *mask* covers: float (H/f, W/f)."""
    m = torch.from_numpy(np.ascontiguousarray(mask)).float()[None, None]
    return F.avg_pool2d(m, factor)[0, 0]


def object_masks(draws, *, factor: int) -> torch.Tensor:
    """Each cached image's objects at latent resolution: float16 ``(N, 2, H/f, W/f)``.

    *draws* is :func:`diffkit.tiny.cache.cache_draws` with ``layers=True``: chunks of
    ``(attributes, images, layers)``. Channel 0 holds the (first) shape, channel 1 a
    two-object scene's second shape; people get zeros (their words are not grounded).
    """
    out = []
    for a, ims, layers in draws:
        for b, im, lay in zip(_d.cell_atts(a, ims), ims, layers):
            n = im.size[0] // factor
            m = torch.zeros(2, n, n)
            if b.kind == "shape":
                m[0] = _soft(_d.figure_mask(im, b), factor)
            elif b.kind == "pair":
                m[0], m[1] = _soft(lay[0], factor), _soft(lay[1], factor)
            out.append(m)
    return torch.stack(out).half()


def word_objects(tokenizer, caption: str, a: _w.Attributes) -> list[tuple[list[int], int]]:
    """The grounded words of *caption*: ``[(token positions, object index), ...]``.

    A shape image's colour and shape words belong to object 0; in a two-object scene
    "a red circle and a blue square" (either order), the words of each phrase belong to
    their own object. Other captions, and the empty one, ground nothing.
    """
    if not caption or a.kind not in ("shape", "pair"):
        return []
    ids = tokenizer(caption).input_ids
    objects = [(a.color, a.shape)] + ([(a.color2, a.shape2)] if a.kind == "pair" else [])
    out = []
    for k, (color, shape) in enumerate(objects):
        phrase = word_positions(tokenizer, ids, f"{_w.article(color)} {shape}")
        for word in (color, shape):
            out.append((word_positions(tokenizer, ids, word, within=(phrase[0], phrase[-1] + 1)), k))
    return out


class GroundingProbe:
    """Installed on every cross-attention layer of a U-Net while it trains: records each
    layer's attention probabilities (heads averaged) *with* their gradient.

    The layer's output still comes from its own processor (the probe listens through
    :func:`diffkit.reverse.attention.tap_cross_attention`); the probabilities are computed a
    second time, explicitly (:func:`diffkit.reverse.attention.attention_probs`), so the
    loss's gradient reaches the layer's query and key projections and everything below.
    """

    def __init__(self, unet: Any) -> None:
        self.maps: list[torch.Tensor] = []
        self.active = False
        self._tap = contextlib.ExitStack()
        self._tap.enter_context(tap_cross_attention(unet, self._listen))

    def _listen(self, name: str, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        if self.active:
            self.maps.append(attention_probs(attn, hidden_states, encoder_hidden_states))

    def remove(self) -> None:
        self._tap.close()

    def pop(self) -> list[torch.Tensor]:
        out, self.maps = self.maps, []
        return out


def token_loss(
    maps: list[torch.Tensor],
    words: list[list[tuple[list[int], int]]],
    objects: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """TokenCompose's L_token over the layers in *maps*; ``None`` when no word is grounded.

    Parameters
    ----------
    maps
        Per layer ``(B, h·w, T)`` attention probabilities (:class:`GroundingProbe`).
    words
        Per sample, :func:`word_objects`.
    objects
        ``(B, 2, H, W)`` soft object masks at the largest layer's resolution.
    keep
        Optional boolean ``(B,)``: samples whose words count (e.g. not the noisiest steps).
    """
    b = len(words)
    n_words = max((len(w) for w in words), default=0)
    if n_words == 0 or not maps:
        return None
    t = maps[0].shape[-1]
    sel = torch.zeros(b, n_words, t)
    obj = torch.zeros(b, n_words, dtype=torch.long)
    valid = torch.zeros(b, n_words, dtype=torch.bool)
    for i, ws in enumerate(words):
        if keep is not None and not bool(keep[i]):
            continue
        for j, (pos, k) in enumerate(ws):
            sel[i, j, pos] = 1.0
            obj[i, j] = k
            valid[i, j] = True
    if not valid.any():
        return None
    dev = maps[0].device
    sel, obj, valid = sel.to(dev), obj.to(dev), valid.to(dev)
    objects = objects.to(dev).float()
    total = maps[0].new_zeros(())
    for p in maps:
        n = p.shape[1]
        side = int(round(n**0.5))
        m = F.adaptive_avg_pool2d(objects, side).flatten(2)  # (B, 2, n): exact for 16 → 8 → 4
        word_map = torch.einsum("bnt,bwt->bwn", p.float(), sel)  # (B, W, n)
        wmask = torch.gather(m, 1, obj[..., None].expand(-1, -1, n))  # (B, W, n)
        inside = (word_map * wmask).sum(-1) / word_map.sum(-1).clamp_min(1e-8)
        total = total + ((1 - inside) ** 2)[valid].mean()
    return total / len(maps)


def draw_layers(a: _w.Attributes, rng: random.Random, *, size: int):
    """:func:`diffkit.tiny.world.draw` with each pair object's own mask (the same draws of *rng*)."""
    if a.kind == "pair":
        return _w.draw_pair(a.color, a.shape, a.color2, a.shape2, rng, size=size, layers=True)
    return _w.draw(a, rng, size=size), None
