"""Flux's attention maps: which T5 token each image token reads from, in both kinds of block.

Flux's transformer has two kinds of block, and in both the attention is **one softmax over the
concatenated sequence [text tokens, image tokens]** (text first), after rotary position
embeddings (RoPE) on queries and keys:

- **double-stream (joint) blocks** (``transformer_blocks``): text and image have their own
  projections (``add_q_proj``/``add_k_proj`` for the text, ``to_q``/``to_k`` for the image), as
  in SD 3's MMDiT;
- **single-stream blocks** (``single_transformer_blocks``): text and image tokens have already
  been concatenated into one sequence, with one set of projections; the layer is never told
  where the text ends (the recorder reads it from the call: the length of
  ``encoder_hidden_states``).

For each image token (a query) the map keeps the part of that one softmax that lands on the
prompt's T5 tokens: ``softmax(Q Kᵀ / √d)[image rows, text columns]``, averaged over heads. The
rest of each row goes to the padding tokens and to the image tokens, so a pixel's shares over
the prompt's tokens sum to at most 1, exactly what the layer spent on them
(``tests/reverse/test_flux.py`` checks them against a hand computation on one block, and
``softmax · V`` against the layer's own output). Queries are taken in chunks so that no
``N × (T + N)`` matrix of all heads is held at once.

Capture follows :mod:`diffkit.reverse.attention`: a processor that calls the layer's own
processor first (so the image is bit-for-bit unchanged) and then computes the softmax again,
explicitly, for the maps; the original processors are restored on exit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import InputError

__all__ = [
    "FluxAttentionTap",
    "capture_flux_attention",
    "flux_attention_layers",
    "flux_attention_probs",
    "flux_block_kind",
]

#: image queries per chunk of the explicit softmax
QUERY_CHUNK = 1024


def flux_block_kind(attn: Any) -> str:
    """``"joint"`` (double-stream: the text has its own projections) or ``"single"`` (single-stream)."""
    return "joint" if getattr(attn, "added_kv_proj_dim", None) is not None else "single"


def flux_attention_layers(transformer: Any) -> list[tuple[str, Any]]:
    """``(name, module)`` of every attention layer of a Flux transformer: double-stream blocks
    first, then single-stream ones, in registration order."""
    layers = [
        (n, m)
        for n, m in transformer.named_modules()
        if hasattr(m, "set_processor")
        and hasattr(m, "head_dim")
        and (flux_block_kind(m) == "joint" or getattr(m, "pre_only", False))
    ]
    if not layers:
        raise InputError(
            f"{type(transformer).__name__} has no Flux attention layers to capture; fix: pass a "
            "FluxTransformer2DModel (pipe.transformer of a FluxPipeline)"
        )
    return layers


def _project(attn: Any, x: torch.Tensor, text: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Queries and keys ``(B, S, heads, d)`` after the layer's RMS norms, as its processor makes them."""
    if getattr(attn, "fused_projections", False):
        q, k, _ = (attn.to_added_qkv if text else attn.to_qkv)(x).chunk(3, dim=-1)
    elif text:
        q, k = attn.add_q_proj(x), attn.add_k_proj(x)
    else:
        q, k = attn.to_q(x), attn.to_k(x)
    q, k = q.unflatten(-1, (-1, attn.head_dim)), k.unflatten(-1, (-1, attn.head_dim))
    if text:
        return attn.norm_added_q(q), attn.norm_added_k(k)
    return attn.norm_q(q), attn.norm_k(k)


def flux_attention_probs(
    attn: Any,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor | None,
    image_rotary_emb: Any,
    *,
    text_len: int,
    n_tokens: int | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The image→text part of one Flux attention layer's softmax: ``(B, N_img, n_tokens)``, heads averaged.

    *hidden_states* are the image tokens (double-stream) or the whole [text, image] sequence
    (single-stream, *encoder_hidden_states* None); *text_len* is the text's length in either case.
    """
    q, k = _project(attn, hidden_states, text=False)
    if encoder_hidden_states is not None:  # double-stream: [text, image], text with its own projections
        tq, tk = _project(attn, encoder_hidden_states, text=True)
        q, k = torch.cat([tq, q], dim=1), torch.cat([tk, k], dim=1)
    if image_rotary_emb is not None:
        from diffusers.models.embeddings import apply_rotary_emb

        q = apply_rotary_emb(q, image_rotary_emb, sequence_dim=1)
        k = apply_rotary_emb(k, image_rotary_emb, sequence_dim=1)
    n_tokens = text_len if n_tokens is None else min(int(n_tokens), text_len)
    scale = attn.head_dim**-0.5
    q = q[:, text_len:].transpose(1, 2).float() * scale  # (B, heads, N_img, d): image queries
    k = k.transpose(1, 2).float()  # (B, heads, T + N_img, d): every key
    mask = _mask_rows(attention_mask, text_len, k.shape[2])
    out = []
    for lo in range(0, q.shape[2], QUERY_CHUNK):
        scores = torch.matmul(q[:, :, lo : lo + QUERY_CHUNK], k.transpose(-1, -2))  # (B, heads, n, T + N_img)
        if mask is not None:
            m = mask[..., lo : lo + QUERY_CHUNK, :] if mask.shape[-2] > 1 else mask
            scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
        out.append(scores.softmax(dim=-1)[..., :n_tokens].mean(dim=1))  # one softmax over all keys, then the cut
    return torch.cat(out, dim=1)


def _mask_rows(mask: torch.Tensor | None, text_len: int, n_keys: int) -> torch.Tensor | None:
    """An attention mask (as ``scaled_dot_product_attention`` takes it) cut to the image query rows."""
    if mask is None:
        return None
    while mask.ndim < 4:
        mask = mask[None]
    return mask[..., text_len:, :] if mask.shape[-2] == n_keys else mask


class FluxAttentionTap:
    """A Flux attention layer's processor that calls the layer's own, then hands what the layer saw
    to *listener* (``attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb``).
    Its signature is Flux's (the layer passes ``image_rotary_emb`` by position)."""

    def __init__(self, inner: Any, listener: Callable[..., None]) -> None:
        self.inner = inner
        self.listener = listener

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: Any = None,
        **kwargs: Any,
    ) -> Any:
        out = self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb, **kwargs)
        self.listener(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        return out


@contextmanager
def capture_flux_attention(store: Any, layers: Sequence[tuple[str, Any]], *, text_len: int) -> Iterator[Any]:
    """Within the block, every layer of *layers* (:func:`flux_attention_layers`) stores its
    image→text maps into *store* (a :class:`~diffkit.reverse.attention.CrossAttentionStore` whose
    grid is the token grid); the original processors are restored on exit, also when it raises."""
    sl = store.cond_slice

    def record(name: str, attn: Any, hs: torch.Tensor, ehs: torch.Tensor | None, mask: Any, rotary: Any) -> None:
        with torch.no_grad():
            probs = flux_attention_probs(
                attn,
                hs[sl],
                None if ehs is None else ehs[sl],
                rotary,
                text_len=text_len,
                n_tokens=store.n_tokens,
                attention_mask=mask,
            )
        store.add(name, probs)

    originals = [(m, m.processor) for _, m in layers]
    try:
        for name, m in layers:
            m.set_processor(FluxAttentionTap(m.processor, functools.partial(record, name)))
        yield store
    finally:
        for m, p in originals:
            m.set_processor(p)
