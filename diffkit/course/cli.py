"""``diffkit course [--out DIR]``, ``diffkit course warm`` and ``diffkit course time``: registered by
:func:`add_commands`."""

from __future__ import annotations

import argparse

from ..i18n import gettext as _

__all__ = ["add_commands"]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``course`` and its sub-commands to the ``diffkit`` parser's *subparsers*."""
    course = subparsers.add_parser(
        "course",
        help=_("write the course's student and teacher editions; `warm` fills its caches, `time` times it"),
        description=_(
            "Without a sub-command: write <out>/student/<lang>/ (answers and solutions removed, outputs "
            "cleared) and <out>/teacher/<lang>/ (the notebooks as they are, executed when an executed copy is newer), "
            "in English (en) and Spanish (es)."
        ),
    )
    course.add_argument(
        "--lang",
        dest="course_lang",
        choices=["en", "es"],
        action="append",
        metavar="{en,es}",
        help=_("write this language's editions only (repeat for both; default: both)"),
    )
    course.add_argument("--out", dest="course_out", metavar="DIR", help=_("default: the checkout's course/"))
    course.add_argument(
        "--executed", metavar="DIR", help=_("executed copies of the notebooks (default: the checkout's out/notebooks/)")
    )
    course.add_argument(
        "--notebooks", metavar="DIR", help=_("the notebooks' folder (default: the checkout's notebooks/)")
    )
    course.set_defaults(func=_write)
    sub = course.add_subparsers(dest="course_command", metavar="{warm,time}")

    warm = sub.add_parser(
        "warm",
        help=_("fill every cache the notebooks read (the audit runs), so each runs fast in class; resumes"),
    )
    warm.add_argument(
        "--out", dest="warm_out", metavar="DIR", help=_("default: diffkit.shared_out(), the checkout's out/")
    )
    warm.set_defaults(func=_warm)

    time = sub.add_parser(
        "time",
        help=_("run the notebooks in fresh kernels and print each one's and each section's seconds (Markdown)"),
        description=_(
            "Runs every notebook (or those --only names) one after another from its own folder, "
            "with the caches as they are (run `diffkit course warm` first for in-class times; --cold removes "
            "the tour's audit first, as the notebook tests do)."
        ),
    )
    time.add_argument("--only", nargs="*", default=[], metavar="NN", help=_("notebook name prefixes, e.g. 01 04"))
    time.add_argument("--cold", action="store_true", help=_("remove the tour's small audit (tour_small) first"))
    time.add_argument(
        "--executed",
        dest="time_executed",
        metavar="DIR",
        help=_(
            "read the times recorded in executed copies (e.g. out/notebooks, written by the notebook tests) "
            "instead of running the notebooks"
        ),
    )
    time.set_defaults(func=_time)


def _write(args: argparse.Namespace) -> int:
    from ..i18n import LANGUAGES
    from .editions import write_course

    languages = tuple(dict.fromkeys(args.course_lang)) if args.course_lang else LANGUAGES
    write_course(args.course_out, executed=args.executed, notebooks=args.notebooks, languages=languages)
    return 0


def _warm(args: argparse.Namespace) -> int:
    from .warm import warm_course

    warm_course(args.warm_out)
    return 0


def _time(args: argparse.Namespace) -> int:
    import shutil

    from .._files import shared_out
    from .timing import time_course

    if args.cold and not args.time_executed:
        shutil.rmtree(shared_out("audit", "tour_small"), ignore_errors=True)
    time_course(args.only, executed=args.time_executed)
    return 0
