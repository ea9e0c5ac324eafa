"""The ``diffkit`` command line: ``diffkit demo``, ``diffkit reverse`` and ``diffkit audit …``.

Each sub-package that has commands exposes ``add_commands(subparsers)``; this module only
wires them together and decides how a failure looks. Every failure the commands can meet
ends the same way: one line on stderr, ``diffkit <command>: error: <what happened>; fix: …``,
and exit status 2. ``--debug`` (anywhere on the line, or ``DIFFKIT_DEBUG=1``) shows the
traceback instead. Ctrl-C prints one line and exits with 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sqlite3
import sys
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
    """The one-line message for a failure the CLI knows, or ``None`` for an unexpected one (a bug).

    diffkit's own errors (:class:`~diffkit.errors.DiffkitError`, and the ``ValueError``,
    ``OSError`` and ``LookupError`` diffkit raises with a fix in their message) are shown as
    they are. A damaged SQLite file and a missing optional package get a fix added.
    """
    from .errors import DiffkitError

    msg = _one_line(str(error)) or type(error).__name__
    if isinstance(error, DiffkitError):
        if isinstance(error, OSError) and error.errno is not None and error.strerror:
            return _one_line(error.strerror)  # the message, without "[Errno 11] "
        return msg
    if isinstance(error, sqlite3.DatabaseError):
        return f"a run folder's ledger is damaged ({msg}); fix: pass a new --out folder, or move the old one aside"
    if isinstance(error, ModuleNotFoundError):
        return f"{msg}; fix: install it with `pip install {error.name or 'the missing package'}`"
    if isinstance(error, MemoryError):
        return "out of memory; fix: use fewer images per batch (audit.batch_size), smaller images or fewer steps"
    if isinstance(error, (ValueError, OSError, LookupError, TypeError)):
        if isinstance(error, OSError) and error.filename and str(error.filename) not in msg:
            msg = f"{msg}: {error.filename}"
        return msg
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
        if msg is None:
            msg = (f"unexpected {type(e).__name__}: {_one_line(str(e))}; fix: rerun with --debug for the "
                   "traceback and report it as a diffkit bug")
        print(f"diffkit {name}: error: {msg}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
