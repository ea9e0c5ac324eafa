"""Sweeps: one audit per value of a pipeline setting, the same seeds in every arm.

A spec whose ``[pipeline]`` lists several values of ``guidance_scale``, ``scheduler`` or ``steps``
is a sweep (:meth:`~diffkit.audit.spec.AuditSpec.arms`: one arm per combination). Each arm is an
ordinary run folder under ``<out>/arms/<arm>/`` (resumable, reportable on its own); the arms
share prompts and seeds, so arm b against arm a is a **paired** comparison, image by image
(:func:`~diffkit.audit.metrics.compare_metrics`). The sweep's report (``<out>/report/``) shows
the mean imbalance of every arm against the swept value with its interval, and each arm's
change from the first arm with its paired interval, per occupation and overall.

``<out>/sweep.json`` holds the sweep's spec; ``diffkit audit report <out>`` rewrites the report.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._files import atomic_write_text, ensure_folder, write_csv
from ..errors import RunFolderError
from .rundir import RunMismatchError, first_difference, run_lock
from .spec import AuditSpec, spec_from_dict

__all__ = ["SWEEP_NAME", "SweepResult", "is_sweep_folder", "load_sweep_spec", "run_sweep", "sweep_tables"]

SWEEP_NAME = "sweep.json"


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the arms' results and the sweep's tables."""

    run_dir: Path
    spec: AuditSpec
    arms: dict[str, Any]  # arm name → AuditResult
    by_arm: pd.DataFrame  # one row per arm: swept values, mean imbalance with its interval, rates
    by_occupation: pd.DataFrame  # per arm and occupation: share and its paired change from the first arm
    paired: pd.DataFrame  # per arm: the overall changes from the first arm, paired intervals
    report: Path | None


