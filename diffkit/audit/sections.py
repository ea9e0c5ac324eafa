"""The report's sections on the labeller and the protocol: gate outcomes, the safety filter's
flags, judge-phrase sensitivity, the face filter's target count and a published audit replicated.

Each section is counts and shares read off the per-image table (no resampling, no tests; the
intervals of the replication table are Newcombe's, :func:`~diffkit.audit.published.replication_table`).
:func:`report_sections` returns them for the HTML report and writes each table as a CSV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import write_csv
from ._report_html import catalogue, table_html
from .score import LABELS, PASSED_GATE
from .spec import AuditSpec

__all__ = ["gate_outcomes", "phrase_set_table", "report_sections", "safety_table"]


def gate_outcomes(images: pd.DataFrame, by: str = "occupation") -> pd.DataFrame:
    """Per occupation (audit images): how many images got each label (:data:`~diffkit.audit.score.LABELS`)."""
    audit = images[images["kind"] == "audit"]
    t = pd.crosstab(audit[by], audit["label"]).reindex(columns=list(LABELS), fill_value=0)
    t.insert(0, "n_images", t.sum(axis=1))
    t = t.rename(columns={c: f"n_{c}" for c in LABELS})
    return t.reset_index()


def safety_table(images: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pipeline's ``nsfw_content_detected`` flags counted ``(per occupation, per stated gender)``.

    Per occupation over the audit images, per stated gender over the controls: ``n_images``,
    ``n_flagged``, ``flagged_rate`` (of the images with a flag), ``n_unknown`` (no flag: no safety
    checker, or a run folder from before diffkit kept them). A filter that flags one gender more often
    removes its images unevenly; the blacked-out counts of the tables above are what it replaced.
    """

    def count(frame: pd.DataFrame, by: str) -> pd.DataFrame:
        flag = frame["nsfw"] if "nsfw" in frame else pd.Series(None, index=frame.index, dtype=object)
        known = flag.notna()
        g = pd.DataFrame({by: frame[by], "known": known, "flagged": flag.where(known, False).astype(bool)})
        t = g.groupby(by, sort=False).agg(
            n_images=("known", "size"), n_known=("known", "sum"), n_flagged=("flagged", "sum")
        )
        t["flagged_rate"] = np.where(t["n_known"] > 0, t["n_flagged"] / t["n_known"].where(t["n_known"] > 0, 1), np.nan)
        t["n_unknown"] = t["n_images"] - t["n_known"]
        return t.drop(columns="n_known").reset_index()

    audit = images[images["kind"] == "audit"]
    ctrl = images[images["kind"] == "control"]
    return count(audit, "occupation"), count(ctrl, "stated_gender") if len(ctrl) else pd.DataFrame()


def phrase_set_table(images: pd.DataFrame, spec: AuditSpec) -> pd.DataFrame:
    """Per occupation, the share labelled female under the spec's own labels and under each judge-phrase
    set (HEIM's, UCE's, TIME's), over the same audit images: those the gate passed, every one read
    (no abstention), so only the phrases differ."""
    audit = images[(images["kind"] == "audit") & images["label"].isin(PASSED_GATE)]
    cols = {"spec": "p_female", **{name: f"p_female_{name}" for name in spec.classifier.phrase_sets}}
    out = audit.groupby("occupation", sort=False).size().rename("n").to_frame()
    for name, col in cols.items():
        if col in audit:
            out[f"share_female_{name}"] = (audit[col] >= 0.5).groupby(audit["occupation"], sort=False).mean()
    return out.reset_index()


def _html(df: pd.DataFrame) -> Any:
    return table_html(df)


def report_sections(spec: AuditSpec, metrics: Any, out_dir: Path, language: str = "en") -> list[dict[str, Any]]:
    """``[{"title", "body"}]`` for the HTML report (bodies are escaped HTML), in *language*; writes each
    table as a CSV (the same in every language)."""
    _ = catalogue(language).gettext
    images = metrics.images
    ci = float(metrics.params.get("ci", spec.report.ci))
    sections = [_gate_section(spec, images, out_dir, _), _safety_section(images, out_dir, _)]
    if spec.classifier.phrase_sets and "p_female" in images:
        sections.append(_phrase_section(spec, images, out_dir, _))
    if spec.replication.counts:
        sections.append(_replication_section(spec, images, out_dir, ci, _))
    return sections


