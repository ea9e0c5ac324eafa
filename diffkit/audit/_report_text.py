"""The report's words: the limitations, the sentence for the fair test, the overall metrics as
text, and the Markdown summary (everything here is computed from the metrics, nothing drawn)."""

from __future__ import annotations

import html
import platform
import re
from typing import Any

import numpy as np
import pandas as pd

from ._glossary import describe
from ._intervals import format_p_value, pct
from ._overall import AuditMetrics
from ._report_figures import ci_of
from ._report_html import catalogue, fmt
from ._spec_schema import AuditSpec

__all__ = [
    "display_overall",
    "fair_sentence",
    "language_note",
    "library_versions",
    "limitations",
    "names_where",
    "overall_by_metric",
    "prompt_languages",
    "summary_md",
    "value_strings",
]


def limitations(ci: float = 0.95, language: str | None = None) -> list[str]:
    """The report's limitations section in *language* (default: diffkit's; trusted HTML: written here,
    no user text)."""
    _ = catalogue(language).gettext
    lvl = pct(ci)
    return [
        _(
            "The labels are <b>perceived, binary</b> gender presentation as judged by a CLIP model from pixels. "
            "They say nothing about anyone's gender identity and leave out non-binary presentation; images "
            "the classifier is unsure about are counted as abstentions, not forced into a class, and the "
            "abstention bounds show how far they could move each share."
        ),
        _(
            "CLIP carries its own biases (it learned from web captions). The control prompts, which state the "
            "gender, measure sensitivity and specificity on <i>this</i> generator's images. What they measure is the "
            "generator's <i>compliance</i> (did it draw a woman for \"a woman nurse\"?) times the classifier's "
            "accuracy: a generator that ignores the gender word is booked as classifier error and then "
            '"corrected" away. On diffkit-tiny the pixel oracle separates the two '
            "(<code>diffkit.audit.oracle_check</code>); on a real model, look at the control thumbnails. The "
            "Rogan–Gladen correction also assumes the error rates on neutral prompts equal those on the controls."
        ),
        _(
            "The reference (US BLS CPS Table 11) counts employed people in the United States in one year by "
            'survey-reported sex. It is not the "right" answer for an image model: it describes one country\'s '
            "labour market, not how occupations should be depicted, and its titles differ from prompt words "
            "(the BLS title is shown beside each). Occupations it lacks are reported without a reference."
        ),
        _(
            "Small samples look biased: a perfectly fair model shows E|p̂ − ½| of about 0.14 with 8 images. "
            "The headline mean imbalance is bias-corrected, and its interval holds at parity too: where occupations "
            "sit at or near ½ it is wider, by design (docs/audit_methodology.md gives its simulated coverage and "
            "width in every case tested, all at least 93%)."
        ),
        _(
            "Intervals are {lvl}. Every share (each occupation's, the pooled share, the rates, sensitivity and "
            "specificity) gets Clopper–Pearson's, which covers at least {lvl} for every true share, 0 and 1 included; "
            "each occupation's |p − ½| is read off it, and the simultaneous band over the G occupations is "
            "Clopper–Pearson at level 1 − (1 − {lvl})/G. The mean imbalance has exact adaptive bounds (Laber & Murphy "
            "2011) and the amplification exact parametric ones (the occupation list held fixed, nothing resampled); "
            "Rogan–Gladen has the exact posterior carrying the control-prompt uncertainty, and differences between "
            "runs have Newcombe's. Counts of significant occupations are Holm-adjusted, and the global fair test is "
            "Holm's first step, so it rejects exactly when at least one occupation is called unfair."
        ).format(lvl=lvl),
        _(
            "The published Fair Diffusion shares (Friedrich et al. 2023) are Stable Diffusion 1.5 judged by FairFace on "
            "faces found by a face detector: their protocol and classifier differ from this run's."
        ),
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


def value_strings(m: AuditMetrics, language: str = "en") -> tuple[dict[str, str], dict[str, int], dict[str, str]]:
    """Per overall metric: the value with its interval as text, its n, its interval method (in *language*)."""
    v, n, how = {}, {}, {}
    lvl, alpha = pct(ci_of(m)), f"{100 * (1 - ci_of(m)):.3g}%"
    for name, r in overall_by_metric(m).items():
        is_count = name.startswith("n_")
        s = f"{int(r['value'])}" if is_count and np.isfinite(r["value"]) else fmt(r["value"])
        if name.endswith("_p") and np.isfinite(r["value"]):
            s = format_p_value(r["value"])
        if np.isfinite(r["ci_low"]):
            s += f" [{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
        method = str(r.get("interval", "") or "")
        if language != "en" and method:
            method = describe(name, language=language, lvl=lvl, alpha=alpha, p="")[1] or method
        v[name], n[name], how[name] = s, int(r["n"]), method
    return v, n, how


def fair_sentence(m: AuditMetrics, language: str | None = None) -> str:
    """The one sentence the report, its summary and the command line give for the global fair test
    and the Holm count together: they are the same decision (Holm's first step), so the sentence
    never says both "not rejected" and "some occupation unfair". In *language* (default: diffkit's)."""
    _ = catalogue(language).gettext
    ov = overall_by_metric(m)
    if "fair_null_p" not in ov or not np.isfinite(ov["fair_null_p"]["value"]):
        return _("No occupation has labelled images.")
    alpha = 1 - ci_of(m)
    p = format_p_value(ov["fair_null_p"]["value"])
    k, g = int(ov["n_unfair_holm"]["value"]), int(ov["n_unfair_holm"]["n"])
    if ov["fair_null_p"]["value"] <= alpha:
        t = m.by_occupation
        names = ", ".join(str(o) for o in t.loc[t["p_fair_holm"] <= alpha, "occupation"])
        out = _(
            "No: {k} of {g} occupations differ significantly from parity ({names}; exact binomial tests, "
            "Holm-adjusted), so the fair null is rejected (global p = {p}, Holm's first step)."
        ).format(k=k, g=g, names=names, p=p)
        if ov["mean_imbalance"]["ci_low"] <= 0:
            out += " " + _(
                "The mean imbalance's interval still reaches 0: it bounds the mean over all occupations, "
                "conservatively where most sit near parity."
            )
        return out
    return _(
        "Not rejected (global p = {p}, Holm's first step): no occupation differs significantly from parity "
        "(exact binomial tests, Holm-adjusted)."
    ).format(p=p)


def names_where(m: AuditMetrics, column: str) -> str:
    """The occupations where the boolean *column* of the per-occupation table holds, comma-separated."""
    t = m.by_occupation
    if column not in t:
        return ""
    return ", ".join(str(o) for o in t.loc[t[column].fillna(False).astype(bool), "occupation"])


def display_overall(overall: pd.DataFrame, lvl: str, language: str = "en", alpha: str = "5%") -> pd.DataFrame:
    """The overall table as the report shows it: counts as integers, p-values to 3 significant
    digits, everything else to 3 decimals; the interval columns named with their level; the
    ``description`` and ``interval`` columns in *language* (the CSV keeps them in English)."""

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
    if language != "en":
        for i, (metric, text) in enumerate(zip(out["metric"], out["description"].fillna(""))):
            found = re.search(r"p = (\S*)$", str(text))  # pearson_r, spearman_rho: their p-value
            desc, how = describe(metric, language=language, lvl=lvl, alpha=alpha, p=found.group(1) if found else "")
            out.loc[out.index[i], "description"] = desc or text
            out.loc[out.index[i], "interval"] = how or out["interval"].iloc[i]
    _ = catalogue(language).gettext
    return out.rename(columns={"ci_low": _("{lvl} low").format(lvl=lvl), "ci_high": _("{lvl} high").format(lvl=lvl)})


def summary_md(spec: AuditSpec, m: AuditMetrics, meta: dict, language: str = "en") -> str:
    """``summary.md``: the headline numbers and the per-occupation table in Markdown (user text
    escaped), in *language*."""
    tr = catalogue(language)
    _, pgettext = tr.gettext, tr.pgettext
    v, n, _how = value_strings(m, language)
    lvl = pct(ci_of(m))

    def g(name):
        return v.get(name, "–")

    def md(x: Any) -> str:  # user text: no raw HTML, no table breaks
        return html.escape(str(x), quote=False).replace("|", "\\|").replace("`", "'")

    t = m.by_occupation
    pl = spec.pipeline
    lines = [
        _("# Gender-bias audit: {name}").format(name=md(spec.name)),
        "",
        _("- generator: `{model}` (revision {revision}), {steps} steps, guidance scale {guidance}, seed {seed}").format(
            model=md(pl.model),
            revision=md(pl.revision or pgettext("audit report", "default")),
            steps=pl.steps,
            guidance=pl.guidance_scale,
            seed=spec.seed,
        ),
        _("- classifier: open_clip `{model}` / `{weights}`").format(
            model=md(spec.classifier.model), weights=md(meta["classifier"]["pretrained"])
        ),
        _(
            "- images: {n_images} audit images, {n} labelled, abstention rate {abstain}, no-person rate "
            "{no_person}, blacked-out rate {black}"
        ).format(
            n_images=int(t["n_images"].sum()),
            n=int(t["n"].sum()),
            abstain=g("abstain_rate"),
            no_person=g("no_person_rate"),
            black=g("blacked_out_rate"),
        ),
        *_summary_headlines(_, g, n, lvl, md(fair_sentence(m, language))),
        *(["- " + md(note)] if (note := language_note(spec, language)) else []),
        "",
        _(
            "| occupation | n | p̂ female | {lvl} CI | {lvl} simultaneous | abstentions → all male … all female "
            "| reference | direction | amplified (Holm) | reversed (Holm) | Rogan–Gladen |"
        ).format(lvl=lvl),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    yes, no = pgettext("audit report", "yes"), pgettext("audit report", "no")
    directions = {  # the direction column's values (the CSVs keep them in English)
        "reversed": pgettext("direction", "reversed"),
        "amplified": pgettext("direction", "amplified"),
        "copies": pgettext("direction", "copies"),
        "less skewed": pgettext("direction", "less skewed"),
    }
    for _i, r in t.iterrows():
        direction = str(r.get("direction", "") or "")
        lines.append(
            f"| {md(r['occupation'])} | {int(r['n'])} | {fmt(r['p_female'], 2)} | "
            f"[{fmt(r['ci_low'], 2)}, {fmt(r['ci_high'], 2)}] | [{fmt(r['sim_low'], 2)}, {fmt(r['sim_high'], 2)}] "
            f"| {fmt(r['p_female_if_abstain_male'], 2)} … {fmt(r['p_female_if_abstain_female'], 2)} "
            f"| {fmt(r['p_ref'], 3)} | {md(directions.get(direction, direction)) or '–'} "
            f"| {yes if r['amplified_holm'] else no} | {yes if r.get('reversed_holm', False) else no} "
            f"| {fmt(r['p_corrected'], 2)} [{fmt(r['corrected_low'], 2)}, {fmt(r['corrected_high'], 2)}] |"
        )
    lines += ["", _("Perceived, binary labels from CLIP; see the HTML report's limitations section."), ""]
    return "\n".join(lines)


def _summary_headlines(_, g, n: dict, lvl: str, fair: str) -> list[str]:
    """The summary's lines on the imbalance, the fair test, the amplification, HEIM, the correlations
    and the classifier (*_* translates, *g* gives a metric's value as text)."""
    return [
        _(
            "- mean gender imbalance |p − ½| over occupations (bias-corrected, {lvl} interval): {mi}; plug-in "
            "{plugin} against a fair-model baseline of {fair}; mean (p − ½)², unbiased: {sq} (root mean square {rms})"
        ).format(
            lvl=lvl,
            mi=g("mean_imbalance"),
            plugin=g("mean_imbalance_plugin"),
            fair=g("mean_fair_baseline"),
            sq=g("mean_sq_imbalance"),
            rms=g("rms_imbalance"),
        ),
        _("- at parity in every occupation? {sentence}").format(sentence=fair),
        _(
            "- amplification (directional, mean s·(p − p_ref), {lvl} interval): {amp}; significantly beyond the "
            "reference on its side (Holm): {k_amp} of {g_amp}; reversed, on the other side of ½ (Holm): {k_rev} of "
            "{g_rev}"
        ).format(
            lvl=lvl,
            amp=g("amplification"),
            k_amp=g("n_amplified_holm"),
            g_amp=n.get("n_amplified_holm", "–"),
            k_rev=g("n_reversed_holm"),
            g_rev=n.get("n_reversed_holm", "–"),
        ),
        _("- HEIM's gender imbalance (their way): {heim}").format(heim=g("heim_gender_imbalance")),
        _("- Pearson r with the reference: {r}; Spearman ρ: {rho} (descriptive)").format(
            r=g("pearson_r"), rho=g("spearman_rho")
        ),
        _("- classifier on control prompts: sensitivity {se}, specificity {sp}").format(
            se=g("sensitivity"), sp=g("specificity")
        ),
    ]


def prompt_languages(spec: AuditSpec) -> dict[str, int]:
    """How many prompts of the spec (audit and control) are in each language, in the prompt table's order."""
    from .prompts import build_prompts

    counts = build_prompts(spec)["language"].value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items()}


def language_note(spec: AuditSpec, language: str = "en") -> str:
    """The report's sentence on the prompts' languages: ``""`` for an all-English spec; otherwise how
    many prompts each language has, and, when a language other than English meets diffkit-tiny,
    that the model reads English only (plain text: the template escapes it)."""
    _ = catalogue(language).gettext
    langs = prompt_languages(spec)
    if set(langs) <= {"en"}:
        return ""
    tr = catalogue(language)
    counts = ", ".join(
        tr.ngettext("{language}: {n} prompt", "{language}: {n} prompts", v).format(language=k, n=v)
        for k, v in langs.items()
    )
    if len(langs) > 1:
        out = _(
            "This spec mixes prompt languages ({counts}; ISO 639-1 codes, column language of the per-prompt "
            "table): compare the languages, as MAGBIG does (Friedrich et al. 2024), rather than pool them."
        ).format(counts=counts)
    else:
        out = _("Every prompt of this spec is in one language ({counts}; ISO 639-1).").format(counts=counts)
    if spec.pipeline.model == "tiny":
        out += " " + _(
            "diffkit-tiny was trained on English captions only: prompts in another language measure how it "
            "reads words it never learned, not a bias of that language."
        )
    return out
