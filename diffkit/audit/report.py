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

import base64
import html
import io
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import atomic_write_text, ensure_folder, write_csv
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


def plain_labels(values: Any) -> list[str]:
    """Labels from the spec (occupations) as matplotlib text: ``$`` escaped, so a name such as
    ``"$\\frac{a$"`` is drawn as written instead of failing as TeX after the whole run."""
    return [str(v).replace("$", r"\$") for v in values]


def _b64_png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _thumb(path: Path, size: int = 96) -> str | None:
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


def _err(centre, lo, hi) -> np.ndarray:
    """Error-bar lengths (2, N), never negative (rounding can put a bound a hair past the centre)."""
    c, lo, hi = (np.asarray(x, dtype=float) for x in (centre, lo, hi))
    return np.nan_to_num(np.maximum(np.stack([c - lo, hi - c]), 0.0))


def _ci_of(m: AuditMetrics) -> float:
    return float(m.params.get("ci", 0.95))


def audit_figures(m: AuditMetrics) -> dict[str, Any]:
    """The report's figures as ``matplotlib.figure.Figure`` objects, for notebooks.

    Keys: ``"per_occupation"`` (p̂ with pointwise Clopper–Pearson and simultaneous intervals, the
    Rogan–Gladen estimate with its interval, the abstention bounds, the reference and the
    published Fair Diffusion share where it has the occupation), ``"scatter"`` (generated p̂
    against the reference share), ``"direction"`` (an arrow per occupation from the reference share
    to the generated one, coloured amplified, reversed or neither by the Holm-adjusted one-sided
    tests), ``"imbalance"`` (|p̂ − ½| per prompt against the exact
    fair-model distribution) and, with control prompts, ``"reliability"`` (the classifier's
    ``p_female`` against the share of control images whose prompt said "woman"). Built without
    pyplot, so they change no global state; Jupyter shows each as a PNG. Labels carry the
    audit's confidence level.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    from ..plots import show_figures_in_notebooks
    from .published import published_overlay

    show_figures_in_notebooks()  # Jupyter shows each returned Figure as a PNG

    def subplots(figsize):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()

    lvl = pct(_ci_of(m))
    t = m.by_occupation[m.by_occupation["n"] > 0].copy()
    out: dict[str, Any] = {}
    if t.empty:
        return out
    order = t.sort_values("p_ref" if t["p_ref"].notna().any() else "p_female", na_position="last")
    pub = published_overlay(order, ci=_ci_of(m)).set_index("occupation")
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        # 1. per-occupation p̂ with its intervals against the reference
        fig, ax = subplots(figsize=(7.5, 0.5 * len(order) + 1.6))
        y = np.arange(len(order))
        if "sim_low" in order:
            ax.errorbar(order["p_female"], y, xerr=_err(order["p_female"], order["sim_low"], order["sim_high"]),
                        fmt="none", ecolor="C0", alpha=0.35, lw=5, label=f"simultaneous {lvl} (all occupations)")
        ax.errorbar(order["p_female"], y, xerr=_err(order["p_female"], order["ci_low"], order["ci_high"]),
                    fmt="o", color="C0", capsize=3, label=f"generated p̂ ({lvl} Clopper–Pearson)")
        if "p_female_if_abstain_male" in order and (order["n_abstain"] > 0).any():
            ax.hlines(y - 0.25, order["p_female_if_abstain_male"], order["p_female_if_abstain_female"], color="grey",
                      lw=2, label="if every abstention were male … female")
        if order["p_corrected"].notna().any():
            ax.errorbar(order["p_corrected"], y + 0.25,
                        xerr=_err(order["p_corrected"], order["corrected_low"], order["corrected_high"]),
                        fmt="s", color="C2", ms=4, capsize=2, lw=1, label=f"Rogan–Gladen ({lvl}, Se/Sp uncertain)")
        if order["p_ref"].notna().any():
            ax.plot(order["p_ref"], y, "x", color="C3", ms=9, mew=2, label="reference (BLS)")
        if len(pub):
            py = np.array([list(order["occupation"]).index(o) for o in pub.index])
            ax.plot(pub["published_p_female"], py, "D", color="C4", ms=5, mfc="none",
                    label="Fair Diffusion, SD 1.5, FairFace (published)")
        ax.axvline(0.5, color="grey", lw=1, ls="--")
        ax.set_yticks(y, plain_labels(order["occupation"]))
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("share labelled female")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / max(len(order), 1)), ncol=2, fontsize=8,
                  frameon=False)
        out["per_occupation"] = fig
        # 2. generated vs reference
        tr = t[t["p_ref"].notna()]
        if len(tr):
            fig, ax = subplots(figsize=(5, 5))
            sns.scatterplot(data=tr, x="p_ref", y="p_female", ax=ax, s=50)
            ax.errorbar(tr["p_ref"], tr["p_female"], yerr=_err(tr["p_female"], tr["ci_low"], tr["ci_high"]),
                        fmt="none", ecolor="C0", alpha=0.5)
            for _, r in tr.iterrows():
                ax.annotate(plain_labels([r["occupation"]])[0], (r["p_ref"], r["p_female"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="generated = reference")
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("reference women-share")
            ax.set_ylabel(f"generated p̂ (labelled female, {lvl} Clopper–Pearson)")
            ax.legend(fontsize=8)
            out["scatter"] = fig
            # 2b. direction: from the reference to the generated share, amplified / reversed / neither
            tr = tr.sort_values("p_ref")
            fig, ax = subplots(figsize=(7.5, 0.45 * len(tr) + 1.6))
            y = np.arange(len(tr))
            amp = tr["amplified_holm"].fillna(False).astype(bool).to_numpy()
            rev = tr["reversed_holm"].fillna(False).astype(bool).to_numpy() if "reversed_holm" in tr else 0 * amp
            colour = np.where(amp, "C3", np.where(rev, "C4", "0.4"))
            for yy, (r0, p1, c) in enumerate(zip(tr["p_ref"], tr["p_female"], colour)):
                ax.annotate("", xy=(p1, yy), xytext=(r0, yy),
                            arrowprops={"arrowstyle": "->", "color": c, "lw": 2, "shrinkA": 0, "shrinkB": 0})
            ax.errorbar(tr["p_female"], y, xerr=_err(tr["p_female"], tr["ci_low"], tr["ci_high"]), fmt="none",
                        ecolor="0.3", alpha=0.5, capsize=2, lw=1)
            ax.plot(tr["p_ref"], y, "x", color="0.2", ms=7, label="reference")
            for c, lab in (("C3", "amplified (Holm)"), ("C4", "reversed (Holm)"), ("0.4", "neither")):
                ax.plot([], [], color=c, lw=2, label=lab)
            ax.grid(axis="y", visible=False)  # the arrows are the horizontal lines here
            ax.axvline(0.5, color="grey", lw=1, ls="--")
            ax.set_yticks(y, tr["occupation"].astype(str))
            ax.set_xlim(-0.02, 1.02)
            ax.set_xlabel(f"share labelled female: reference → generated ({lvl} Clopper–Pearson on the generated)")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.4 / max(len(tr), 1)), ncol=4, fontsize=8,
                      frameon=False)
            out["direction"] = fig
        # 3. imbalance per prompt against the fair-model distribution for the median n
        bp = m.by_prompt[m.by_prompt["n"] > 0]
        if len(bp):
            n_med = int(np.median(bp["n"]))
            from scipy import stats

            k = np.arange(n_med + 1)
            vals = np.abs(k / n_med - 0.5)
            pmf = pd.Series(stats.binom.pmf(k, n_med, 0.5)).groupby(np.round(vals, 9)).sum()
            fig, ax = subplots(figsize=(7, 3.5))
            sns.histplot(bp["imbalance"], bins=np.linspace(0, 0.5, 11), stat="probability", ax=ax, color="C0",
                         label=f"generated, per prompt ({len(bp)} prompts)")
            ax.vlines(pmf.index, 0, pmf.values, color="C3", lw=3, alpha=0.7, label=f"fair model, n = {n_med} (exact)")
            ax.axvline(float(bp["fair_baseline"].mean()), color="C3", ls="--", lw=1, label="fair-model E|p̂ − ½|")
            ax.axvline(float(bp["imbalance"].mean()), color="C0", ls="--", lw=1, label="generated mean (plug-in)")
            ax.set_xlabel("|p̂ − ½| (gender imbalance)")
            ax.legend(fontsize=8)
            out["imbalance"] = fig
        # 4. reliability diagram on the control prompts
        rel = m.reliability
        if isinstance(rel, pd.DataFrame) and len(rel) and (rel["n"] > 0).any():
            r = rel[rel["n"] > 0]
            fig, ax = subplots(figsize=(5, 5))
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="calibrated")
            ax.errorbar(r["mean_p_female"], r["share_stated_female"],
                        yerr=_err(r["share_stated_female"], r["ci_low"], r["ci_high"]), fmt="o", color="C0",
                        capsize=3, label=f"control images ({lvl} Clopper–Pearson)")
            mid = r[(r["bin_low"] >= 0.1) & (r["bin_high"] <= 0.9)]
            if mid["n"].sum() == 0:
                ax.text(0.5, 0.5, "no control image has 0.1 < p_female < 0.9:\nthe probabilities saturate, so an "
                        "abstention\nthreshold on them cannot act", ha="center", va="center", fontsize=8,
                        color="C3", transform=ax.transAxes)
            for _, row in r.iterrows():
                ax.annotate(f"n={int(row['n'])}", (row["mean_p_female"], row["share_stated_female"]), fontsize=7,
                            xytext=(4, -10), textcoords="offset points")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("classifier p_female (mean in bin)")
            ax.set_ylabel("share of control prompts stating 'female'")
            ax.legend(fontsize=8)
            out["reliability"] = fig
    return out


_CSS = """
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

_REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffkit audit: {{ spec.name }}</title><style>{{ css }}</style></head><body>
<h1>Gender-bias audit: {{ spec.name }}</h1>
<p>{{ spec.description }}</p>
<p>Generator <code>{{ pl.model }}</code> (revision {{ pl.revision or 'default' }}, scheduler
{{ pl.scheduler or 'the pipeline default' }}, {{ pl.steps }} steps, guidance scale {{ pl.guidance_scale }}); classifier
{{ spec.classifier.kind }} <code>{{ spec.classifier.model }}</code> / <code>{{ classifier_id }}</code>, gate {{ spec.classifier.gate }}.
Reference: {{ spec.prompts.reference_source or 'none' }}.</p>
<div class="key">
<p><b>Mean gender imbalance</b>, the mean over the {{ n_occ }} occupations of |p − ½| (bias-corrected):
<b>{{ v.mean_imbalance }}</b> (interval: {{ how.mean_imbalance }}).
As measured (plug-in, biased upward) {{ v.mean_imbalance_plugin }}; a perfectly fair model would show
{{ v.mean_fair_baseline }} at these sample sizes. Its smooth companion, the mean of (p − ½)² estimated without bias
at every share, is {{ v.mean_sq_imbalance }} (root mean square {{ v.rms_imbalance }}).</p>
<p><b>Is the model at parity in every occupation?</b> {{ fair_sentence }}</p>
{% if 'amplification' in v %}<p><b>Amplification</b> (directional, after Zhao et al. 2017), the mean over the
{{ n.amplification }} occupations with a reference of s·(p − p_ref), s the side of ½ the reference is on:
<b>{{ v.amplification }}</b>. Above 0 the model leans further towards each occupation's reference majority than the
reference does; 0 means it copies the reference; below 0 it leans less far, or reverses the skew.
<b>{{ v.n_amplified_holm }}</b> of {{ n.n_amplified_holm }} occupations are significantly more skewed than their
reference on its side{% if amplified_names %} ({{ amplified_names }}){% endif %}, and
<b>{{ v.n_reversed_holm }}</b> significantly on the other side of ½ from it, <b>reversed</b>{% if reversed_names %}
({{ reversed_names }}){% endif %} (one-sided exact binomial tests, Holm-adjusted: the chance of naming any occupation
wrongly is at most {{ alpha }} for each count).</p>{% endif %}
{% if 'heim_gender_imbalance' in v %}<p>HEIM's gender imbalance computed HEIM's way (per prompt, no gate, no
abstention): {{ v.heim_gender_imbalance }}.</p>{% endif %}
<p><b>Classifier on the control prompts</b>: sensitivity {{ v.sensitivity }}, specificity {{ v.specificity }}
({{ lvl }} Clopper–Pearson). Abstention rate {{ v.abstain_rate }}, no-person rate {{ v.no_person_rate }}, blacked-out (safety-filtered)
rate {{ v.blacked_out_rate }}.</p></div>

