"""ReverseChainCompare: two reverse-chain explorers side by side on one pipeline, their step sliders linked."""

from __future__ import annotations

import os
from typing import Any

import ipywidgets as W

from ..checks import wait_or_cancel
from ..errors import InputError
from ..i18n import gettext as _
from .reverse_chain import ReverseChainExplorer

__all__ = ["ReverseChainCompare"]


class ReverseChainCompare(W.HBox):
    """Two reverse-chain explorers side by side on one pipeline, their step sliders linked.

    Give each side its own settings (different scheduler, guidance, seed or prompt), e.g.
    ``ReverseChainCompare(pipe, left=dict(scheduler="ddim"), right=dict(scheduler="euler"))``.
    """

    def __init__(self, pipe: Any = None, *, left: dict | None = None, right: dict | None = None, **common: Any):
        import inspect

        allowed = set(inspect.signature(ReverseChainExplorer.__init__).parameters) - {"self", "pipe"}
        for name, settings in (("common settings", common), ("left", left or {}), ("right", right or {})):
            if not isinstance(settings, dict):
                raise InputError(
                    _("{name}={settings!r} is not a dict; fix: pass e.g. {name}=dict(scheduler='ddim')").format(
                        name=name, settings=settings
                    )
                )
            unknown = sorted(set(settings) - allowed)
            if unknown:
                raise InputError(
                    _("{name} has the unknown setting {setting!r}; fix: use any of {allowed}").format(
                        name=name, setting=unknown[0], allowed=sorted(allowed)
                    )
                )
        if pipe is None or isinstance(pipe, (str, os.PathLike)):  # one pipeline, shared by both sides
            from ..pipeline import load_pipeline

            pipe = load_pipeline("tiny" if pipe is None else pipe)
        self.left = ReverseChainExplorer(pipe, **{**common, **(left or {})})
        self.right = ReverseChainExplorer(pipe, **{**common, **(right or {})})
        self._link = W.jslink((self.left.step, "value"), (self.right.step, "value"))
        super().__init__([self.left, self.right])

    def run(self, *, wait: bool = False) -> None:
        """Run both sides (one after the other when *wait*, else both in the background)."""
        self.left.run(wait=wait)
        self.right.run(wait=wait)

    @property
    def running(self) -> bool:
        """Whether either side's background run is going."""
        return self.left.running or self.right.running

    def cancel(self) -> None:
        """Stop both sides' background runs after the U-Net call in flight."""
        self.left.cancel()
        self.right.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until both sides' runs have ended (Ctrl-C cancels both, as in :meth:`ReverseChainExplorer.wait`)."""
        return wait_or_cancel(lambda t: self.left.wait(t) and self.right.wait(t), self.cancel, timeout)

    def close(self) -> None:
        if "error" not in self.__dict__:  # a constructor that failed: nothing was built (see Explorer.close)
            return
        self._link.close()
        self.left.close()
        self.right.close()
        super().close()
