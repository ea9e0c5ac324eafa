"""The audit report's HTML: its stylesheet, the Jinja2 environment that renders its templates
(``templates/*.html.j2``: autoescaped, every sentence through the gettext catalogue of the report's
language) and the helpers that turn figures, thumbnails and tables into HTML-safe values."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "CSS",
    "TEMPLATES_DIR",
    "catalogue",
    "fmt",
    "jinja_env",
    "png_data_uri",
    "report_language",
    "table_html",
    "thumbnail",
]

#: The report's Jinja2 templates (package data: ``**/templates/*.j2``, extracted by ``make i18n``).
TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .45em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0 1em}.cell{text-align:center;font-size:.72em;width:100px}
.cell img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc}
.female{color:#a0306a}.male{color:#2a5db0}.abstain,.no_person,.several_people,.blacked_out{color:#777}
.key{background:#f7f7f7;border-left:4px solid #4a7;padding:.5em 1em}code,pre{background:#f4f4f4;font-size:.85em}
pre{padding:.6em;overflow:auto;max-height:24em}.small{font-size:.8em;color:#555}.scroll{overflow-x:auto}
"""


def report_language(language: str | None) -> str:
    """The language a report is written in: *language*, or the one diffkit speaks now
    (:func:`diffkit.get_language`: ``set_language``, ``DIFFKIT_LANG``, the locale). An unknown one
    is an :class:`~diffkit.errors.InputError` naming the languages diffkit has."""
    from .. import i18n

    if language is None:
        return i18n.get_language()
    code = str(language).strip().lower().replace("_", "-").split("-")[0]
    if code not in i18n.LANGUAGES:
        from ..errors import InputError

        raise InputError(
            i18n.gettext('the report is written in {languages}, not {language!r}; fix: language="es" or "en"').format(
                languages=", ".join(i18n.LANGUAGES), language=language
            )
        )
    return code


def catalogue(language: str | None):
    """The gettext catalogue of *language* (:func:`diffkit.i18n.translations`; English is the identity)."""
    from .. import i18n

    return i18n.translations(report_language(language))


def jinja_env(language: str | None = "en"):
    """A Jinja2 environment that escapes every value, refuses undefined names, loads the report's
    templates and translates them into *language* (``jinja2.ext.i18n``, new-style gettext, blocks
    trimmed: the options ``babel.cfg`` extracts them with)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_translations(catalogue(language), newstyle=True)
    return env


def fmt(x: Any, nd: int = 3) -> str:
    """*x* to *nd* decimals; ``–`` for None, NaN and inf; non-numbers as text."""
    try:
        if x is None or (isinstance(x, float) and not np.isfinite(x)):
            return "–"
        return f"{float(x):.{nd}f}"
    except (TypeError, ValueError):
        return str(x)


def table_html(df: pd.DataFrame, float_fmt: str = "{:.3f}"):
    """*df* as an escaped HTML table (markup-safe); ``""`` for an empty one."""
    from markupsafe import Markup

    if df is None or df.empty:
        return ""
    return Markup(df.to_html(index=False, escape=True, na_rep="–", float_format=float_fmt.format, border=0))


def png_data_uri(fig: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail(path: Path, size: int = 96) -> str | None:
    """The image at *path* shrunk to fit *size*, as a data URI; None if it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            fmt = "PNG" if max(im.size) <= 128 and path.stat().st_size < 200_000 else "JPEG"
            im.save(buf, format=fmt, **({"quality": 80} if fmt == "JPEG" else {}))
    except OSError:
        return None
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()
