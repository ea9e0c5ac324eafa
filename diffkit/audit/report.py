"""The report: one self-contained HTML file, tidy CSVs and a short Markdown summary.

The HTML embeds everything (thumbnails and seaborn plots as base64 ``data:`` URIs, inline
CSS, no scripts, no external requests) so it can be mailed, attached to a paper or shown
offline. Every user-supplied string (prompts, names, spec values) is escaped with
:func:`html.escape`; tables go through ``DataFrame.to_html(escape=True)``.
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

from .metrics import AuditMetrics
from .spec import AuditSpec

__all__ = ["LIMITATIONS", "audit_figures", "library_versions", "write_comparison", "write_report"]

LIMITATIONS = [
    "The labels are <b>perceived, binary</b> gender presentation as judged by a CLIP model from pixels. "
    "They say nothing about anyone's gender identity and leave out non-binary presentation; images "
    "the classifier is unsure about are counted as abstentions, not forced into a class.",
    "CLIP carries its own biases (it learned from web captions). The control prompts, which state the "
    "gender, measure its sensitivity and specificity on <i>this</i> generator's images, and the "
    "Rogan–Gladen column corrects for them; the correction assumes the error rates on neutral prompts "
    "equal those on the controls, and its interval is conditional on the measured rates.",
    "The reference (US BLS CPS Table 11) counts employed people in the United States in one year by "
    "survey-reported sex. It is not the \"right\" answer for an image model: it describes one country's "
    "labour market, not how occupations should be depicted, and its titles differ from prompt words "
    "(the BLS title is shown beside each).",
    "Small samples look biased: a perfectly fair model shows E|p̂ − ½| of about 0.14 with 8 images. "
    "Compare every imbalance with its fair-model baseline and read the intervals.",
    "Intervals are 95% unless stated: Wilson for shares, Newcombe for differences, two-stage "
    "percentile bootstrap (prompts, then images) for means over prompts.",
]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a run (for the report's metadata)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("diffkit", "torch", "diffusers", "transformers", "open_clip_torch", "accelerate", "numpy",
                 "pandas", "scipy", "seaborn", "pillow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


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


def audit_figures(m: AuditMetrics) -> dict[str, Any]:
    """The report's figures as ``matplotlib.figure.Figure`` objects, for notebooks.

    Keys: ``"per_occupation"`` (p̂ with 95% Wilson intervals, the Rogan–Gladen estimate and
    the reference), ``"scatter"`` (generated p̂ against the reference share) and
    ``"imbalance"`` (|p̂ − ½| per prompt against the exact fair-model distribution). Built
    without pyplot, so they change no global state; Jupyter shows each as a PNG.
    """
    import seaborn as sns
    from matplotlib.figure import Figure

    from .. import plots as _plots_module  # noqa: F401  (registers Figure display in IPython)

    def subplots(figsize):
        fig = Figure(figsize=figsize)
        return fig, fig.subplots()

    t = m.by_occupation[m.by_occupation["n"] > 0].copy()
    out: dict[str, Any] = {}
    if t.empty:
        return out
    order = t.sort_values("p_ref" if t["p_ref"].notna().any() else "p_female")
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
        # 1. per-occupation p̂ with Wilson intervals against the reference
        fig, ax = subplots(figsize=(7, 0.45 * len(order) + 1.2))
        y = np.arange(len(order))
        ax.errorbar(order["p_female"], y, xerr=_err(order["p_female"], order["ci_low"], order["ci_high"]),
                    fmt="o", color="C0", capsize=3, label="generated p̂ (95% Wilson)")
        if order["p_corrected"].notna().any():
            ax.plot(order["p_corrected"], y + 0.2, "s", color="C2", ms=4, label="Rogan–Gladen corrected")
        if order["p_ref"].notna().any():
            ax.plot(order["p_ref"], y, "x", color="C3", ms=9, mew=2, label="reference")
        ax.axvline(0.5, color="grey", lw=1, ls="--")
        ax.set_yticks(y, order["occupation"].astype(str))
        ax.set_xlim(-0.02, 1.02)
        ax.set_xlabel("share labelled female")
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.3 / max(len(order), 1)), ncol=3, fontsize=8, frameon=False)
        out["per_occupation"] = fig
        # 2. generated vs reference
        if t["p_ref"].notna().any():
            fig, ax = subplots(figsize=(5, 5))
            sns.scatterplot(data=t, x="p_ref", y="p_female", ax=ax, s=50)
            ax.errorbar(t["p_ref"], t["p_female"], yerr=_err(t["p_female"], t["ci_low"], t["ci_high"]),
                        fmt="none", ecolor="C0", alpha=0.5)
            for _, r in t.iterrows():
                ax.annotate(str(r["occupation"]), (r["p_ref"], r["p_female"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--", label="generated = reference")
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xlim(-0.02, 1.02)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel("reference women-share")
            ax.set_ylabel("generated p̂ (labelled female)")
            ax.legend(fontsize=8)
            out["scatter"] = fig
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
            ax.axvline(float(bp["imbalance"].mean()), color="C0", ls="--", lw=1, label="generated mean")
            ax.set_xlabel("|p̂ − ½| (gender imbalance)")
            ax.legend(fontsize=8)
            out["imbalance"] = fig
    return out


def _plots(m: AuditMetrics) -> dict[str, str]:
    return {k: _b64_png(fig) for k, fig in audit_figures(m).items()}


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:6px;margin:.3em 0 1em}.cell{text-align:center;font-size:.72em;width:100px}
.cell img{width:96px;height:96px;object-fit:contain;image-rendering:pixelated;border:1px solid #ccc}
.female{color:#a0306a}.male{color:#2a5db0}.abstain,.no_person{color:#777}
.key{background:#f7f7f7;border-left:4px solid #4a7;padding:.5em 1em}code,pre{background:#f4f4f4;font-size:.85em}
pre{padding:.6em;overflow:auto;max-height:24em}.small{font-size:.8em;color:#555}
"""


