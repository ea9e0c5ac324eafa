"""Getting the spec's pipeline ready: loading it (quietly if asked) and refusing prompts longer
than its text encoder reads."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import pandas as pd

from ._spec_schema import AuditSpec, SpecError
from .prompts import build_prompts

__all__ = ["check_prompt_lengths", "load_pipeline_for", "quiet_loading"]


def check_prompt_lengths(spec: AuditSpec, tokenizer: Any, prompts: pd.DataFrame | None = None) -> None:
    """Refuse prompts longer than the text encoder reads (``tokenizer.model_max_length`` tokens).

    A longer prompt is cut off silently by the pipeline, so the end of the template (often the
    occupation itself) would never reach the model while the report still names it. Raises
    :class:`~diffkit.audit.SpecError` naming the template, the prompt and its length.
    """
    limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer is None or not isinstance(limit, int) or limit <= 0 or limit > 100_000:
        return
    prompts = build_prompts(spec) if prompts is None else prompts
    for kind, tid, text in prompts[["kind", "template_id", "prompt"]].itertuples(index=False):
        n = len(tokenizer(text, truncation=False, add_special_tokens=True)["input_ids"])
        if n > limit:
            key = f"{'prompts' if kind == 'audit' else 'controls'}.templates[{int(tid)}]"
            raise SpecError(
                spec.source,
                key,
                f"the prompt {text!r} is {n} tokens, over the text encoder's limit of {limit}: its end "
                "(the occupation word, perhaps) would be cut off before the model sees it",
                f"shorten the template to at most {limit} tokens with the longest attribute filled in",
            )
    negative = spec.pipeline.negative_prompt
    if negative:
        n = len(tokenizer(negative, truncation=False, add_special_tokens=True)["input_ids"])
        if n > limit:
            raise SpecError(
                spec.source,
                "pipeline.negative_prompt",
                f"{n} tokens, over the text encoder's limit of {limit}: the pipeline would cut off its end "
                f"({negative[:40]!r}…) without a word",
                f"shorten it to at most {limit} tokens, the words that matter first",
            )


def load_pipeline_for(spec: AuditSpec, *, device: Any = None, progress: bool = True) -> Any:
    """The spec's pipeline through :func:`diffkit.load_pipeline` (``"tiny"``, hub id or folder).

    With ``progress=False`` the loading bars of diffusers and transformers stay hidden too
    (``--no-progress``); their global setting is restored afterwards.
    """
    from ..pipeline import load_pipeline

    with contextlib.ExitStack() as stack:
        if not progress:
            stack.enter_context(quiet_loading())
        pipe = load_pipeline(
            spec.pipeline.model,
            device=device,
            dtype=spec.pipeline.dtype,
            scheduler=spec.pipeline.scheduler,
            revision=spec.pipeline.revision,
        )
    if not spec.pipeline.safety_checker and getattr(pipe, "safety_checker", None) is not None:
        pipe.safety_checker = None  # pipeline.safety_checker = false: diffusers then flags nothing
    return pipe


class _QuietLoading:
    """Hide diffusers' and transformers' loading bars while any audit loads its pipeline.

    The setting is process-wide, so it is guarded as ipympl guards its one global: under a
    lock, the first loader in saves and changes it, the last one out restores it; two audits
    loading in two threads never leave the bars off (or on) for the user.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._was = (True, True)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        with self._lock:
            if self._count == 0:
                self._was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
                dlog.disable_progress_bar()
                tlog.disable_progress_bar()
            self._count += 1
        try:
            yield
        finally:
            with self._lock:
                self._count -= 1
                if self._count == 0:
                    if self._was[0]:
                        dlog.enable_progress_bar()
                    if self._was[1]:
                        tlog.enable_progress_bar()


quiet_loading = _QuietLoading()
"""Hide the loading bars for a block (``with quiet_loading(): ...``); safe across threads."""
