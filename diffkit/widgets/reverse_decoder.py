"""The reverse-chain explorer's background decoder: every step's x_t and x̂_0 through the VAE, once.

:class:`StepDecoder` decodes a trajectory's steps in a thread of its own, the step the slider
shows first and then outwards from it, into the trajectory's own cache
(:meth:`~diffkit.reverse.Trajectory.decode`, one decode at a time), so that
``traj.preview(k, q, "exact")`` then returns at once. It changes no process-wide state (no
thread count, no torch flags: ``no_grad`` is per thread), stops between two decodes when
asked, and is stopped and waited for at interpreter exit.
"""

from __future__ import annotations

import atexit
import statistics
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from ..reverse import Trajectory

__all__ = ["DECODED", "StepDecoder", "undecoded"]

DECODED = ("x_t", "x0_hat")
"""The quantities decoded per step: the explorer's two big panels."""


def undecoded(trajectory: Trajectory) -> list[int]:
    """The recorded steps whose x_t and x̂_0 are not both decoded yet, in step order."""
    return [k for k in range(len(trajectory)) if not all(trajectory.decoded(k, q) for q in DECODED)]


_LIVE: weakref.WeakSet[StepDecoder] = weakref.WeakSet()
"""Decoders whose thread has started and not yet ended."""
_EXITING = threading.Event()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, stop every decoder and wait for its thread (a thread stopped inside
    PyTorch's C++ code by the interpreter's exit aborts the process)."""
    _EXITING.set()
    live = list(_LIVE)
    for d in live:
        d.cancel()
    for d in live:
        d.stop(120)


class StepDecoder:
    """Decodes x_t and x̂_0 of every recorded step of *trajectory* exactly, in a thread of its own.

    *shown* says which step the viewer shows now (decoded first, then its neighbours outwards);
    *on_decoded* is called from the decoder's thread after each step, with the step;
    *on_error* with an exception that stopped the decoding. :meth:`cancel` asks it to stop
    after the decode in flight; :meth:`stop` also waits for that.
    """

    def __init__(
        self,
        trajectory: Trajectory,
        *,
        shown: Callable[[], int],
        on_decoded: Callable[[int], Any],
        on_error: Callable[[BaseException], Any],
    ) -> None:
        self.trajectory = trajectory
        self._shown, self._on_decoded, self._on_error = shown, on_decoded, on_error
        self._stop = threading.Event()
        self._ended = threading.Event()  # set by the thread as its very last act
        self._thread: threading.Thread | None = None
        self.times_ms: list[float] = []
        """Milliseconds each decoded step took (its x_t and x̂_0)."""

    def start(self) -> None:
        """Start decoding (at most once); nothing starts while the interpreter exits."""
        if self._thread is not None or _EXITING.is_set():
            self._ended.set()
            return
        self._thread = threading.Thread(target=self._main, name="diffkit-reverse-decode", daemon=True)
        _LIVE.add(self)
        self._thread.start()

    @property
    def running(self) -> bool:
        """Whether the decoder's thread is still going."""
        return self._thread is not None and not self._ended.is_set()

    @property
    def stopping(self) -> bool:
        """Whether it was asked to stop (it may still be ending the decode in flight)."""
        return self._stop.is_set()

    @property
    def ms_per_step(self) -> float | None:
        """The median time to decode one step's two pictures (None before the first)."""
        return statistics.median(self.times_ms) if self.times_ms else None

    def todo(self) -> list[int]:
        """The steps not yet decoded, nearest the shown one first."""
        n = len(self.trajectory)
        shown = min(max(int(self._shown()), 0), n - 1) if n else 0
        return sorted(undecoded(self.trajectory), key=lambda k: (abs(k - shown), k))

    def cancel(self) -> None:
        """Ask the thread to stop after the decode in flight; return at once."""
        self._stop.set()

    def stop(self, timeout: float | None = 120.0) -> bool:
        """Stop after the decode in flight and wait for the thread to end; False if *timeout* passed first.

        From the decoder's own thread (a callback) it does not wait.
        """
        self._stop.set()
        if self._thread is None or self._thread is threading.current_thread():
            return True
        return self._ended.wait(timeout)  # an Event, not Thread.join: Ctrl-C in join() can corrupt the thread's state

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every step is decoded (or the decoder stopped); False if *timeout* passed first."""
        return self._thread is None or self._ended.wait(timeout)

    def _main(self) -> None:
        try:
            while not self._stop.is_set():
                left = self.todo()
                if not left:
                    return
                k = left[0]
                t0 = time.perf_counter()
                for q in DECODED:
                    if self._stop.is_set():
                        return
                    self.trajectory.decode([k], q)
                self.times_ms.append((time.perf_counter() - t0) * 1e3)
                if not self._stop.is_set():
                    self._on_decoded(k)
        except Exception as e:  # noqa: BLE001 - shown in the explorer's error panel
            self._on_error(e)
        finally:
            _LIVE.discard(self)
            self._ended.set()
