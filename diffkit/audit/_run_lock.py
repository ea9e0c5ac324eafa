"""The run folder's lock: one writer at a time (``flock`` on ``.diffkit.lock``, which names the
holder and what it does); see :mod:`diffkit.audit.rundir`."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import RunBusyError, RunFolderError
from ._run_files import LEDGER_NAME, LOCK_NAME, make_run_dir, now

__all__ = ["run_lock"]


# The run folders this process holds the lock of, per thread: (folder, thread) -> (descriptor,
# what it is doing, innermost last). run_audit holds a folder's lock around generate_images,
# score_images and write_report, which take it again: a nested take only relabels the holder.
_HELD: dict[tuple[str, int], tuple[int, list[str]]] = {}


def _label(fd: int, doing: str) -> None:
    data = f"{os.getpid()}\t{doing}\t{now()}".encode()
    os.pwrite(fd, data, 0)  # write, then cut: a reader never sees an empty label in between
    os.ftruncate(fd, len(data))


def _alive(pid: str) -> bool:
    try:
        n = int(pid)
        if n <= 0:  # os.kill(0, 0) would ask about our own process group
            return False
        os.kill(n, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _holder(fd: int) -> str | None:
    """Who holds the lock, from the lock file: ``"pid 12345, scoring images since …"``; ``None``
    when the holder let go meanwhile and the lock is now ours (held on *fd*)."""
    import fcntl
    import time

    text = ""
    # A holder that has just taken the lock writes its label a moment later; until then the
    # file is empty (a holder clears its label when it lets go) or names a run that was
    # killed, whose pid is gone. A holder in another PID namespace (a container sharing the
    # folder) looks gone too: after a second its label is named anyway.
    for _ in range(100):
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        if text.count("\t") == 2 and _alive(text.partition("\t")[0]):
            break
        try:  # an empty label may mean the holder is letting go right now
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        return None
    pid, _, rest = text.partition("\t")
    doing, _, since = rest.partition("\t")
    return f"pid {pid or '?'}" + (f", {doing}" if doing else "") + (f" since {since}" if since else "")


@contextlib.contextmanager
def run_lock(run_dir: str | Path, doing: str = "generating images", *, create: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (``flock`` on ``.diffkit.lock``) for the block.

    Every writer takes it: generation, scoring, report writing. A second process (or thread)
    that asks while another holds it gets :class:`RunBusyError` at once, naming the holder's pid
    and what it is *doing* (``"scoring images"``) since when: two writers never work in one
    folder. The same thread may take it again inside the block (``run_audit`` holds it around
    generation, scoring and the report). The lock goes with the process: a killed run leaves
    nothing to clean up. With ``create=False`` the folder must already be a run folder
    (:class:`RunFolderError` otherwise), as scoring and reporting need.
    """
    import fcntl

    if create:
        run_dir = make_run_dir(run_dir)
    else:
        run_dir = Path(run_dir)
        if not (run_dir / LEDGER_NAME).is_file():
            raise RunFolderError(
                f"{run_dir} is not an audit run folder (it has no {LEDGER_NAME}); fix: pass the folder "
                "`diffkit audit run` wrote (e.g. out/audit/tiny_default), or run `diffkit audit run` first"
            )
    key = (str(run_dir.resolve()), threading.get_ident())
    if key in _HELD:  # this thread holds it already: say what it does now, then what it did
        fd, doing_stack = _HELD[key]
        doing_stack.append(doing)
        _label(fd, doing)
        try:
            yield
        finally:
            doing_stack.pop()
            with contextlib.suppress(OSError):
                _label(fd, doing_stack[-1])
        return
    fd = os.open(run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if holder is not None:
                raise RunBusyError(
                    errno.EWOULDBLOCK,
                    f"{run_dir} is in use by another diffkit run ({holder}); fix: wait for it to finish "
                    "and rerun the same command (a run resumes), or pass another --out folder",
                ) from None
        _label(fd, doing)
        _HELD[key] = (fd, [doing])
        try:
            yield
        finally:
            del _HELD[key]
            with contextlib.suppress(OSError):  # the next holder's waiters must not read ours
                os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing the descriptor releases the lock
