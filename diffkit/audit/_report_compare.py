"""The comparison of two runs as files: ``compare.html``, ``compare.md`` and the two CSVs."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd

from .._files import atomic_write_text, ensure_folder, write_csv
from ._intervals import pct
from ._report_figures import error_bars, plain_labels
from ._report_html import CSS, catalogue, fmt, jinja_env, png_data_uri, report_language, table_html

__all__ = ["write_comparison"]


def write_comparison(
    *,
    by_occupation: pd.DataFrame,
    overall: pd.DataFrame,
    name_a: str,
    name_b: str,
    out_dir: str | Path,
    ci: float = 0.95,
    language: str | None = None,
) -> Path:
    """Write a comparison of two runs (``compare.html``, ``compare_by_occupation.csv``,
    ``compare_overall.csv``, ``compare.md``) into *out_dir*, atomically; return the HTML path.
    The design (paired by prompt and seed, or independent) is stated in every file. The HTML and
    Markdown are in *language* (default: :func:`diffkit.get_language`); the CSVs never change with it."""
    from markupsafe import Markup
    from matplotlib.figure import Figure

    lang = report_language(language)
    _ = catalogue(lang).gettext
    out = ensure_folder(out_dir)
    design = str(overall.attrs.get("design", "unknown"))
    lvl = pct(ci)
    write_csv(by_occupation, out / "compare_by_occupation.csv")
    write_csv(overall, out / "compare_overall.csv")
    t = by_occupation.sort_values("diff")
    fig = Figure(figsize=(7, 0.45 * len(t) + 1.2))
    ax = fig.subplots()
    y = np.arange(len(t))
    paired = bool(overall.attrs.get("paired", False))
    ax.errorbar(t["diff"], y, xerr=error_bars(t["diff"], t["ci_low"], t["ci_high"]), fmt="o", capsize=3)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(y, plain_labels(t["occupation"]))
    method = _("Newcombe paired") if paired else "Newcombe"
    ax.set_xlabel(_("p̂ female: b − a ({lvl} {method})").format(lvl=lvl, method=method))
    plot = png_data_uri(fig)
    md_lines = [
        _("# {b} versus {a}").format(b=html.escape(name_b), a=html.escape(name_a)),
        "",
        _("Design: {design}.").format(design=html.escape(design)),
        "",
        _("| metric | a | b | b − a | {lvl} CI |").format(lvl=lvl),
        "|---|---|---|---|---|",
    ]
    for _i, r in overall.iterrows():
        md_lines.append(
            f"| {r['metric']} | {fmt(r['a'])} | {fmt(r['b'])} | {fmt(r['diff'])} | "
            f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] |"
        )
    atomic_write_text(out / "compare.md", "\n".join(md_lines) + "\n")
    doc = (
        jinja_env(lang)
        .get_template("compare.html.j2")
        .render(
            lang=lang,
            css=Markup(CSS),
            name_a=name_a,
            name_b=name_b,
            design=design,
            plot=plot,
            overall=table_html(
                overall.rename(
                    columns={"ci_low": _("{lvl} low").format(lvl=lvl), "ci_high": _("{lvl} high").format(lvl=lvl)}
                )
            ),
            by_occupation=table_html(by_occupation),
        )
    )
    path = out / "compare.html"
    atomic_write_text(path, doc)
    return path