def arm_folder(name: str) -> str:
    """The folder name of an arm (``"guidance_scale=7.5"`` → ``"guidance_scale-7.5"``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "arm"


def is_sweep_folder(run_dir: str | Path) -> bool:
    return (Path(run_dir) / SWEEP_NAME).is_file()


def load_sweep_spec(run_dir: str | Path) -> AuditSpec:
    path = Path(run_dir) / SWEEP_NAME
    try:
        return spec_from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path} cannot be read ({e}); fix: rerun the sweep into a new --out folder") from e


def _record(spec: AuditSpec, run_dir: Path) -> None:
    """Write ``sweep.json``, or check it against *spec* (a folder holding another sweep is refused)."""
    from .rundir import write_atomic

    path = run_dir / SWEEP_NAME
    text = json.dumps(spec.to_dict(), indent=2, sort_keys=True)
    if path.is_file():
        old = load_sweep_spec(run_dir)
        if old.fingerprint() != spec.fingerprint():
            raise RunMismatchError(
                f"{run_dir} holds another sweep ({first_difference(old.to_dict(), spec.to_dict())}); diffkit never "
                "mixes runs: fix: pass a new --out folder, or delete this one to start over"
            )
        return
    write_atomic(path, text.encode())


def run_sweep(
    spec: AuditSpec,
    *,
    out: str | Path,
    pipe: Any = None,
    classifier: Any = None,
    progress: bool = True,
    report: bool = True,
    language: str | None = None,
) -> SweepResult | None:
    """Run every arm of a sweep spec into ``<out>/arms/<arm>/`` (resuming), then write the
    sweep's report. The pipeline is loaded once; a scheduler sweep swaps its scheduler per arm.
    Under ``accelerate launch`` every process generates its shard of each arm and the main process
    writes the reports (the others return ``None``), in *language* (default :func:`diffkit.get_language`)."""
    from ._distributed import dist_state
    from .api import run_audit
    from .generate import load_pipeline_for

    run_dir = Path(out)
    arms = spec.arms()
    state = dist_state()
    with run_lock(run_dir, "running a sweep") if state.is_main else contextlib.nullcontext():
        if state.is_main:
            _record(spec, run_dir)
        if pipe is None:
            pipe = load_pipeline_for(arms[0][1], device=state.device, progress=progress)
        base_scheduler = pipe.scheduler
        results = {}
        for name, arm in arms:
            with _scheduler(pipe, arm, base_scheduler):
                results[name] = run_audit(
                    arm,
                    out=run_dir / "arms" / arm_folder(name),
                    pipe=pipe,
                    classifier=classifier,
                    progress=progress,
                    report=report,
                    language=language,
                )
        if any(r is None for r in results.values()):  # a non-main process of a sharded run
            return None
        return _finish(spec, run_dir, results, report, language)


@contextlib.contextmanager
def _scheduler(pipe: Any, arm: AuditSpec, base: Any):
    from ..pipeline import make_scheduler

    if arm.pipeline.scheduler:
        pipe.scheduler = make_scheduler(arm.pipeline.scheduler, base.config)
    try:
        yield
    finally:
        pipe.scheduler = base


def report_sweep(
    run_dir: str | Path, *, classifier: Any = None, progress: bool = True, language: str | None = None
) -> SweepResult:
    """Rewrite every arm's report and the sweep's (``diffkit audit report`` on a sweep folder), in *language*."""
    from .api import report_audit

    run_dir = Path(run_dir)
    spec = load_sweep_spec(run_dir)
    results = {
        name: report_audit(
            run_dir / "arms" / arm_folder(name), classifier=classifier, progress=progress, language=language
        )
        for name, _ in spec.arms()
    }
    with run_lock(run_dir, "writing the sweep's report"):
        return _finish(spec, run_dir, results, True, language)


def sweep_tables(spec: AuditSpec, results: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``(by_arm, by_occupation, paired)`` of a sweep's arms (see :class:`SweepResult`); every
    change is arm − first arm, paired by prompt and seed (:func:`~diffkit.audit.metrics.compare_metrics`)."""
    from .metrics import compare_metrics

    names = list(results)
    keys = sorted(spec.sweep, key=lambda k: ("scheduler", "steps", "guidance_scale").index(k))
    base = results[names[0]].metrics
    rows, occ_rows, paired_rows = [], [], []
    for name in names:
        m = results[name].metrics
        arm = results[name].spec.pipeline
        ov = m.overall.set_index("metric")
        row = {"arm": name, **{k: getattr(arm, k) for k in keys}}
        for metric in (
            "mean_imbalance",
            "amplification",
            "abstain_rate",
            "no_person_rate",
            "sensitivity",
            "specificity",
        ):
            if metric in ov.index:
                row[metric] = float(ov.loc[metric, "value"])
                row[f"{metric}_low"] = float(ov.loc[metric, "ci_low"])
                row[f"{metric}_high"] = float(ov.loc[metric, "ci_high"])
        row["n_labelled"] = int(m.by_occupation["n"].sum())
        rows.append(row)
        occ, overall = compare_metrics(a=base, b=m, ci=spec.report.ci, n_boot=spec.report.n_boot, seed=spec.report.seed)
        for _, r in occ.iterrows():
            occ_rows.append(
                {
                    "arm": name,
                    **{k: getattr(arm, k) for k in keys},
                    "occupation": r["occupation"],
                    "p_female": r["p_female_b"],
                    "diff_from_first": r["diff"],
                    "diff_low": r["ci_low"],
                    "diff_high": r["ci_high"],
                    "design": r["design"],
                }
            )
        ovc = overall.set_index("metric")
        if "mean_imbalance" in ovc.index:
            r = ovc.loc["mean_imbalance"]
            paired_rows.append(
                {
                    "arm": name,
                    **{k: getattr(arm, k) for k in keys},
                    "metric": "mean_imbalance",
                    "first": r["a"],
                    "value": r["b"],
                    "diff_from_first": r["diff"],
                    "diff_low": r["ci_low"],
                    "diff_high": r["ci_high"],
                    "design": r["design"],
                    "design_detail": overall.attrs.get("design", ""),
                }
            )
    return pd.DataFrame(rows), pd.DataFrame(occ_rows), pd.DataFrame(paired_rows)


def _finish(
    spec: AuditSpec, run_dir: Path, results: dict[str, Any], report: bool, language: str | None = None
) -> SweepResult:
    by_arm, by_occ, paired = sweep_tables(spec, results)
    path = (
        write_sweep_report(run_dir, spec=spec, by_arm=by_arm, by_occupation=by_occ, paired=paired, language=language)
        if report
        else None
    )
    return SweepResult(run_dir, spec, results, by_arm, by_occ, paired, path)


def _x(spec: AuditSpec, table: pd.DataFrame, tr: Any = None) -> tuple[np.ndarray, list[str], str]:
    """Positions, tick labels and axis label for the arms (numeric when one number is swept; the
    label through the catalogue *tr*)."""
    import gettext

    tr = tr if tr is not None else gettext.NullTranslations()
    _, pgettext = tr.gettext, tr.pgettext
    keys = list(spec.sweep)
    if len(keys) == 1 and keys[0] in ("guidance_scale", "steps"):
        vals = table[keys[0]].astype(float).to_numpy()
        label = _("guidance scale") if keys[0] == "guidance_scale" else _("steps")
        return vals, [f"{v:g}" for v in vals], label
    return np.arange(len(table)), list(table["arm"]), pgettext("sweep", "arm")


