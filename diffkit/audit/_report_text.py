"""The report's words: the limitations, the sentence for the fair test, the overall metrics as
text, and the Markdown summary (everything here is computed from the metrics, nothing drawn)."""

from __future__ import annotations

import html
import platform
from typing import Any

import numpy as np
import pandas as pd

from ._intervals import format_p_value, pct
from ._overall import AuditMetrics
from ._report_figures import ci_of
from ._report_html import fmt
from ._spec_schema import AuditSpec

__all__ = [
    "display_overall",
    "fair_sentence",
    "library_versions",
    "limitations",
    "names_where",
    "overall_by_metric",
    "summary_md",
    "value_strings",
]


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
        '"corrected" away. On diffkit-tiny the pixel oracle separates the two '
        "(<code>diffkit.audit.oracle_check</code>); on a real model, look at the control thumbnails. The "
        "Rogan–Gladen correction also assumes the error rates on neutral prompts equal those on the controls.",
        "The reference (US BLS CPS Table 11) counts employed people in the United States in one year by "
        'survey-reported sex. It is not the "right" answer for an image model: it describes one country\'s '
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
    for name in (
        "diffkit",
        "torch",
        "diffusers",
        "transformers",
        "open_clip_torch",
        "accelerate",
        "numpy",
        "pandas",
        "scipy",
        "seaborn",
        "pillow",
        "jinja2",
    ):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def overall_by_metric(m: AuditMetrics) -> dict[str, pd.Series]:
    """The overall table's rows by metric name."""
    return {r["metric"]: r for _, r in m.overall.iterrows()}


def value_strings(m: AuditMetrics) -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """Per overall metric: the value with its interval as text, its n, its interval method."""
    v, n, how = {}, {}, {}
    for name, r in overall_by_metric(m).items():
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
    ov = overall_by_metric(m)
    if "fair_null_p" not in ov or not np.isfinite(ov["fair_null_p"]["value"]):
        return "No occupation has labelled images."
    alpha = 1 - ci_of(m)
    p = format_p_value(ov["fair_null_p"]["value"])
    k, g = int(ov["n_unfair_holm"]["value"]), int(ov["n_unfair_holm"]["n"])
    if ov["fair_null_p"]["value"] <= alpha:
        t = m.by_occupation
        names = ", ".join(str(o) for o in t.loc[t["p_fair_holm"] <= alpha, "occupation"])
        out = (
            f"No: {k} of {g} occupations differ significantly from parity ({names}; exact binomial tests, "
            f"Holm-adjusted), so the fair null is rejected (global p = {p}, Holm's first step)."
        )
        if ov["mean_imbalance"]["ci_low"] <= 0:
            out += (
                " The mean imbalance's interval still reaches 0: it bounds the mean over all occupations, "
                "conservatively where most sit near parity."
            )
        return out
    return (
        f"Not rejected (global p = {p}, Holm's first step): no occupation differs significantly from parity "
        "(exact binomial tests, Holm-adjusted)."
    )


def names_where(m: AuditMetrics, column: str) -> str:
    """The occupations where the boolean *column* of the per-occupation table holds, comma-separated."""
    t = m.by_occupation
    if column not in t:
        return ""
    return ", ".join(str(o) for o in t.loc[t[column].fillna(False).astype(bool), "occupation"])


def display_overall(overall: pd.DataFrame, lvl: str) -> pd.DataFrame:
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


def summary_md(spec: AuditSpec, m: AuditMetrics, meta: dict) -> str:
    """``summary.md``: the headline numbers and the per-occupation table in Markdown (user text escaped)."""
    v, n, _ = value_strings(m)
    lvl = pct(ci_of(m))

    def g(name):
        return v.get(name, "–")

    def md(x: Any) -> str:  # user text: no raw HTML, no table breaks
        return html.escape(str(x), quote=False).replace("|", "\\|").replace("`", "'")

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
