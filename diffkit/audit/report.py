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

import html
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import atomic_write_text, ensure_folder, write_csv
from ._report_figures import audit_figures, ci_of, error_bars, plain_labels
from ._report_html import (
    COMPARE_HTML,
    CSS,
    REPORT_HTML,
    fmt,
    jinja_env,
    png_data_uri,
    table_html,
    thumbnail,
)
from .metrics import AuditMetrics, format_p_value, pct
from .spec import AuditSpec

__all__ = ["audit_figures", "fair_sentence", "limitations", "library_versions", "write_comparison", "write_report"]


def limitations(ci: float = 0.95) -> list[str]:
    """The report's limitations section (trusted HTML: written here, no user text)."""
    lvl = pct(ci)
    return [
        "The labels are <b>perceived, binary</b> gender presentation as judged by a CLIP model from pixels. "
        "They say nothing about anyone's gender identity and leave out non-binary presentation; images "
        "the classifier is unsure about are counted as abstentions, not forced into a class, and the "
        "abstention bounds show how far they could move each share.",
        "CLIP carries its own biases (it learned from web captions). The control prompts, which state the "
        "gender, measure sensitivity and specificity on <i>this</i> generator's images. What they measure is the "
        "generator's <i>compliance</i> (did it draw a woman for \"a woman nurse\"?) times the classifier's "
        "accuracy: a generator that ignores the gender word is booked as classifier error and then "
        "\"corrected\" away. On diffkit-tiny the pixel oracle separates the two "
        "(<code>diffkit.audit.oracle_check</code>); on a real model, look at the control thumbnails. The "
        "Rogan–Gladen correction also assumes the error rates on neutral prompts equal those on the controls.",
        "The reference (US BLS CPS Table 11) counts employed people in the United States in one year by "
        "survey-reported sex. It is not the \"right\" answer for an image model: it describes one country's "
        "labour market, not how occupations should be depicted, and its titles differ from prompt words "
        "(the BLS title is shown beside each). Occupations it lacks are reported without a reference.",
        "Small samples look biased: a perfectly fair model shows E|p̂ − ½| of about 0.14 with 8 images. "
        "The headline mean imbalance is bias-corrected, and its interval holds at parity too: where occupations "
        "sit at or near ½ it is wider, by design (docs/audit_methodology.md gives its simulated coverage and "
        "width in every case tested, all at least 93%).",
        f"Intervals are {lvl}. Every share (each occupation's, the pooled share, the rates, sensitivity and "
        f"specificity) gets Clopper–Pearson's, which covers at least {lvl} for every true share, 0 and 1 included; "
        "each occupation's |p − ½| is read off it, and the simultaneous band over the G occupations is "
        f"Clopper–Pearson at level 1 − (1 − {lvl})/G. The mean imbalance has exact adaptive bounds (Laber & Murphy "
        "2011) and the amplification exact parametric ones (the occupation list held fixed, nothing resampled); "
        "Rogan–Gladen has the exact posterior carrying the control-prompt uncertainty, and differences between "
        "runs have Newcombe's. Counts of significant "
        "occupations are Holm-adjusted, and the global fair test is Holm's first step, so it rejects exactly "
        "when at least one occupation is called unfair.",
        "The published Fair Diffusion shares (Friedrich et al. 2023) are Stable Diffusion 1.5 judged by FairFace on "
        "faces found by a face detector: their protocol and classifier differ from this run's.",
    ]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a run (for the report's metadata)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("diffkit", "torch", "diffusers", "transformers", "open_clip_torch", "accelerate", "numpy",
                 "pandas", "scipy", "seaborn", "pillow", "jinja2"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _ledger_info(run_dir: Path) -> dict[str, Any]:
    from .rundir import Ledger

    with Ledger(run_dir) as led:
        rows = led.frame()
        info = {"created_at": led.meta("created_at"), "diffkit_version_at_creation": led.meta("diffkit_version"),
                "fingerprint": led.meta("fingerprint")}
    info["images_by_status"] = rows["status"].value_counts().to_dict()
    info["generation_seconds"] = float(rows["seconds"].fillna(0).sum())
    info["first_finished"] = rows["finished_at"].dropna().min() if rows["finished_at"].notna().any() else None
    info["last_finished"] = rows["finished_at"].dropna().max() if rows["finished_at"].notna().any() else None
    return info


def _ov(m: AuditMetrics) -> dict[str, pd.Series]:
    return {r["metric"]: r for _, r in m.overall.iterrows()}


def _value_strings(m: AuditMetrics) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """Per overall metric: the value with its interval as text, its n, its interval method."""
    v, n, how = {}, {}, {}
    for name, r in _ov(m).items():
        is_count = name.startswith("n_")
        s = f"{int(r['value'])}" if is_count and np.isfinite(r["value"]) else fmt(r["value"])
        if name.endswith("_p") and np.isfinite(r["value"]):
            s = format_p_value(r["value"])
        if np.isfinite(r["ci_low"]):
            s += f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        v[name], n[name], how[name] = s, int(r["n"]), str(r.get("interval", "") or "")
    return v, n, how


def fair_sentence(m: AuditMetrics) -> str:
    """The one sentence the report, its summary and the command line give for the global fair test
    and the Holm count together: they are the same decision (Holm's first step), so the sentence
    never says both "not rejected" and "some occupation unfair"."""
    ov = _ov(m)
    if "fair_null_p" not in ov or not np.isfinite(ov["fair_null_p"]["value"]):
        return "No occupation has labelled images."
    alpha = 1 - ci_of(m)
    p = format_p_value(ov["fair_null_p"]["value"])
    k, g = int(ov["n_unfair_holm"]["value"]), int(ov["n_unfair_holm"]["n"])
    if ov["fair_null_p"]["value"] <= alpha:
        t = m.by_occupation
        names = ", ".join(str(o) for o in t.loc[t["p_fair_holm"] <= alpha, "occupation"])
        out = (f"No: {k} of {g} occupations differ significantly from parity ({names}; exact binomial tests, "
               f"Holm-adjusted), so the fair null is rejected (global p = {p}, Holm's first step).")
        if ov["mean_imbalance"]["ci_low"] <= 0:
            out += (" The mean imbalance's interval still reaches 0: it bounds the mean over all occupations, "
                    "conservatively where most sit near parity.")
        return out
    return (f"Not rejected (global p = {p}, Holm's first step): no occupation differs significantly from parity "
            "(exact binomial tests, Holm-adjusted).")


def _names(m: AuditMetrics, column: str) -> str:
    t = m.by_occupation
    if column not in t:
        return ""
    return ", ".join(str(o) for o in t.loc[t[column].fillna(False).astype(bool), "occupation"])


def _display_overall(overall: pd.DataFrame, lvl: str) -> pd.DataFrame:
    """The overall table as the report shows it: counts as integers, p-values to 3 significant
    digits, everything else to 3 decimals; the interval columns named with their level."""
    def one(metric: str, x: Any) -> str:
        if x is None or not np.isfinite(x):
            return "–"
        if metric.startswith("n_"):
            return f"{int(x)}"
        if metric.endswith("_p"):
            return format_p_value(x)
        return f"{x:.3f}"

    out = overall.copy()
    for col in ("value", "ci_low", "ci_high"):
        out[col] = [one(mt, x) for mt, x in zip(out["metric"], out[col].astype(float))]
    return out.rename(columns={"ci_low": f"{lvl} low", "ci_high": f"{lvl} high"})


def write_report(
    run_dir: str | Path,
    *,
    spec: AuditSpec,
    metrics: AuditMetrics,
    out_dir: str | Path | None = None,
    classifier_id: str | None = None,
) -> Path:
    """Write ``index.html``, ``summary.md``, ``metadata.json`` and one CSV per tidy table
    into *out_dir* (default ``run_dir/report``), each atomically; return the HTML path.

    Holds the run folder's lock while writing (:func:`~diffkit.audit.rundir.run_lock`): a second
    writer is refused (:class:`~diffkit.errors.RunBusyError`), so two reports never interleave,
    and temporary files a killed writer left in ``report/`` are removed first.
    """
    from .rundir import clean_orphans, run_lock

    run_dir = Path(run_dir)
    with run_lock(run_dir, "writing the report", create=False):
        clean_orphans(run_dir)
        return _write_report(run_dir, spec, metrics, out_dir, classifier_id)


def _write_report(run_dir: Path, spec: AuditSpec, metrics: AuditMetrics, out_dir: str | Path | None,
                  classifier_id: str | None) -> Path:
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
    atomic_write_text(out / "summary.md", _summary_md(spec, metrics, meta))
    from .sections import report_sections

    sections = report_sections(spec, metrics, out)
    path = out / "index.html"
    atomic_write_text(path, _html(run_dir, spec, metrics, meta, pub, sections))
    return path


def _summary_md(spec: AuditSpec, m: AuditMetrics, meta: dict) -> str:
    v, n, _ = _value_strings(m)
    lvl = pct(ci_of(m))

    def g(name):
        return v.get(name, "–")

    def md(x: Any) -> str:  # user text: no raw HTML, no table breaks
        return html.escape(str(x)).replace("|", "\\|").replace("`", "'")

    t = m.by_occupation
    lines = [
        f"# Gender-bias audit: {md(spec.name)}",
        "",
        f"- generator: `{md(spec.pipeline.model)}` (revision {md(spec.pipeline.revision or 'default')}), "
        f"{spec.pipeline.steps} steps, guidance scale {spec.pipeline.guidance_scale}, seed {spec.seed}",
        f"- classifier: open_clip `{md(spec.classifier.model)}` / `{md(meta['classifier']['pretrained'])}`",
        f"- images: {int(t['n_images'].sum())} audit images, {int(t['n'].sum())} labelled, "
        f"abstention rate {g('abstain_rate')}, no-person rate {g('no_person_rate')}, blacked-out rate "
        f"{g('blacked_out_rate')}",
        f"- mean gender imbalance |p − ½| over occupations (bias-corrected, {lvl} interval): {g('mean_imbalance')}; "
        f"plug-in {g('mean_imbalance_plugin')} against a fair-model baseline of {g('mean_fair_baseline')}; "
        f"mean (p − ½)², unbiased: {g('mean_sq_imbalance')} (root mean square {g('rms_imbalance')})",
        f"- at parity in every occupation? {md(fair_sentence(m))}",
        f"- amplification (directional, mean s·(p − p_ref), {lvl} interval): {g('amplification')}; "
        f"significantly beyond the reference on its side (Holm): {g('n_amplified_holm')} of "
        f"{n.get('n_amplified_holm', '–')}; reversed, on the other side of ½ (Holm): {g('n_reversed_holm')} of "
        f"{n.get('n_reversed_holm', '–')}",
        f"- HEIM's gender imbalance (their way): {g('heim_gender_imbalance')}",
        f"- Pearson r with the reference: {g('pearson_r')}; Spearman ρ: {g('spearman_rho')} (descriptive)",
        f"- classifier on control prompts: sensitivity {g('sensitivity')}, specificity {g('specificity')}",
        "",
        f"| occupation | n | p̂ female | {lvl} CI | {lvl} simultaneous | abstentions → all male … all female "
        "| reference | direction | amplified (Holm) | reversed (Holm) | Rogan–Gladen |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for _, r in t.iterrows():
        lines.append(
            f"| {md(r['occupation'])} | {int(r['n'])} | {fmt(r['p_female'], 2)} | "
            f"[{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}] | [{fmt(r['sim_low'], 2)}, {fmt(r['sim_high'], 2)}] "
            f"| {fmt(r['p_female_if_abstain_male'], 2)} … {fmt(r['p_female_if_abstain_female'], 2)} "
            f"| {fmt(r['p_ref'], 3)} | {md(r.get('direction', '')) or '–'} | {'yes' if r['amplified_holm'] else 'no'} "
            f"| {'yes' if r.get('reversed_holm', False) else 'no'} "
            f"| {fmt(r['p_corrected'], 2)} [{fmt(r['corrected_low'], 2)}, {fmt(r['corrected_high'], 2)}] |"
        )
    lines += ["", "Perceived, binary labels from CLIP; see the HTML report's limitations section.", ""]
    return "\n".join(lines)


def _grids(run_dir: Path, spec: AuditSpec, m: AuditMetrics) -> list[dict]:
    k = spec.report.thumbnails_per_prompt
    if k <= 0 or m.images.empty:
        return []
    out = []
    for pid, g in m.images.sort_values(["prompt_id", "image_index"]).groupby("prompt_id", sort=True):
        g = g.head(k)
        first = g.iloc[0]
        cells = [{"src": thumbnail(run_dir / str(r["path"])), "index": int(r["image_index"]), "label": str(r["label"]),
                  "conf": fmt(r["confidence"], 2), "p_person": fmt(r["p_person"], 2)} for _, r in g.iterrows()]
        out.append({"prompt": str(first["prompt"]), "kind": "control" if first["kind"] == "control" else "audit",
                    "pid": int(pid), "cells": cells})
    return out


_OCC_COLS = ["occupation", "reference title", "n_images", "n_blacked_out", "n_no_person", "n_several_people", "n_abstain",
             "no_person_rate",
             "abstain_rate", "n", "p_female", "ci_low",
             "ci_high", "sim_low", "sim_high", "p_female_if_abstain_male", "p_female_if_abstain_female",
             "imbalance", "imbalance_corrected", "imbalance_low", "imbalance_high", "fair_baseline", "p_fair_holm",
             "p_ref", "gap", "direction", "p_beyond_ref_holm", "amplified_holm", "p_reversed_holm", "reversed_holm",
             "p_corrected", "corrected_low", "corrected_high", "se_sp_source",
             "p_female_no_abstention", "published_p_female"]


def _html(run_dir: Path, spec: AuditSpec, m: AuditMetrics, meta: dict, pub: pd.DataFrame,
          sections: list | None = None) -> str:
    from markupsafe import Markup

    ci = ci_of(m)
    lvl = pct(ci)
    plots = {k: png_data_uri(fig) for k, fig in audit_figures(m).items()}
    v, n, how = _value_strings(m)

    def img(key, alt):
        if key not in plots:
            return ""
        return Markup('<img src="{}" alt="{}" style="max-width:100%">').format(plots[key], alt)

    occ = m.by_occupation.copy()
    titles = spec.prompts.reference_titles
    if titles:
        occ.insert(1, "reference title", occ["occupation"].map(titles))
    if len(pub):
        occ = occ.merge(pub[["occupation", "published_p_female"]], on="occupation", how="left")
    occ = occ[[c for c in _OCC_COLS if c in occ.columns]]
    prompt_cols = [c for c in ["prompt_id", "prompt", "occupation", "n_images", "n_blacked_out", "n_no_person",
                               "n_several_people", "n_abstain", "n",
                               "p_female", "ci_low", "ci_high", "sim_low", "sim_high", "imbalance",
                               "fair_baseline", "p_fair_holm", "p_ref", "gap"] if c in m.by_prompt.columns]
    val_cols = ["stated_gender", "measure", "n_images", "n_no_person", "n_several_people", "n_abstain", "n_labelled",
                "n_correct",
                "accuracy", "ci_low", "ci_high"]
    overall = _display_overall(m.overall, lvl)
    th = m.thresholds or {}
    thresholds = None
    if th and np.isfinite(th.get("person_threshold", np.nan)):
        thresholds = {"abstain_below": fmt(th.get("abstain_below"), 4), "kept": fmt(th.get("kept_at_suggestion"), 3),
                      "error": fmt(th.get("error_at_suggestion"), 3),
                      "person_threshold": fmt(th.get("person_threshold"), 4)}
    tables = {
        "by_occupation": table_html(occ),
        "overall": table_html(overall),
        "validation": table_html(m.validation[val_cols]) if len(m.validation) else "",
        "validation_by_occupation": table_html(m.validation_by_occupation),
        "by_prompt": table_html(m.by_prompt[prompt_cols]),
    }
    return jinja_env().from_string(REPORT_HTML).render(
        css=Markup(CSS), spec=spec, pl=spec.pipeline, classifier_id=str(meta["classifier"]["pretrained"]),
        v=v, n=n, how=how, lvl=lvl, alpha=f"{100 * (1 - ci):.3g}%", n_occ=int((m.by_occupation["n"] > 0).sum()),
        fair_sentence=fair_sentence(m), amplified_names=_names(m, "amplified_holm"),
        reversed_names=_names(m, "reversed_holm"),
        plots=plots, img=img, tables=tables, published_n=len(pub), published_source=pub.attrs.get("source", ""),
        min_controls=m.params.get("min_controls", 20), thresholds=thresholds, grids=_grids(run_dir, spec, m),
        limits=[Markup(x) for x in limitations(ci)], meta_json=json.dumps(meta, indent=2, default=str),
        spec_json=json.dumps(spec.to_dict(), indent=2, sort_keys=True),
        version=meta["libraries"].get("diffkit", "?"), sections=sections or [],
    )


def write_comparison(
    *, by_occupation: pd.DataFrame, overall: pd.DataFrame, name_a: str, name_b: str, out_dir: str | Path,
    ci: float = 0.95,
) -> Path:
    """Write a comparison of two runs (``compare.html``, ``compare_by_occupation.csv``,
    ``compare_overall.csv``, ``compare.md``) into *out_dir*, atomically; return the HTML path.
    The design (paired by prompt and seed, or independent) is stated in every file."""
    from markupsafe import Markup
    from matplotlib.figure import Figure

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
    ax.set_xlabel(f"p̂ female: b − a ({lvl} {'Newcombe paired' if paired else 'Newcombe'})")
    plot = png_data_uri(fig)
    md_lines = [f"# {html.escape(name_b)} versus {html.escape(name_a)}", "", f"Design: {html.escape(design)}.", "",
                f"| metric | a | b | b − a | {lvl} CI |", "|---|---|---|---|---|"]
    for _, r in overall.iterrows():
        md_lines.append(f"| {r['metric']} | {fmt(r['a'])} | {fmt(r['b'])} | {fmt(r['diff'])} | "
                        f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}] |")
    atomic_write_text(out / "compare.md", "\n".join(md_lines) + "\n")
    doc = jinja_env().from_string(COMPARE_HTML).render(
        css=Markup(CSS), name_a=name_a, name_b=name_b, design=design, plot=plot,
        overall=table_html(overall.rename(columns={"ci_low": f"{lvl} low", "ci_high": f"{lvl} high"})),
        by_occupation=table_html(by_occupation),
    )
    path = out / "compare.html"
    atomic_write_text(path, doc)
    return path
