"""The report: one self-contained HTML file, tidy CSVs and a short Markdown summary.

The HTML embeds everything (thumbnails and seaborn plots as base64 ``data:`` URIs, inline
CSS, no scripts, no external requests) so it can be mailed, attached to a paper or shown
offline. It is rendered by a jinja2 template with autoescaping on, so every user-supplied
string (prompts, names, spec values) is escaped by the template engine; tables go through
``DataFrame.to_html(escape=True)``. Every file is written atomically (a unique temporary
name, then a rename) and every CSV is spreadsheet-safe (:func:`diffkit._files.write_csv`).
Every interval label carries the spec's confidence level (``report.ci``).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import atomic_write_text, ensure_folder, write_csv
from ._report_compare import write_comparison
from ._report_figures import audit_figures, ci_of
from ._report_html import (
    CSS,
    catalogue,
    fmt,
    jinja_env,
    png_data_uri,
    report_language,
    table_html,
    thumbnail,
)
from ._report_text import (
    display_overall,
    fair_sentence,
    language_note,
    library_versions,
    limitations,
    names_where,
    summary_md,
    value_strings,
)
from .metrics import AuditMetrics, pct
from .spec import AuditSpec

__all__ = ["audit_figures", "fair_sentence", "limitations", "library_versions", "write_comparison", "write_report"]


def _ledger_info(run_dir: Path) -> dict[str, Any]:
    from .rundir import Ledger

    with Ledger(run_dir) as led:
        rows = led.frame()
        info = {
            "created_at": led.meta("created_at"),
            "diffkit_version_at_creation": led.meta("diffkit_version"),
            "fingerprint": led.meta("fingerprint"),
        }
    info["images_by_status"] = rows["status"].value_counts().to_dict()
    info["generation_seconds"] = float(rows["seconds"].fillna(0).sum())
    info["first_finished"] = rows["finished_at"].dropna().min() if rows["finished_at"].notna().any() else None
    info["last_finished"] = rows["finished_at"].dropna().max() if rows["finished_at"].notna().any() else None
    return info


def write_report(
    run_dir: str | Path,
    *,
    spec: AuditSpec,
    metrics: AuditMetrics,
    out_dir: str | Path | None = None,
    classifier_id: str | None = None,
    language: str | None = None,
) -> Path:
    """Write ``index.html``, ``summary.md``, ``metadata.json`` and one CSV per tidy table
    into *out_dir* (default ``run_dir/report``), each atomically; return the HTML path.

    ``index.html`` and ``summary.md`` are written in *language* (``"en"`` or ``"es"``; default:
    :func:`diffkit.get_language`, so ``DIFFKIT_LANG=es diffkit audit run`` writes a Spanish report);
    the CSVs and ``metadata.json`` are the same in every language.

    Holds the run folder's lock while writing (:func:`~diffkit.audit.rundir.run_lock`): a second
    writer is refused (:class:`~diffkit.errors.RunBusyError`), so two reports never interleave,
    and temporary files a killed writer left in ``report/`` are removed first.
    """
    from .rundir import clean_orphans, run_lock

    run_dir = Path(run_dir)
    lang = report_language(language)
    with run_lock(run_dir, "writing the report", create=False):
        clean_orphans(run_dir)
        return _write_report(run_dir, spec, metrics, out_dir, classifier_id, lang)


def _write_report(
    run_dir: Path,
    spec: AuditSpec,
    metrics: AuditMetrics,
    out_dir: str | Path | None,
    classifier_id: str | None,
    lang: str,
) -> Path:
    out = ensure_folder(Path(out_dir) if out_dir is not None else run_dir / "report")
    for name, df in metrics.tables().items():
        write_csv(df, out / f"{name}.csv")
    from .published import published_overlay

    pub = published_overlay(metrics.by_occupation, ci=ci_of(metrics))
    write_csv(pub, out / "published_fair_diffusion.csv")
    meta = {
        "spec_name": spec.name,
        "pipeline": spec.to_dict()["pipeline"],
        "classifier": {"model": spec.classifier.model, "pretrained": classifier_id or spec.classifier.pretrained},
        "seed": spec.seed,
        "reference_source": spec.prompts.reference_source,
        "published_overlay_source": pub.attrs.get("source") if len(pub) else None,
        "report_created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ledger": _ledger_info(run_dir),
        "libraries": library_versions(),
        "metrics_params": metrics.params,
        "suggested_thresholds": metrics.thresholds,
    }
    atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2, default=str))
    atomic_write_text(out / "summary.md", summary_md(spec, metrics, meta, lang))
    from .sections import report_sections

    sections = report_sections(spec, metrics, out, lang)
    path = out / "index.html"
    atomic_write_text(path, _html(run_dir, spec, metrics, meta, pub, sections, lang))
    return path


def _grids(run_dir: Path, spec: AuditSpec, m: AuditMetrics, lang: str = "en") -> list[dict]:
    k = spec.report.thumbnails_per_prompt
    if k <= 0 or m.images.empty:
        return []
    tr = catalogue(lang)
    _, pgettext = tr.gettext, tr.pgettext
    shown = {  # how the thumbnails' labels read (the CSVs keep the label column's values)
        "female": pgettext("perceived gender", "female"),
        "male": pgettext("perceived gender", "male"),
        "abstain": pgettext("audit label", "abstain"),
        "no_person": pgettext("audit label", "no_person"),
        "several_people": pgettext("audit label", "several_people"),
        "blacked_out": pgettext("audit label", "blacked_out"),
    }
    show_language = "language" in m.images and set(m.images["language"].dropna()) - {"en"}
    out = []
    for pid, g in m.images.sort_values(["prompt_id", "image_index"]).groupby("prompt_id", sort=True):
        g = g.head(k)
        first = g.iloc[0]
        cells = [
            {
                "src": thumbnail(run_dir / str(r["path"])),
                "index": int(r["image_index"]),
                "label": str(r["label"]),
                "shown": shown.get(str(r["label"]), str(r["label"])),
                "conf": fmt(r["confidence"], 2),
                "p_person": fmt(r["p_person"], 2),
            }
            for _i, r in g.iterrows()
        ]
        kind = pgettext("prompt kind", "control") if first["kind"] == "control" else pgettext("prompt kind", "audit")
        caption = _("{kind}, prompt {pid}").format(kind=kind, pid=int(pid))
        if show_language:
            caption += ", " + _("language {language}").format(language=first["language"])
        out.append({"prompt": str(first["prompt"]), "caption": caption, "cells": cells})
    return out


_OCC_COLS = [
    "occupation",
    "reference title",
    "n_images",
    "n_blacked_out",
    "n_no_person",
    "n_several_people",
    "n_abstain",
    "no_person_rate",
    "abstain_rate",
    "n",
    "p_female",
    "ci_low",
    "ci_high",
    "sim_low",
    "sim_high",
    "p_female_if_abstain_male",
    "p_female_if_abstain_female",
    "imbalance",
    "imbalance_corrected",
    "imbalance_low",
    "imbalance_high",
    "fair_baseline",
    "p_fair_holm",
    "p_ref",
    "gap",
    "direction",
    "p_beyond_ref_holm",
    "amplified_holm",
    "p_reversed_holm",
    "reversed_holm",
    "p_corrected",
    "corrected_low",
    "corrected_high",
    "se_sp_source",
    "p_female_no_abstention",
    "published_p_female",
]


def _html(
    run_dir: Path,
    spec: AuditSpec,
    m: AuditMetrics,
    meta: dict,
    pub: pd.DataFrame,
    sections: list | None = None,
    lang: str = "en",
) -> str:
    from markupsafe import Markup

    ci = ci_of(m)
    lvl = pct(ci)
    alpha = f"{100 * (1 - ci):.3g}%"
    plots = {k: png_data_uri(fig) for k, fig in audit_figures(m, lang).items()}
    v, n, how = value_strings(m, lang)

    def img(key, alt):
        if key not in plots:
            return ""
        return Markup('<img src="{}" alt="{}" style="max-width:100%">').format(plots[key], alt)

    return (
        jinja_env(lang)
        .get_template("report.html.j2")
        .render(
            lang=lang,
            css=Markup(CSS),
            spec=spec,
            pl=spec.pipeline,
            classifier_id=str(meta["classifier"]["pretrained"]),
            v=v,
            n=n,
            how=how,
            lvl=lvl,
            alpha=alpha,
            n_occ=int((m.by_occupation["n"] > 0).sum()),
            languages=language_note(spec, lang),
            fair_sentence=fair_sentence(m, lang),
            amplified_names=names_where(m, "amplified_holm"),
            reversed_names=names_where(m, "reversed_holm"),
            plots=plots,
            img=img,
            tables=_html_tables(spec, m, pub, lvl, lang, alpha),
            published_n=len(pub),
            published_source=pub.attrs.get("source", ""),
            min_controls=m.params.get("min_controls", 20),
            thresholds=_thresholds(m),
            grids=_grids(run_dir, spec, m, lang),
            limits=[Markup(x) for x in limitations(ci, lang)],
            meta_json=json.dumps(meta, indent=2, default=str),
            spec_json=json.dumps(spec.to_dict(), indent=2, sort_keys=True),
            version=meta["libraries"].get("diffkit", "?"),
            sections=sections or [],
        )
    )


_PROMPT_COLS = [
    "prompt_id",
    "prompt",
    "language",
    "occupation",
    "n_images",
    "n_blacked_out",
    "n_no_person",
    "n_several_people",
    "n_abstain",
    "n",
    "p_female",
    "ci_low",
    "ci_high",
    "sim_low",
    "sim_high",
    "imbalance",
    "fair_baseline",
    "p_fair_holm",
    "p_ref",
    "gap",
]
_VALIDATION_COLS = [
    "stated_gender",
    "measure",
    "n_images",
    "n_no_person",
    "n_several_people",
    "n_abstain",
    "n_labelled",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
]


def _html_tables(
    spec: AuditSpec, m: AuditMetrics, pub: pd.DataFrame, lvl: str, lang: str = "en", alpha: str = "5%"
) -> dict[str, Any]:
    """The report's tables as escaped HTML: per occupation (with the BLS title and the published
    share), overall (its descriptions in *lang*), the validation tables, per prompt (with each
    prompt's language). Column names are the CSVs'."""
    occ = m.by_occupation.copy()
    titles = spec.prompts.reference_titles
    if titles:
        occ.insert(1, "reference title", occ["occupation"].map(titles))
    if len(pub):
        occ = occ.merge(pub[["occupation", "published_p_female"]], on="occupation", how="left")
    occ = occ[[c for c in _OCC_COLS if c in occ.columns]]
    prompt_cols = [c for c in _PROMPT_COLS if c in m.by_prompt.columns]
    return {
        "by_occupation": table_html(occ),
        "overall": table_html(display_overall(m.overall, lvl, lang, alpha)),
        "validation": table_html(m.validation[_VALIDATION_COLS]) if len(m.validation) else "",
        "validation_by_occupation": table_html(m.validation_by_occupation),
        "by_prompt": table_html(m.by_prompt[prompt_cols]),
    }


def _thresholds(m: AuditMetrics) -> dict[str, str] | None:
    """The thresholds the controls suggest, as text (None when they suggest none)."""
    th = m.thresholds or {}
    if th and np.isfinite(th.get("person_threshold", np.nan)):
        return {
            "abstain_below": fmt(th.get("abstain_below"), 4),
            "kept": fmt(th.get("kept_at_suggestion"), 3),
            "error": fmt(th.get("error_at_suggestion"), 3),
            "person_threshold": fmt(th.get("person_threshold"), 4),
        }
    return None