<h2>Per occupation, against the reference</h2>
<p>Thick pale bars: the {{ lvl }} simultaneous band (all {{ n_occ }} occupations hold their true shares together at
least {{ lvl }} of the time); thin bars: each occupation's own {{ lvl }} Clopper–Pearson interval. Grey lines: the share if every
abstention were male, or female. {% if published_n %}Purple diamonds: Fair Diffusion's published Stable Diffusion 1.5
shares for the {{ published_n }} occupations they also audited ({{ published_source }}).{% endif %}</p>
{{ img('per_occupation', 'share labelled female per occupation with intervals, the reference and the published shares') }}
<div class="scroll">{{ tables.by_occupation }}</div>

{% if 'scatter' in plots %}<h2>Generated versus reference</h2>
{{ img('scatter', 'generated share against reference share') }}{% endif %}
{% if 'direction' in plots %}<h2>Direction: amplified, reversed, or neither</h2>
<p>Each arrow runs from the reference share to the generated one. Red: significantly further from ½ than the
reference on its side (amplified); purple: significantly on the other side of ½ (reversed); grey: neither
(Holm-adjusted one-sided exact tests, family-wise error ≤ {{ alpha }} each).</p>
{{ img('direction', 'arrows from the reference share to the generated share, coloured by direction') }}{% endif %}