def sweep_figures(
    spec: AuditSpec,
    by_arm: pd.DataFrame,
    by_occupation: pd.DataFrame,
    paired: pd.DataFrame,
    language: str | None = None,
) -> dict[str, Any]:
    """``"imbalance"`` (mean imbalance per arm with its interval, and the change from the first arm
    with its paired interval) and ``"occupations"`` (each occupation's share against the swept value),
    labelled in *language* (default :func:`diffkit.get_language`)."""
    from matplotlib.figure import Figure

    from ._report_figures import error_bars, plain_labels
    from ._report_html import catalogue
    from .metrics import pct

    tr = catalogue(language)
    _ = tr.gettext
    lvl = pct(spec.report.ci)
    out: dict[str, Any] = {}
    x, ticks, xlabel = _x(spec, by_arm, tr)
    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    if "mean_imbalance" in by_arm:
        ax1.errorbar(
            x,
            by_arm["mean_imbalance"],
            yerr=error_bars(by_arm["mean_imbalance"], by_arm["mean_imbalance_low"], by_arm["mean_imbalance_high"]),
            fmt="o-",
            capsize=3,
            label=_("mean |p − ½| ({lvl} interval)").format(lvl=lvl),
        )
    ax1.set_xticks(x, ticks)
    ax1.set_xlabel(xlabel)
    ax1.set_ylabel(_("mean gender imbalance"))
    ax1.set_ylim(-0.02, 0.52)
    ax1.legend(fontsize=8)
    if len(paired):
        px = _x(spec, paired)[0]
        ax2.errorbar(
            px,
            paired["diff_from_first"],
            yerr=error_bars(paired["diff_from_first"], paired["diff_low"], paired["diff_high"]),
            fmt="s-",
            color="C2",
            capsize=3,
            label=_("change from {arm} ({lvl}, paired)").format(arm=by_arm["arm"].iloc[0], lvl=lvl),
        )
        ax2.axhline(0, color="grey", lw=1, ls="--")
        ax2.set_xticks(px, ticks)
        ax2.legend(fontsize=8)
    ax2.set_xlabel(xlabel)
    ax2.set_ylabel(_("change in mean imbalance"))
    out["imbalance"] = fig
    if len(by_occupation):
        fig = Figure(figsize=(7.5, 4.5))
        ax = fig.subplots()
        for j, (occ, g) in enumerate(by_occupation.groupby("occupation", sort=False)):
            gx = _x(spec, g.reset_index(drop=True))[0]
            ax.plot(gx, g["p_female"], "o-", color=f"C{j % 10}", label=plain_labels([occ])[0], ms=4)
        ax.axhline(0.5, color="grey", lw=1, ls="--")
        ax.set_xticks(x, ticks)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_("share labelled female"))
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        out["occupations"] = fig
    return out


def write_sweep_report(
    run_dir: str | Path,
    *,
    spec: AuditSpec,
    by_arm: pd.DataFrame,
    by_occupation: pd.DataFrame,
    paired: pd.DataFrame,
    language: str | None = None,
) -> Path:
    """``<run_dir>/report/``: ``index.html`` (figures embedded; in *language*, default
    :func:`diffkit.get_language`), ``sweep_by_arm.csv``, ``sweep_by_occupation.csv``,
    ``sweep_paired.csv`` (the same in every language); each written atomically."""
    from markupsafe import Markup

    from ._report_html import CSS, jinja_env, png_data_uri, report_language, table_html

    lang = report_language(language)

    out = ensure_folder(Path(run_dir) / "report")
    write_csv(by_arm, out / "sweep_by_arm.csv")
    write_csv(by_occupation, out / "sweep_by_occupation.csv")
    write_csv(paired, out / "sweep_paired.csv")
    plots = {k: png_data_uri(f) for k, f in sweep_figures(spec, by_arm, by_occupation, paired, lang).items()}
    arms = [{"name": a, "href": f"../arms/{arm_folder(a)}/report/index.html"} for a in by_arm["arm"]]
    swept = ", ".join(f"{k} = {list(v)}" for k, v in spec.sweep.items())
    doc = (
        jinja_env(lang)
        .get_template("sweep.html.j2")
        .render(
            lang=lang,
            css=Markup(CSS),
            spec=spec,
            swept=swept,
            n_arms=len(by_arm),
            arms=arms,
            plots={"imbalance": plots.get("imbalance", ""), "occupations": plots.get("occupations")},
            by_arm=table_html(by_arm),
            paired=table_html(paired.drop(columns=["design_detail"], errors="ignore")),
            by_occupation=table_html(by_occupation),
            design=str(paired["design_detail"].iloc[-1]) if len(paired) else "",
        )
    )
    path = out / "index.html"
    atomic_write_text(path, doc)
    return path
