"""The ``diffkit`` command line's argument parser, in the language diffkit speaks.

argparse takes its own words ("usage:", "options", "show this help message and exit", its
error messages) from Python's gettext domain, which has no Spanish. :class:`Parser` puts
diffkit's words in their place, from diffkit's catalogue, without touching any process-wide
gettext state: the usage prefix (:class:`HelpFormatter`), the group titles, the ``-h`` help,
and :meth:`Parser.error`, which translates argparse's English messages
(:func:`translate_argparse_message`). Like every help string of the commands, they are
translated when the parser is built, so the language at that moment applies.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, NoReturn

from .i18n import N_
from .i18n import gettext as _

__all__ = ["ARGPARSE_MESSAGES", "HelpFormatter", "Parser", "translate_argparse_message"]

ARGPARSE_MESSAGES: tuple[tuple[str, str], ...] = (
    ("argument %(argument)s: %(message)s", N_("argument {argument}: {message}")),
    ("the following arguments are required: %(arguments)s", N_("the following arguments are required: {arguments}")),
    ("unrecognized arguments: %(arguments)s", N_("unrecognized arguments: {arguments}")),
    ("invalid choice: %(value)s (choose from %(choices)s)", N_("invalid choice: {value} (choose from {choices})")),
    ("invalid %(type)s value: %(value)s", N_("invalid {type} value: {value}")),
    ("expected one argument", N_("expected one argument")),
    ("expected at least one argument", N_("expected at least one argument")),
    ("expected at most one argument", N_("expected at most one argument")),
    ("ambiguous option: %(option)s could match %(matches)s", N_("ambiguous option: {option} could match {matches}")),
    ("one of the arguments %(arguments)s is required", N_("one of the arguments {arguments} is required")),
    ("not allowed with argument %(argument)s", N_("not allowed with argument {argument}")),
    ("ignored explicit argument %(value)s", N_("ignored explicit argument {value}")),
)
"""argparse's English error messages (its ``%`` fields renamed) and diffkit's message for each."""


def _pattern(english: str) -> re.Pattern[str]:
    parts = re.split(r"%\((\w+)\)s", english)
    regex = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>.+?)" for i, p in enumerate(parts))
    return re.compile(f"^{regex}$", re.DOTALL)


_PATTERNS = [(_pattern(english), ours) for english, ours in ARGPARSE_MESSAGES]


def translate_argparse_message(message: str) -> str:
    """One of argparse's English error messages in the language diffkit speaks (as it is when
    diffkit does not know it); ``argument --x: <message>`` is translated in both of its parts."""
    for pattern, ours in _PATTERNS:
        m = pattern.match(message)
        if m is not None:
            fields = m.groupdict()
            if "message" in fields:
                fields["message"] = translate_argparse_message(fields["message"])
            return _(ours).format(**fields)
    return message


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help formatter with diffkit's ``usage:`` prefix."""

    def add_usage(self, usage: Any, actions: Any, groups: Any, prefix: str | None = None) -> None:
        super().add_usage(usage, actions, groups, _("usage: ") if prefix is None else prefix)


class Parser(argparse.ArgumentParser):
    """An argument parser that speaks diffkit's language and takes ``--debug`` anywhere.

    Every sub-command's parser is one too (``add_subparsers`` makes its parsers of the parent's
    class), so ``diffkit audit run spec.toml --debug`` works as ``diffkit --debug audit run
    spec.toml`` does, and every help page and error is translated.
    """

    def __init__(self, *args: Any, add_help: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, add_help=False, **kwargs)
        self._positionals.title = _("positional arguments")
        self._optionals.title = _("options")
        if add_help:
            self.add_argument(
                "-h", "--help", action="help", default=argparse.SUPPRESS, help=_("show this help message and exit")
            )
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help=_("show the full traceback of an error")
        )

    def error(self, message: str) -> NoReturn:
        """Print the usage and the error (translated), and exit with status 2, as argparse does."""
        self.print_usage(sys.stderr)
        text = _("{prog}: error: {message}").format(prog=self.prog, message=translate_argparse_message(message))
        self.exit(2, text + "\n")
