"""The ``diffkit`` command line: ``diffkit demo``, ``diffkit unet``, ``diffkit reverse``, ``diffkit audit …``
and ``diffkit course …``.

``demo`` and ``unet`` are defined here; the sub-packages with commands of their own expose
``add_commands(subparsers)`` (``diffkit.reverse.cli``, ``diffkit.audit.cli``, ``diffkit.course.cli``). This module wires
them together and decides how a failure looks. Every failure the commands can meet
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
from typing import Any

from .cli_parser import Parser
from .i18n import N_
from .i18n import gettext as _

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "build_parser", "describe_error", "main"]

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
#: ``diffkit unet``'s printed header (the CSV keeps the column names).
_UNET_HEADER = {
    "order": N_("order"),
    "part": N_("part"),
    "stage": N_("stage"),
    "input": N_("input"),
    "output": N_("output"),
    "resolution": N_("resolution"),
    "channels": N_("channels"),
    "enters": N_("enters"),
    "skip_from": N_("skip_from"),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``diffkit`` parser, its help in the language diffkit speaks now (:mod:`diffkit.cli_parser`)."""
    from . import __version__
    from .audit.cli import add_commands as add_audit
    from .course.cli import add_commands as add_course
    from .reverse.cli import add_commands as add_reverse

    parser = Parser(
        prog="diffkit",
        description=_("Touch Stable Diffusion to learn how it works, and audit it for gender bias."),
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"diffkit {__version__}",
        help=_("show program's version number and exit"),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar=_("COMMAND"))
    _add_demo(sub)
    add_reverse(sub)
    _add_unet(sub)
    add_audit(sub)
    add_course(sub)
    return parser


def _add_demo(sub: Any) -> None:
    """``diffkit demo``: the tour's figures, a diffkit-tiny grid and the embedded audit (:func:`diffkit.demo.run_demo`)."""
    p = sub.add_parser("demo", help=_("write the tour's figures for the embedded defaults to a folder"))
    p.add_argument(
        "--out",
        help=_(
            "folder to write into (default: the checkout's out/demo whatever the working folder, "
            "else out/demo under it; see diffkit.demo.default_demo_out)"
        ),
    )
    p.add_argument(
        "--no-model",
        action="store_true",
        help=_("only the forward-chain figures (skip diffkit-tiny and the audit)"),
    )

    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        from .demo import default_demo_out, run_demo

        out = Path(args.out) if args.out else default_demo_out()
        run_demo(out, with_model=not args.no_model)
        print(_("demo written to {path}").format(path=out.resolve()))
        return 0

    p.set_defaults(func=run)


def _add_unet(sub: Any) -> None:
    """``diffkit unet``: a pipeline's U-Net part by part (:func:`diffkit.unet_anatomy`), its table and plot saved."""
    p = sub.add_parser("unet", help=_("open a U-Net up: its parts in call order, with the shapes read by hooks"))
    p.add_argument("--model", default="tiny", help=_("'tiny' (default), a hub id, or a pipeline folder"))
    p.add_argument("--prompt", default="a red circle", help=_("the text of the call (its length sets the text shape)"))
    p.add_argument("--out", default="out/unet", help=_("folder for unet_anatomy.csv and .png (default: out/unet)"))

    def run(args: argparse.Namespace) -> int:
        from pathlib import Path

        import pandas as pd

        from ._files import ensure_folder, save_figure, write_csv
        from .anatomy import unet_anatomy
        from .pipeline import load_pipeline
        from .plots import plot_unet_anatomy

        out = ensure_folder(Path(args.out))  # fails here, before the model loads, on a bad folder
        df = unet_anatomy(load_pipeline(args.model), args.prompt)
        with pd.option_context("display.width", 200, "display.max_colwidth", 80):
            shown = df.drop(columns=["kind"])
            print(shown.rename(columns={c: _(_UNET_HEADER.get(c, c)) for c in shown.columns}).to_string(index=False))
        print(
            _("timestep {timestep:g}, text {text}, time embedding {embedding}").format(
                timestep=df.attrs["timestep"], text=df.attrs["text"], embedding=df.attrs["time_embedding"]
            )
        )
        write_csv(df.assign(input=df.input.astype(str), output=df.output.astype(str)), out / "unet_anatomy.csv")
        save_figure(plot_unet_anatomy(df), out / "unet_anatomy.png")
        print(_("wrote {csv} and {png}").format(csv=out / "unet_anatomy.csv", png=out / "unet_anatomy.png"))
        return 0

    p.set_defaults(func=run)


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
        env = environment_error(error, writing=error.filename or _("a file"))
        if env is not None:
            return _one_line(env.strerror or str(env))
    if isinstance(error, ModuleNotFoundError):
        package = error.name or _("the missing package")
        return _("{message}; fix: install it with `pip install {package}`").format(message=msg, package=package)
    if isinstance(error, MemoryError):
        return _("out of memory; fix: use fewer images per batch (audit.batch_size), smaller images or fewer steps")
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return its exit status (0 ok, 2 a failure, 130 interrupted)."""
    try:
        args = build_parser().parse_args(argv)  # importing torch can take a while: Ctrl-C here too
    except KeyboardInterrupt:
        print("\n" + _("diffkit: interrupted"), file=sys.stderr)
        return EXIT_INTERRUPTED
    debug = bool(getattr(args, "debug", False)) or os.environ.get("DIFFKIT_DEBUG", "") not in ("", "0")
    sub = getattr(args, "audit_command", None) or getattr(args, "course_command", None)
    name = " ".join(x for x in (args.command, sub) if x)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        text = _("diffkit {command}: interrupted; finished work is kept, rerun the same command to resume")
        print("\n" + text.format(command=name), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - every failure ends in one line unless --debug
        if debug:
            raise
        msg = describe_error(e)
        if msg is None:  # not a failure diffkit knows: a bug, shown with its traceback
            traceback.print_exception(e, file=sys.stderr)
            msg = _(
                "unexpected {error_type}: {message}; this is a bug in diffkit, please report "
                "it to the diffkit developers with the traceback above (--debug raises it instead)"
            ).format(error_type=type(e).__name__, message=_one_line(str(e)))
        print(_("diffkit {command}: error: {message}").format(command=name, message=msg), file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