def _gate_section(spec: AuditSpec, images: pd.DataFrame, out_dir: Path, _) -> dict[str, Any]:
    from markupsafe import Markup

    gate = gate_outcomes(images)
    write_csv(gate, out_dir / "gate_outcomes.csv")
    gate_how = {
        "clip": _("the CLIP judge's own person gate (one person, nobody, several people)"),
        "faces": _("the face detector {detector}'s count (0: nobody, 2 or more: several)").format(
            detector=spec.classifier.detector
        ),
        "none": _("no gate (every image is read for a gender)"),
    }[spec.classifier.gate]
    body = Markup(
        _(
            "<p>Every audit image's label. The gate is {gate}; images with nobody or several people are counted "
            "here and left out of every share.</p>"
        )
    ).format(gate=gate_how) + _html(gate)
    kept = images.attrs.get("keep_first")
    if kept:
        short = kept.get("short", {})
        body += Markup(
            _(
                "<p><b>Face filter to a target count</b> (classifier.keep_first = {n}): per prompt only the first "
                "{n} images that passed the gate, in seed order, are counted; {left_out} later images are left "
                "out, as the published protocol never generated them. {reached}</p>"
            )
        ).format(
            n=kept["n"],
            left_out=kept["left_out"],
            reached=_("{n} prompt(s) did not reach the target within audit.images_per_prompt: raise it.").format(
                n=len(short)
            )
            if short
            else _("Every prompt reached the target."),
        )
    return {"title": _("Person gate"), "body": body}


def _safety_section(images: pd.DataFrame, out_dir: Path, _) -> dict[str, Any]:
    from markupsafe import Markup

    by_occ, by_gender = safety_table(images)
    write_csv(by_occ, out_dir / "safety_by_occupation.csv")
    if len(by_gender):
        write_csv(by_gender, out_dir / "safety_by_stated_gender.csv")
    if int(by_occ["n_unknown"].sum()) == int(by_occ["n_images"].sum()):
        body = Markup(
            _(
                "<p>The pipeline gave no <code>nsfw_content_detected</code> flags (it has no safety checker, "
                "or this run folder predates diffkit keeping them).</p>"
            )
        )
    else:
        body = (
            Markup(
                _(
                    "<p>The pipeline's own <code>nsfw_content_detected</code> flag per image, as counted by "
                    "occupation (audit images) and by stated gender (controls). A safety checker replaces a "
                    "flagged image with a black one, so a filter that flags one gender more often removes its "
                    "images unevenly.</p>"
                )
            )
            + _html(by_occ)
            + (_html(by_gender) if len(by_gender) else "")
        )
    return {"title": _("Safety filter"), "body": body}


def _phrase_section(spec: AuditSpec, images: pd.DataFrame, out_dir: Path, _) -> dict[str, Any]:
    from markupsafe import Markup, escape

    t = phrase_set_table(images, spec)
    write_csv(t, out_dir / "phrase_sets.csv")
    names = ", ".join(escape(n) for n in spec.classifier.phrase_sets)
    return {
        "title": _("Judge-phrase sensitivity"),
        "body": Markup(
            _(
                "<p>The same images read with other label phrases ({names}; see diffkit.audit.spec.PHRASE_SETS): the "
                "share labelled female per occupation, every gated image read, no abstention. Where the columns "
                "differ, the phrases, not the images, moved the number.</p>"
            )
        ).format(names=names)
        + _html(t),
    }


def _replication_section(spec: AuditSpec, images: pd.DataFrame, out_dir: Path, ci: float, _) -> dict[str, Any]:
    from markupsafe import Markup

    from ._intervals import pct
    from .published import replication_table

    t = replication_table(images, spec.replication, ci=ci)
    write_csv(t, out_dir / "replication.csv")
    a = t.attrs.get("agreement", {})
    lvl = pct(ci)
    body = Markup(
        _(
            "<p>This run beside {published} ({source}). <i>diff</i> = this run − published, with Newcombe's {lvl} "
            "interval for two independent proportions (both audits' sampling error). <b>{k} of {g}</b> compared "
            "{what} are consistent (interval holds 0; a replication that differs by chance alone keeps about {lvl} "
            "of them); mean |diff| {mad}, Pearson r of the shares {r}."
        )
    ).format(
        published=spec.replication.published,
        source=spec.replication.source or _("source in the CSV"),
        lvl=lvl,
        k=a.get("n_consistent", 0),
        g=a.get("n_compared", 0),
        what=_("professions") if spec.replication.by == "prompt" else _("occupations"),
        mad=_f(a.get("mean_abs_diff")),
        r=_f(a.get("pearson_r")),
    )
    if "n_prompts" in a:
        body += Markup(
            " " + _("Image-for-image: <b>{k} of {n}</b> prompts have exactly their count of images labelled female.")
        ).format(k=a["n_prompts_exact"], n=a["n_prompts"])
    body += Markup("</p>") + _html(t)
    return {"title": _("Replication of a published audit"), "body": body}


def _f(x: Any) -> str:
    try:
        return "–" if x is None or not np.isfinite(float(x)) else f"{float(x):.3f}"
    except (TypeError, ValueError):
        return "–"