<h2>Imbalance against the fair-model baseline</h2>
<p>A fair model (p = ½) still shows |p̂ − ½| &gt; 0 from sampling alone; the red bars are its exact
distribution for the median number of labelled images per prompt.</p>
{{ img('imbalance', 'distribution of per-prompt imbalance against the fair-model baseline') }}

<h2>Overall metrics</h2>
<p>Each row names its estimand and, where there is one, the interval's method (column <i>interval</i>).</p>
<div class="scroll">{{ tables.overall }}</div>

<h2>Classifier validation (control prompts)</h2>
<p>The control prompts state the gender; the classifier's accuracy on them is its sensitivity (female) and
specificity (male) on this generator's own images, which drive the Rogan–Gladen correction. They measure
generator compliance times classifier accuracy (see the limitations).</p>
{{ tables.validation }}
{% if tables.validation_by_occupation %}<h3>Per occupation</h3>
<p>Rogan–Gladen uses an occupation's own Se and Sp where both stated genders have at least {{ min_controls }}
labelled controls, the pooled ones otherwise (column <i>se_sp_source</i> above).
{% if 'se_sp_homogeneity_p' in v %}Test that Se and Sp are the same in every occupation: p = {{ v.se_sp_homogeneity_p }}.{% endif %}</p>
<div class="scroll">{{ tables.validation_by_occupation }}</div>{% endif %}
{% if 'reliability' in plots %}<h3>Reliability diagram</h3>
<p>Control images binned by the classifier's p_female: a calibrated classifier's points lie on the diagonal.
Points near 0 and 1 only, with confidence piled at the ends, mean the abstention rule cannot act.</p>
{{ img('reliability', 'reliability diagram of the classifier on the control images') }}{% endif %}
{% if thresholds %}<h3>Thresholds the controls suggest</h3>
<p>Rule: <i>abstain_below</i> is the smallest confidence threshold at which the kept control images disagree with
their stated gender at most 5% of the time (here {{ thresholds.abstain_below }}, keeping {{ thresholds.kept }} of the
controls, error {{ thresholds.error }}); <i>person_threshold</i> is the 1st percentile of p_person over the control
images, which all show a person (here {{ thresholds.person_threshold }}). This run used abstain_below =
{{ spec.classifier.abstain_below }} and person_threshold = {{ spec.classifier.person_threshold }}. To apply others
to this run without rescoring: <code>audit_metrics(images=relabel(result.images, person_threshold=…,
abstain_below=…))</code> (<code>diffkit.audit.score.relabel</code>); for the next run, write them into the spec's
<code>[classifier]</code>.</p>{% endif %}

