"""The ``diffkit`` command line: ``diffkit demo``, ``diffkit reverse`` and ``diffkit audit …``.

Each sub-package that has commands exposes ``add_commands(subparsers)``; this module only
wires them together and decides how a failure looks. Every failure the commands can meet
ends the same way: one line on stderr, ``diffkit <command>: error: <what happened>; fix: …``,
and exit status 2. Anything else is a bug in diffkit: its traceback is printed, then one line
asking for a report. ``--debug`` (anywhere on the line, or ``DIFFKIT_DEBUG=1``) raises every
error with its traceback. Ctrl-C prints one line and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Sequence

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "build_parser", "describe_error", "main"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import add_commands as add_demo

    parser = argparse.ArgumentParser(
        prog="diffkit",
        description="Touch Stable Diffusion to learn how it works, and audit it for gender bias.",
    )
    parser.add_argument("--version", action="version", version=f"diffkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo(sub)
    from .reverse.cli import add_commands as add_reverse

    add_reverse(sub)
    from .anatomy import add_commands as add_anatomy

    add_anatomy(sub)
    from .audit.cli import add_commands as add_audit

    add_audit(sub)
    _add_debug_everywhere(parser)
    return parser


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` after any sub-command too (``diffkit audit run spec.toml --debug``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--debug" not in child._option_string_actions:
                    child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show the full traceback of an error")
                _add_debug_everywhere(child)


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def describe_error(error: BaseException) -> str | None:
    """The one-line message for a failure the CLI explains, or ``None`` for a bug in diffkit.

    diffkit's own errors (:class:`~diffkit.errors.DiffkitError`) are shown as they are; so are
    the environment's (a full disk, a read-only folder, no memory, a missing package), with the
    fix added. Anything else is a bug: :func:`main` prints its traceback and asks for a report.
    """
    from ._files import environment_error
    from .errors import DiffkitError

    msg = _one_line(str(error)) or type(error).__name__
    if isinstance(error, DiffkitError):
        if isinstance(error, OSError) and error.errno is not None and error.strerror:
            return _one_line(error.strerror)  # the message, without "[Errno 11] "
        return msg
    if isinstance(error, OSError):
        env = environment_error(error, writing=error.filename or "a file")
        if env is not None:
            return _one_line(env.strerror or str(env))
    if isinstance(error, ModuleNotFoundError):
        return f"{msg}; fix: install it with `pip install {error.name or 'the missing package'}`"
    if isinstance(error, MemoryError):
        return "out of memory; fix: use fewer images per batch (audit.batch_size), smaller images or fewer steps"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status (0 ok, 2 a failure, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)  # importing torch can take a while: Ctrl-C here too
    except KeyboardInterrupt:
        print("\ndiffkit: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    debug = bool(getattr(args, "debug", False)) or os.environ.get("DIFFKIT_DEBUG", "") not in ("", "0")
    name = " ".join(x for x in (args.command, getattr(args, "audit_command", None)) if x)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"\ndiffkit {name}: interrupted; finished work is kept, rerun the same command to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure ends in one line unless --debug
        if debug:
            raise
        msg = describe_error(e)
        if msg is None:  # not a failure diffkit knows: a bug, shown with its traceback
            traceback.print_exception(e, file=sys.stderr)
            msg = (f"unexpected {type(e).__name__}: {_one_line(str(e))}; this is a bug in diffkit, please report "
                   "it to the diffkit developers with the traceback above (--debug raises it instead)")
        print(f"diffkit {name}: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
