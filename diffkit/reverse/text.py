"""The text side: what the tokenizer makes of a prompt before the U-Net ever sees it.

CLIP's tokenizer splits a prompt into byte-pair tokens (``"astronaut</w>"``; ``</w>`` marks
the end of a word), wraps them in ``<|startoftext|>`` … ``<|endoftext|>`` and pads the
sequence to the model's limit (77 for CLIP). Every position gets an embedding, and the
U-Net's cross-attention looks at all 77, padding included. Words past the limit are
silently dropped by the pipeline; :func:`tokenize_prompt` names them in a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..errors import InputError

__all__ = ["PromptTokens", "PromptTruncatedWarning", "tokenize_prompt", "word_positions"]


class PromptTruncatedWarning(UserWarning):
    """A prompt is longer than the text encoder's token limit; the tail is dropped."""


def _clean(token: str) -> str:
    """A token as a reader writes it: CLIP's end-of-word ``</w>`` and SentencePiece's (T5's)
    start-of-word ``▁`` removed."""
    return token.replace("</w>", "").replace("▁", "")


#: Words that carry no content of their own: the attention explorer does not open on them.
_FUNCTION_WORDS = frozenset("a an the of and or in on at with to for by from as is are this that".split())


@dataclass(frozen=True)
class PromptTokens:
    """The tokenizer's view of one prompt, padded to the model's limit.

    Attributes
    ----------
    prompt
        The text as given.
    tokens
        ``max_length`` token strings as the tokenizer spells them (``"cat</w>"``, padding included).
    ids
        The matching vocabulary ids.
    n_tokens
        How many positions carry the prompt: ``<|startoftext|>``, the kept tokens and
        ``<|endoftext|>``. Positions from ``n_tokens`` on are padding.
    max_length
        The model's limit (77 for CLIP; Flux's ``max_sequence_length`` for its T5, 512 by default).
    dropped
        The text that did not fit (``""`` when nothing was dropped).
    n_start
        Special tokens before the words: 1 for CLIP's ``<|startoftext|>``, 0 for T5 (which only
        ends the text with ``</s>``).
    """

    prompt: str
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    n_tokens: int
    max_length: int
    dropped: str = ""
    n_start: int = 1

    @property
    def content(self) -> slice:
        """The positions of the prompt's own tokens: no start or end token, no padding."""
        return slice(self.n_start, max(self.n_start, self.n_tokens - 1))

    @property
    def truncated(self) -> bool:
        """Whether words were dropped."""
        return bool(self.dropped)

    @property
    def words(self) -> tuple[str, ...]:
        """Readable labels of the prompt positions ``0 … n_tokens − 1`` (``</w>`` removed)."""
        return tuple(_clean(t) for t in self.tokens[: self.n_tokens])

    @property
    def first_content_position(self) -> int:
        """The position of the prompt's first content word: not a special token and not a
        function word ("a", "the", "of", …); the first prompt position when there is none."""
        for i, w in enumerate(self.words):
            if self.n_start <= i < self.n_tokens - 1 and w.lower() not in _FUNCTION_WORDS and w.isalnum():
                return i
        return self.n_start if self.n_tokens > self.n_start + 1 else 0

    @property
    def attention_mask(self) -> tuple[int, ...]:
        """1 for prompt positions, 0 for padding."""
        return tuple(1 if i < self.n_tokens else 0 for i in range(self.max_length))

    def index(self, token: int | str) -> int:
        """The position of *token*: an int is checked and returned; a word finds its first
        occurrence among the prompt positions (``"cat"`` matches ``"cat</w>"``)."""
        if isinstance(token, int):
            if not 0 <= token < self.max_length:
                raise InputError(f"token position {token} is outside [0, {self.max_length})")
            return token
        want = _clean(str(token)).lower()
        for i, w in enumerate(self.words):
            if w.lower() == want:
                return i
        raise InputError(
            f"{token!r} is not a token of this prompt; choose one of {list(self.words)} or pass a position"
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per position: ``position, token, word, id, is_padding``."""
        return pd.DataFrame(
            {
                "position": range(self.max_length),
                "token": self.tokens,
                "word": [_clean(t) for t in self.tokens],
                "id": self.ids,
                "is_padding": [i >= self.n_tokens for i in range(self.max_length)],
            }
        )


def _tokenizer_of(pipe_or_tokenizer: Any) -> Any:
    tok = getattr(pipe_or_tokenizer, "tokenizer", None)
    if tok is None and getattr(pipe_or_tokenizer, "tokenizer_2", None) is not None:
        tok = pipe_or_tokenizer.tokenizer_2
    if tok is None:
        tok = pipe_or_tokenizer
    if not callable(tok) or not hasattr(tok, "convert_ids_to_tokens"):
        raise InputError(
            f"{type(pipe_or_tokenizer).__name__} is neither a tokenizer nor a pipeline with one; "
            "pass a diffusers pipeline or a transformers tokenizer"
        )
    return tok


def tokenize_prompt(
    pipe_or_tokenizer: Any, prompt: str, *, warn: bool = True, max_length: int | None = None
) -> PromptTokens:
    """Tokenize *prompt* the way the pipeline does: padded (and truncated) to the model's limit.

    Parameters
    ----------
    pipe_or_tokenizer
        A diffusers pipeline (its ``tokenizer``) or a transformers tokenizer.
    prompt
        The text.
    warn
        Emit a :class:`PromptTruncatedWarning` naming the dropped words when the prompt is too long.
    max_length
        The limit, when the pipeline sets its own (Flux's ``max_sequence_length``); default the
        tokenizer's ``model_max_length``.

    Examples
    --------
    >>> from diffkit.testing import tiny_random_pipeline
    >>> view = tokenize_prompt(tiny_random_pipeline("sd"), "a photo of a cat")
    >>> view.words
    ('<|startoftext|>', 'a', 'photo', 'of', 'a', 'cat', '<|endoftext|>')
    >>> len(view.ids)
    77
    """
    if not isinstance(prompt, str):
        raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
    tok = _tokenizer_of(pipe_or_tokenizer)
    max_length = int(tok.model_max_length if max_length is None else max_length)
    # verbose=False: the length is measured here on purpose, so transformers' "indexing errors" notice
    # (about running an over-long sequence through the model, which diffkit never does) stays out
    full = list(tok(prompt, truncation=False, add_special_tokens=True, verbose=False).input_ids)
    ids = list(tok(prompt, padding="max_length", max_length=max_length, truncation=True).input_ids)
    # full = [BOS] + content + [EOS] (CLIP) or content + [EOS] (T5)
    n_start = int(bool(full) and tok.bos_token_id is not None and full[0] == tok.bos_token_id)
    n_end = int(bool(full) and full[-1] == tok.eos_token_id)
    content = full[n_start : len(full) - n_end]
    room = max_length - n_start - n_end
    dropped = ""
    if len(content) > room:
        kept_last, first_dropped = tok.convert_ids_to_tokens([content[room - 1], content[room]])
        dropped = tok.decode(content[room:]).strip()
        if not (kept_last.endswith("</w>") or first_dropped.startswith("▁")):  # the cut falls inside a word
            dropped = f"…{dropped}"
        if warn:
            warnings.warn(
                PromptTruncatedWarning(
                    f"the prompt has {len(content)} tokens but the text encoder takes {room} "
                    f"(plus its special tokens); these words are dropped: {dropped!r}. "
                    "Shorten the prompt or move the important words to the front"
                ),
                stacklevel=2,
            )
    n_tokens = min(len(content), room) + n_start + n_end
    return PromptTokens(
        prompt=prompt,
        tokens=tuple(tok.convert_ids_to_tokens(ids)),
        ids=tuple(int(i) for i in ids),
        n_tokens=n_tokens,
        max_length=max_length,
        dropped=dropped,
        n_start=n_start,
    )


def word_positions(
    tokenizer: Any, text: str | Sequence[int], word: str, *, within: tuple[int, int] | None = None
) -> list[int]:
    """The token positions of *word*'s first occurrence in *text* as *tokenizer* splits it
    (the start token is position 0), searched within positions ``[start, stop)`` if given.

    *text* may be its token ids already (``tokenizer(text).input_ids``), to tokenize it once
    for several words.

    >>> from diffkit._clip_vocab import clip_tokenizer
    >>> from diffkit.tiny import pipeline_path
    >>> tok = clip_tokenizer(pipeline_path() / "tokenizer")
    >>> word_positions(tok, "a photo of a red circle", "red circle")
    [5, 6]
    """
    ids = list(tokenizer(text).input_ids) if isinstance(text, str) else list(text)
    sub = list(tokenizer(word, add_special_tokens=False).input_ids)
    lo, hi = within if within is not None else (0, len(ids))
    for i in range(lo, hi - len(sub) + 1):
        if ids[i : i + len(sub)] == sub:
            return list(range(i, i + len(sub)))
    where = f"the tokens of {text!r}" if isinstance(text, str) else f"the token ids {ids}"
    raise InputError(f"{word!r} is not among {where}; fix: use a word of the prompt, spelt as in it")