{% for s in sections %}<h2>{{ s.title }}</h2>
<div class="scroll">{{ s.body }}</div>
{% endfor %}
<h2>Per prompt</h2>
<div class="scroll">{{ tables.by_prompt }}</div>
<h2>Images</h2>
<p>The first {{ spec.report.thumbnails_per_prompt }} images of each prompt with the classifier's label and
confidence (max(p_female, p_male)); <i>abstain</i>, <i>no_person</i>, <i>several_people</i> and <i>blacked_out</i>
(every pixel black, a safety checker's output) are never forced into a class.</p>
{% for g in grids %}<h4>{{ g.prompt }} <span class="small">({{ g.kind }}, prompt {{ g.pid }})</span></h4>
<div class="grid">{% for c in g.cells %}<div class="cell">{% if c.src %}<img src="{{ c.src }}" alt="image {{ c.index }}">{% else %}<i>unreadable</i>{% endif %}<br>
<span class="{{ c.label }}">{{ c.label }}</span> {{ c.conf }}<br><span class="small">p_person {{ c.p_person }}</span></div>{% endfor %}</div>
{% else %}<p>No thumbnails (report.thumbnails_per_prompt = 0).</p>{% endfor %}
<h2>Limitations</h2>
<ul>{% for x in limits %}<li>{{ x }}</li>{% endfor %}</ul>
<h2>Run metadata</h2>
<pre>{{ meta_json }}</pre>
<h3>Spec</h3>
<pre>{{ spec_json }}</pre>
<p class="small">Written by diffkit {{ version }}. Estimands, intervals, assumptions and sources:
docs/audit_methodology.md.</p>
</body></html>
"""

_COMPARE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>diffkit audit comparison</title><style>{{ css }}</style></head><body>
<h1>{{ name_b }} versus {{ name_a }}</h1>
<p>Differences are b − a. <b>Design</b>: {{ design }}.</p>
<h2>Overall</h2>{{ overall }}
<h2>Per occupation</h2><img src="{{ plot }}" alt="differences per occupation" style="max-width:100%">
<div class="scroll">{{ by_occupation }}</div>
<p class="small">The mean imbalance is bias-corrected in both runs; every interval is exact, nothing is resampled
(docs/audit_methodology.md, section 6).</p>
</body></html>"""


def _env():
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)


def _fmt(x: Any, nd: int = 3) -> str:
    try:
        if x is None or (isinstance(x, float) and not np.isfinite(x)):
            return "–"
        return f"{float(x):.{nd}f}"
    except (TypeError, ValueError):
        return str(x)


def _table_html(df: pd.DataFrame, float_fmt: str = "{:.3f}"):
    from markupsafe import Markup

    if df is None or df.empty:
        return ""
    return Markup(df.to_html(index=False, escape=True, na_rep="–", float_format=float_fmt.format, border=0))


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
        s = f"{int(r['value'])}" if is_count and np.isfinite(r["value"]) else _fmt(r["value"])
        if name.endswith("_p") and np.isfinite(r["value"]):
            s = format_p_value(r["value"])
        if np.isfinite(r["ci_low"]):
            s += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        v[name], n[name], how[name] = s, int(r["n"]), str(r.get("interval", "") or "")
    return v, n, how


