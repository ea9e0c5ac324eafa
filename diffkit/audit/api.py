"""The audit as three Python calls, the same as the three commands.

>>> result = run_audit()  # the bundled tiny default  # doctest: +SKIP
>>> result.report                              # doctest: +SKIP
PosixPath('out/audit/tiny_default/report/index.html')
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .._files import read_csv
from ..errors import StateError
from ._distributed import dist_state
from .generate import generate_images
from .metrics import AuditMetrics, audit_metrics, compare_metrics
from .report import write_comparison, write_report
from .rundir import load_run_spec, run_lock
from .score import score_images
from .spec import AuditSpec, load_spec

__all__ = ["AuditResult", "compare_audits", "default_out", "report_audit", "rescore_audit", "run_audit"]


@dataclass
class AuditResult:
    """What :func:`run_audit` and :func:`report_audit` return."""

    run_dir: Path
    spec: AuditSpec
    metrics: AuditMetrics
    report: Path | None

    @property
    def images(self) -> pd.DataFrame:
        return self.metrics.images

    @property
    def by_occupation(self) -> pd.DataFrame:
        return self.metrics.by_occupation

    @property
    def overall(self) -> pd.DataFrame:
        return self.metrics.overall


def default_out(spec: AuditSpec, model: str | None = None) -> Path:
    """The run folder when none is given: ``out/audit/<spec name>``, or
    ``out/audit/<spec name>--<model>`` when *model* overrides the spec's pipeline."""
    if model is None:
        return Path("out") / "audit" / spec.name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(model)).strip("-.") or "model"
    return Path("out") / "audit" / f"{spec.name}--{slug}"


def _metrics(spec: AuditSpec, images: pd.DataFrame, run_dir: Path | None = None) -> AuditMetrics:
    if run_dir is not None and not (images["kind"] == "audit").any():
        raise StateError(
            f"{run_dir} has no finished audit image to report yet; fix: run `diffkit audit run` with its spec and "
            f"--out {run_dir} to generate them (a rerun resumes)"
        )
    return audit_metrics(images=images, ci=spec.report.ci, n_boot=spec.report.n_boot, seed=spec.report.seed)


def run_audit(
    spec: str | Path | AuditSpec = "tiny_default",
    *,
    out: str | Path | None = None,
    model: str | None = None,
    progress: bool = True,
    pipe: Any = None,
    classifier: Any = None,
    report: bool = True,
    language: str | None = None,
) -> AuditResult | None:
    """Generate, score, measure and report one audit (``diffkit audit run``).

    *spec* is a path, a bundled name (``"tiny_default"``) or an :class:`AuditSpec`; *model*
    overrides ``pipeline.model``. Reruns resume; a folder holding another spec's run is
    refused. Under ``accelerate launch`` every process generates and scores its shard and
    the main process writes the report (the others return ``None``). *classifier* is any
    labeller (:mod:`diffkit.audit.labellers`); default: the one the spec's ``[classifier]`` names.

    A spec that lists several values of a pipeline setting is a sweep: each arm is run into
    ``<out>/arms/<arm>/`` and a :class:`~diffkit.audit.sweep.SweepResult` is returned
    (:func:`~diffkit.audit.sweep.run_sweep`). The report's HTML and Markdown are in *language*
    (``"en"``, ``"es"``; default :func:`diffkit.get_language`, e.g. ``DIFFKIT_LANG=es``).
    """
    spec = spec.with_model(model) if isinstance(spec, AuditSpec) else load_spec(spec, model=model)
    run_dir = Path(out) if out is not None else default_out(spec, model)
    if spec.sweep:
        from .sweep import run_sweep

        return run_sweep(
            spec, out=run_dir, pipe=pipe, classifier=classifier, progress=progress, report=report, language=language
        )
    state = dist_state()
    # the main process holds the folder from the first image to the report: no other run,
    # scoring or report writer comes in between (the steps take the lock again, nested)
    lock = run_lock(run_dir, "running the audit") if state.is_main else contextlib.nullcontext()
    with lock:
        generate_images(spec, run_dir, pipe=pipe, progress=progress, state=state)
        if pipe is None:
            import gc

            gc.collect()
        images = score_images(spec, run_dir, classifier=classifier, progress=progress, state=state)
        if not state.is_main:
            return None
        metrics = _metrics(spec, images, run_dir)
        path = None
        if report:
            path = write_report(
                run_dir, spec=spec, metrics=metrics, classifier_id=_classifier_id(images), language=language
            )
    return AuditResult(run_dir, spec, metrics, path)


def _classifier_id(images: pd.DataFrame) -> str | None:
    """The classifier's weights tag as scored (for local weights, with their content hash)."""
    return images.attrs.get("classifier", {}).get("pretrained")


