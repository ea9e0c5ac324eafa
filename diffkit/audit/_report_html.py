"""The audit report's HTML: its stylesheet, its two templates (Jinja2, autoescaped) and the
helpers that turn figures, thumbnails and tables into HTML-safe values."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["COMPARE_HTML", "CSS", "REPORT_HTML", "fmt", "jinja_env", "png_data_uri", "table_html", "thumbnail"]


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

REPORT_HTML = """<!DOCTYPE html>
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

COMPARE_HTML = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>diffkit audit comparison</title><style>{{ css }}</style></head><body>
<h1>{{ name_b }} versus {{ name_a }}</h1>
<p>Differences are b − a. <b>Design</b>: {{ design }}.</p>
<h2>Overall</h2>{{ overall }}
<h2>Per occupation</h2><img src="{{ plot }}" alt="differences per occupation" style="max-width:100%">
<div class="scroll">{{ by_occupation }}</div>
<p class="small">The mean imbalance is bias-corrected in both runs; every interval is exact, nothing is resampled
(docs/audit_methodology.md, section 6).</p>
</body></html>"""


def jinja_env():
    """A Jinja2 environment that escapes every value and refuses undefined names."""
    import jinja2

    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=False)


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