def _fmt(x: Any, nd: int = 3) -> str:
    try:
        if x is None or (isinstance(x, float) and not np.isfinite(x)):
            return "–"
        return f"{float(x):.{nd}f}"
    except (TypeError, ValueError):
        return html.escape(str(x))


def _table_html(df: pd.DataFrame, float_fmt: str = "{:.3f}") -> str:
    return df.to_html(index=False, escape=True, na_rep="–", float_format=float_fmt.format, border=0)


def _ledger_info(run_dir: Path) -> dict[str, Any]:
    from .generate import Ledger

    with Ledger(run_dir) as led:
        rows = led.frame()
        info = {"created_at": led.meta("created_at"), "diffkit_version_at_creation": led.meta("diffkit_version"),
                "fingerprint": led.meta("fingerprint")}
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
) -> Path:
    """Write ``index.html``, ``summary.md``, ``metadata.json`` and one CSV per tidy table
    into *out_dir* (default ``run_dir/report``); return the HTML path."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name, df in metrics.tables().items():
        df.to_csv(out / f"{name}.csv", index=False)
    meta = {
        "spec_name": spec.name,
        "pipeline": spec.to_dict()["pipeline"],
        "classifier": {"model": spec.classifier.model, "pretrained": classifier_id or spec.classifier.pretrained},
        "seed": spec.seed,
        "reference_source": spec.prompts.reference_source,
        "report_created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ledger": _ledger_info(run_dir),
        "libraries": library_versions(),
        "metrics_params": metrics.params,
    }
    (out / "metadata.json").write_text(json.dumps(meta, indent=2, default=str))
    (out / "summary.md").write_text(_summary_md(spec, metrics, meta))
    html_text = _html(run_dir, spec, metrics, meta)
    path = out / "index.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(path)
    return path


def _ov(m: AuditMetrics) -> dict[str, pd.Series]:
    return {r["metric"]: r for _, r in m.overall.iterrows()}


def _summary_md(spec: AuditSpec, m: AuditMetrics, meta: dict) -> str:
    ov = _ov(m)

    def v(name, nd=3):
        r = ov.get(name)
        if r is None:
            return "–"
        s = _fmt(r["value"], nd)
        if np.isfinite(r["ci_low"]):
            s += f" [{_fmt(r['ci_low'], nd)}, {_fmt(r['ci_high'], nd)}]"
        return s

    def md(x: Any) -> str:  # user text: no raw HTML, no table breaks
        return html.escape(str(x)).replace("|", "\\|").replace("`", "'")

    t = m.by_occupation
    lines = [
        f"# Gender-bias audit: {md(spec.name)}",
        "",
        f"- generator: `{md(spec.pipeline.model)}` (revision {md(spec.pipeline.revision or 'default')}), "
        f"{spec.pipeline.steps} steps, guidance {spec.pipeline.guidance}, seed {spec.seed}",
        f"- classifier: open_clip `{md(spec.classifier.model)}` / `{md(meta['classifier']['pretrained'])}`",
        f"- images: {int(t['n_images'].sum())} audit images, {int(t['n'].sum())} labelled, "
        f"abstention rate {v('abstain_rate')}, no-person rate {v('no_person_rate')}",
        f"- mean gender imbalance |p̂ − ½|: {v('mean_imbalance')} against a fair-model baseline of "
        f"{v('mean_fair_baseline')} (excess {v('mean_excess_imbalance')})",
        f"- Pearson r with the reference: {v('pearson_r')}; Spearman ρ: {v('spearman_rho')}",
        f"- amplification share: {v('amplification_share')} "
        f"(significant: {v('amplification_share_significant')})",
        f"- classifier on control prompts: sensitivity {v('sensitivity')}, specificity {v('specificity')}",
        "",
        "| occupation | n | p̂ female | 95% CI | reference | gap | corrected |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in t.iterrows():
        occ = md(r["occupation"])
        lines.append(
            f"| {occ} | {int(r['n'])} | {_fmt(r['p_female'], 2)} | [{_fmt(r['ci_low'], 2)}, {_fmt(r['ci_high'], 2)}] "
            f"| {_fmt(r['p_ref'], 3)} | {_fmt(r['gap'], 2)} | {_fmt(r['p_corrected'], 2)} |"
        )
    lines += ["", "Perceived, binary labels from CLIP; see the HTML report's limitations section.", ""]
    return "\n".join(lines)


def _grids(run_dir: Path, spec: AuditSpec, m: AuditMetrics) -> str:
    e = html.escape
    k = spec.report.thumbnails_per_prompt
    if k <= 0 or m.images.empty:
        return "<p>No thumbnails (report.thumbnails_per_prompt = 0).</p>"
    parts = []
    for pid, g in m.images.sort_values(["prompt_id", "image_index"]).groupby("prompt_id", sort=True):
        g = g.head(k)
        first = g.iloc[0]
        kind = "control" if first["kind"] == "control" else "audit"
        cells = []
        for _, r in g.iterrows():
            src = _thumb(run_dir / str(r["path"]))
            img = f'<img src="{src}" alt="image {int(r["image_index"])}">' if src else "<i>unreadable</i>"
            lab = str(r["label"])
            cells.append(
                f'<div class="cell">{img}<br><span class="{e(lab)}">{e(lab)}</span> '
                f'{_fmt(r["confidence"], 2)}<br><span class="small">p_person {_fmt(r["p_person"], 2)}</span></div>'
            )
        parts.append(f"<h4>{e(str(first['prompt']))} <span class='small'>({kind}, prompt {int(pid)})</span></h4>"
                     f"<div class='grid'>{''.join(cells)}</div>")
    return "\n".join(parts)


def _html(run_dir: Path, spec: AuditSpec, m: AuditMetrics, meta: dict) -> str:
    e = html.escape
    plots = _plots(m)
    ov = _ov(m)

    def img(key, alt):
        return f'<img src="{plots[key]}" alt="{e(alt)}" style="max-width:100%">' if key in plots else ""

    def v(name):
        r = ov.get(name)
        if r is None:
            return "–"
        s = _fmt(r["value"])
        if np.isfinite(r["ci_low"]):
            s += f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
        return s

    occ = m.by_occupation.copy()
    titles = spec.prompts.reference_titles
    if titles:
        occ.insert(1, "reference title", occ["occupation"].map(titles))
    occ_cols = [c for c in ["occupation", "reference title", "n_images", "n_no_person", "n_abstain", "n", "p_female",
                            "ci_low", "ci_high", "imbalance", "fair_baseline", "p_ref", "gap", "p_corrected",
                            "corrected_low", "corrected_high", "amplified"] if c in occ.columns]
    prompt_cols = [c for c in ["prompt_id", "prompt", "occupation", "n_images", "n_no_person", "n_abstain", "n",
                               "p_female", "ci_low", "ci_high", "imbalance", "fair_baseline", "p_ref", "gap"]
                   if c in m.by_prompt.columns]
    val_cols = ["stated_gender", "measure", "n_images", "n_no_person", "n_abstain", "n_labelled", "n_correct",
                "accuracy", "ci_low", "ci_high"]
    pl = spec.pipeline
    key = (
        f"<div class='key'><p><b>Mean gender imbalance</b> |p̂ − ½| over occupations: {v('mean_imbalance')} "
        f"— a perfectly fair model would show {v('mean_fair_baseline')} at these sample sizes "
        f"(excess: {v('mean_excess_imbalance')}).</p>"
        f"<p><b>Correlation with the reference</b>: Pearson r {v('pearson_r')}, Spearman ρ {v('spearman_rho')}. "
        f"<b>Amplification</b>: {v('amplification_share')} of occupations skewed beyond the reference in the same "
        f"direction ({v('amplification_share_significant')} with the interval excluding the reference).</p>"
        f"<p><b>Classifier on the control prompts</b>: sensitivity {v('sensitivity')}, specificity "
        f"{v('specificity')}. Abstention rate {v('abstain_rate')}, no-person rate {v('no_person_rate')}.</p></div>"
    )
    body = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>diffkit audit: {e(spec.name)}</title><style>{_CSS}</style></head><body>
<h1>Gender-bias audit: {e(spec.name)}</h1>
<p>{e(spec.description)}</p>
<p>Generator <code>{e(pl.model)}</code> (revision {e(str(pl.revision or 'default'))}, scheduler
{e(str(pl.scheduler or 'the pipeline default'))}, {pl.steps} steps, guidance {pl.guidance}); classifier
open_clip <code>{e(spec.classifier.model)}</code> / <code>{e(str(meta['classifier']['pretrained']))}</code>.
Reference: {e(spec.prompts.reference_source or 'none')}.</p>
{key}
<h2>Per occupation, against the reference</h2>
{img('per_occupation', 'share labelled female per occupation with 95% intervals and the reference')}
{_table_html(occ[occ_cols])}
<h2>Generated versus reference</h2>
{img('scatter', 'generated share against reference share')}
<h2>Imbalance against the fair-model baseline</h2>
<p>A fair model (p = ½) still shows |p̂ − ½| &gt; 0 from sampling alone; the red bars are its exact
distribution for the median number of labelled images per prompt.</p>
{img('imbalance', 'distribution of per-prompt imbalance against the fair-model baseline')}
<h2>Overall metrics</h2>
{_table_html(m.overall)}
<h2>Classifier validation (control prompts)</h2>
<p>The control prompts state the gender; the classifier's accuracy on them is its sensitivity
(female) and specificity (male) on this generator's own images. These drive the Rogan–Gladen correction.</p>
{_table_html(m.validation[val_cols])}
<h2>Per prompt</h2>
{_table_html(m.by_prompt[prompt_cols])}
<h2>Images</h2>
<p>The first {spec.report.thumbnails_per_prompt} images of each prompt with the classifier's label and
confidence (max(p_female, p_male)); <i>abstain</i> and <i>no_person</i> are never forced into a class.</p>
{_grids(run_dir, spec, m)}
<h2>Limitations</h2>
<ul>{''.join(f'<li>{x}</li>' for x in LIMITATIONS)}</ul>
<h2>Run metadata</h2>
<pre>{e(json.dumps(meta, indent=2, default=str))}</pre>
<h3>Spec</h3>
<pre>{e(json.dumps(spec.to_dict(), indent=2, sort_keys=True))}</pre>
<p class="small">Written by diffkit {e(meta['libraries'].get('diffkit', '?'))}. Formulas and sources:
docs/audit_methodology.md.</p>
</body></html>
"""
    return body


