"""diffkit's languages: English (the source) and Spanish (``es``), from gettext catalogues.

Which language diffkit speaks (labels of the explorers, ``diffkit --help``, errors shown to users,
the audit report) is decided at the moment a message is shown, in this order:

1. :func:`set_language` (``diffkit.set_language("es")``), when it was called;
2. the environment variable ``DIFFKIT_LANG`` (``DIFFKIT_LANG=es diffkit audit run …``);
3. the locale: ``LC_ALL``, ``LC_MESSAGES``, ``LANG``, then ``LANGUAGE`` (``es_ES.UTF-8`` → ``es``);
4. English.

A language diffkit has no catalogue for falls back to English. The catalogues are
``diffkit/locale/<lang>/LC_MESSAGES/diffkit.po``, compiled to ``.mo`` files that ship in the
wheel; ``make i18n`` extracts the messages (``pybabel extract``), updates the catalogues and
compiles them (see ``docs/howto/translate.md``).

Files written for machines (CSV, JSON, the ledger) never depend on the language: only what a
person reads does.
"""

from __future__ import annotations

import functools
import gettext as _gettext
import os
from pathlib import Path

__all__ = [
    "DOMAIN",
    "ENVIRONMENT",
    "LANGUAGES",
    "LOCALE_DIR",
    "N_",
    "get_language",
    "gettext",
    "ngettext",
    "set_language",
    "translations",
]

#: The languages diffkit speaks, the source language first.
LANGUAGES: tuple[str, ...] = ("en", "es")
#: The environment variables that choose the language when set_language was not called, in order.
ENVIRONMENT: tuple[str, ...] = ("DIFFKIT_LANG", "LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")
#: The gettext domain of diffkit's catalogues.
DOMAIN = "diffkit"
#: Where the compiled catalogues live (inside the package, so the wheel carries them).
LOCALE_DIR = Path(__file__).resolve().parent / "locale"

_chosen: str | None = None


def _normalise(value: str | None) -> str | None:
    """``"es_ES.UTF-8"`` → ``"es"``; ``"C"``/``"POSIX"``/empty → ``None``."""
    if not value:
        return None
    code = value.split(":")[0].split(".")[0].split("@")[0].replace("-", "_").split("_")[0].lower()
    return None if code in ("", "c", "posix") else code


def set_language(language: str | None) -> str:
    """Make diffkit speak *language* (``"en"`` or ``"es"``) from now on, in this process.

    ``None`` goes back to the environment (``DIFFKIT_LANG``, then the locale). Returns the
    language now in use. An unknown language is an error that lists the ones diffkit has.
    """
    global _chosen
    if language is None:
        _chosen = None
        return get_language()
    code = _normalise(str(language))
    if code not in LANGUAGES:
        from .errors import InputError

        raise InputError(
            gettext(
                'diffkit speaks {languages}, not {language!r}; fix: set_language("es") or set_language("en")'
            ).format(languages=", ".join(LANGUAGES), language=language)
        )
    _chosen = code
    return code


def get_language() -> str:
    """The language diffkit speaks now (see the module's doc for the order it is decided in)."""
    if _chosen is not None:
        return _chosen
    for var in ENVIRONMENT:
        code = _normalise(os.environ.get(var))
        if code is not None:
            return code if code in LANGUAGES else "en"
    return "en"


@functools.cache
def translations(language: str | None = None) -> _gettext.NullTranslations:
    """The catalogue of *language* (default: :func:`get_language`); English is the identity.

    Use it to render in one language whatever the process speaks, e.g. a report in Spanish
    (``translations("es").gettext``), or with jinja2's ``install_gettext_translations``.
    """
    if language is None:
        return translations(get_language())
    if language == "en" or language not in LANGUAGES:
        return _gettext.NullTranslations()
    return _gettext.translation(DOMAIN, localedir=str(LOCALE_DIR), languages=[language])


def gettext(message: str) -> str:
    """*message* in the language diffkit speaks now (the English source when it has no translation)."""
    return translations(get_language()).gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form of a message for *n*, in the language diffkit speaks now."""
    return translations(get_language()).ngettext(singular, plural, n)


def N_(message: str) -> str:
    """Mark *message* for translation without translating it now (module constants): translate it
    with :func:`gettext` where it is shown."""
    return message