def report_audit(
    run_dir: str | Path, *, classifier: Any = None, progress: bool = True, language: str | None = None
) -> AuditResult:
    """Rescore (from the embedding cache) and rewrite the report of a run folder (``diffkit audit report``),
    in *language* (default :func:`diffkit.get_language`; ``diffkit audit report --lang es``).

    Holds the folder's lock throughout: a folder another process is writing into raises
    :class:`~diffkit.errors.RunBusyError` naming that process. A sweep's folder rewrites every
    arm's report and the sweep's (:func:`~diffkit.audit.sweep.report_sweep`)."""
    run_dir = Path(run_dir)
    from .sweep import is_sweep_folder, report_sweep

    if is_sweep_folder(run_dir):
        return report_sweep(run_dir, classifier=classifier, progress=progress, language=language)
    spec = load_run_spec(run_dir)
    with run_lock(run_dir, "rewriting the report", create=False):  # scoring and writing, as one writer
        images = score_images(spec, run_dir, classifier=classifier, progress=progress)
        metrics = _metrics(spec, images, run_dir)
        path = write_report(
            run_dir, spec=spec, metrics=metrics, classifier_id=_classifier_id(images), language=language
        )
    return AuditResult(run_dir, spec, metrics, path)


def rescore_audit(
    run_dir: str | Path,
    *,
    judge: str,
    pretrained: str | None = None,
    abstain_below: float | None = None,
    person_threshold: float | None = None,
    progress: bool = False,
) -> AuditResult:
    """The same run's images read by another open_clip judge (``"tiny-weak"``, a hub model with
    *pretrained*): an :class:`AuditResult` with that judge's labels and statistics, the run's
    report left as it is. The embedding cache keys on each judge's weights, so the two never mix.
    Thresholds belong to a judge: *abstain_below* and *person_threshold* replace the run's (the
    weak judge's probabilities are never as sure as the shipped one's: ``abstain_below=0.5`` reads
    every image it sees a person in).

    >>> weak = rescore_audit("out/audit/tiny_default", judge="tiny-weak", abstain_below=0.5)   # doctest: +SKIP
    """
    from dataclasses import replace

    from ..checks import check_probability
    from .labellers import build_labeller

    run_dir = Path(run_dir)
    spec = load_run_spec(run_dir)
    thresholds = {}
    if abstain_below is not None:
        thresholds["abstain_below"] = check_probability("abstain_below", abstain_below)
    if person_threshold is not None:
        thresholds["person_threshold"] = check_probability("person_threshold", person_threshold)
    spec = replace(spec, classifier=replace(spec.classifier, model=judge, pretrained=pretrained, **thresholds))
    images = score_images(spec, run_dir, classifier=build_labeller(spec.classifier), progress=progress)
    return AuditResult(run_dir, spec, _metrics(spec, images, run_dir), None)


def _load(run_dir: Path, classifier: Any) -> tuple[AuditSpec, AuditMetrics]:
    spec = load_run_spec(run_dir)
    csv = run_dir / "report" / "images.csv"
    if classifier is None and csv.is_file():
        images = read_csv(csv)  # undoes write_csv's spreadsheet escaping
        images["stated_gender"] = images["stated_gender"].where(images["stated_gender"].notna(), None)
    else:
        images = score_images(spec, run_dir, classifier=classifier, progress=False)
    return spec, _metrics(spec, images)


def compare_audits(
    run_a: str | Path,
    run_b: str | Path,
    *,
    out: str | Path | None = None,
    classifier: Any = None,
    language: str | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    """Compare run *b* with run *a* (``diffkit audit compare``): two models, or before and after a
    mitigation. Returns ``(by_occupation, overall, html_path)``; differences are b − a with
    intervals. Written to *out* (default ``<run_b>/compare``), in *language* (default
    :func:`diffkit.get_language`)."""
    run_a, run_b = Path(run_a), Path(run_b)
    spec_a, ma = _load(run_a, classifier)
    spec_b, mb = _load(run_b, classifier)
    by_occ, overall = compare_metrics(
        a=ma, b=mb, ci=spec_b.report.ci, n_boot=spec_b.report.n_boot, seed=spec_b.report.seed
    )
    name_a = f"{spec_a.name} ({spec_a.pipeline.model})"
    name_b = f"{spec_b.name} ({spec_b.pipeline.model})"
    path = write_comparison(
        by_occupation=by_occ,
        overall=overall,
        name_a=name_a,
        name_b=name_b,
        out_dir=Path(out) if out is not None else run_b / "compare",
        ci=spec_b.report.ci,
        language=language,
    )
    return by_occ, overall, path