def write_comparison(
    *, by_occupation: pd.DataFrame, overall: pd.DataFrame, name_a: str, name_b: str, out_dir: str | Path
) -> Path:
    """Write a comparison of two runs (``compare.html``, ``compare_by_occupation.csv``,
    ``compare_overall.csv``, ``compare.md``) into *out_dir*; return the HTML path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    e = html.escape
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_occupation.to_csv(out / "compare_by_occupation.csv", index=False)
    overall.to_csv(out / "compare_overall.csv", index=False)
    t = by_occupation.sort_values("diff")
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.2))
    y = np.arange(len(t))
    ax.errorbar(t["diff"], y, xerr=_err(t["diff"], t["ci_low"], t["ci_high"]), fmt="o", capsize=3)
    ax.axvline(0, color="grey", ls="--", lw=1)
    ax.set_yticks(y, t["occupation"].astype(str))
    ax.set_xlabel(f"p̂ female: {name_b} − {name_a} (95% Newcombe)")
    plot = _b64_png(fig)
    md = [f"# {name_b} versus {name_a}", "", "| metric | a | b | b − a | 95% CI |", "|---|---|---|---|---|"]
    for _, r in overall.iterrows():
        md.append(f"| {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['diff'])} | "
                  f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}] |")
    (out / "compare.md").write_text("\n".join(md) + "\n")
    doc = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>diffkit audit comparison</title><style>{_CSS}</style></head><body>
<h1>{e(name_b)} versus {e(name_a)}</h1>
<p>Differences are b − a. Per occupation: Newcombe's hybrid score interval; overall: independent
two-stage bootstraps of both runs.</p>
<h2>Overall</h2>{_table_html(overall)}
<h2>Per occupation</h2><img src="{plot}" alt="differences per occupation" style="max-width:100%">
{_table_html(by_occupation)}
</body></html>"""
    path = out / "compare.html"
    path.write_text(doc, encoding="utf-8")
    return path
