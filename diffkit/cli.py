"""The ``diffkit`` command line: ``diffkit demo`` and ``diffkit audit …``.

Each sub-package that has commands exposes ``add_commands(subparsers)``; this module only
wires them together.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .demo import add_commands as add_demo

    parser = argparse.ArgumentParser(
        prog="diffkit",
        description="Touch Stable Diffusion to learn how it works, and audit it for gender bias.",
    )
    parser.add_argument("--version", action="version", version=f"diffkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_demo(sub)
    from .reverse.cli import add_commands as add_reverse

    add_reverse(sub)
    try:
        from .audit.cli import add_commands as add_audit
    except ImportError:  # the audit sub-package is optional at this stage
        pass
    else:
        add_audit(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError) as e:
        print(f"diffkit {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