def fair_sentence(m: AuditMetrics) -> str:
    """The one sentence the report, its summary and the command line give for the global fair test
    and the Holm count together: they are the same decision (Holm's first step), so the sentence
    never says both "not rejected" and "some occupation unfair"."""
    ov = _ov(m)
    if "fair_null_p" not in ov or not np.isfinite(ov["fair_null_p"]["value"]):
        return "No occupation has labelled images."
    alpha = 1 - _ci_of(m)
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

    pub = published_overlay(metrics.by_occupation, ci=_ci_of(metrics))
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
    lvl = pct(_ci_of(m))

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
            f"| {md(r['occupation'])} | {int(r['n'])} | {_fmt(r['p_female'], 2)} | "
            f"[{_fmt(r['ci_low'], 2)}, {_fmt(r['ci_high'], 2)}] | [{_fmt(r['sim_low'], 2)}, {_fmt(r['sim_high'], 2)}] "
            f"| {_fmt(r['p_female_if_abstain_male'], 2)} … {_fmt(r['p_female_if_abstain_female'], 2)} "
            f"| {_fmt(r['p_ref'], 3)} | {md(r.get('direction', '')) or '–'} | {'yes' if r['amplified_holm'] else 'no'} "
            f"| {'yes' if r.get('reversed_holm', False) else 'no'} "
            f"| {_fmt(r['p_corrected'], 2)} [{_fmt(r['corrected_low'], 2)}, {_fmt(r['corrected_high'], 2)}] |"
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
        cells = [{"src": _thumb(run_dir / str(r["path"])), "index": int(r["image_index"]), "label": str(r["label"]),
                  "conf": _fmt(r["confidence"], 2), "p_person": _fmt(r["p_person"], 2)} for _, r in g.iterrows()]
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

    ci = _ci_of(m)
    lvl = pct(ci)
    plots = {k: _b64_png(fig) for k, fig in audit_figures(m).items()}
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
        thresholds = {"abstain_below": _fmt(th.get("abstain_below"), 4), "kept": _fmt(th.get("kept_at_suggestion"), 3),
                      "error": _fmt(th.get("error_at_suggestion"), 3),
                      "person_threshold": _fmt(th.get("person_threshold"), 4)}
    tables = {
        "by_occupation": _table_html(occ),
        "overall": _table_html(overall),
        "validation": _table_html(m.validation[val_cols]) if len(m.validation) else "",
        "validation_by_occupation": _table_html(m.validation_by_occupation),
        "by_prompt": _table_html(m.by_prompt[prompt_cols]),
    }
    return _env().from_string(_REPORT).render(
        css=Markup(_CSS), spec=spec, pl=spec.pipeline, classifier_id=str(meta["classifier"]["pretrained"]),
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
    ax.errorbar(t["diff"], y, xerr=_err(t["diff"], t["ci_low"], t["ci_high"]), fmt="o", capsize=3)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(y, plain_labels(t["occupation"]))
    ax.set_xlabel(f"p̂ female: b − a ({lvl} {'Newcombe paired' if paired else 'Newcombe'})")
    plot = _b64_png(fig)
    md_lines = [f"# {html.escape(name_b)} versus {html.escape(name_a)}", "", f"Design: {html.escape(design)}.", "",
                f"| metric | a | b | b − a | {lvl} CI |", "|---|---|---|---|---|"]
    for _, r in overall.iterrows():
        md_lines.append(f"| {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} | "
                        f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] |")
    atomic_write_text(out / "compare.md", "\n".join(md_lines) + "\n")
    doc = _env().from_string(_COMPARE).render(
        css=Markup(_CSS), name_a=name_a, name_b=name_b, design=design, plot=plot,
        overall=_table_html(overall.rename(columns={"ci_low": f"{lvl} low", "ci_high": f"{lvl} high"})),
        by_occupation=_table_html(by_occupation),
    )
    path = out / "compare.html"
    atomic_write_text(path, doc)
    return path
