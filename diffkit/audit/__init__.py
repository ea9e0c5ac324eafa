"""The gender-bias audit: prompt sets → generation → CLIP scoring → statistics → report.

Three calls, the same as the three commands::

    from diffkit.audit import run_audit, report_audit, compare_audits
    result = run_audit()                  # diffkit audit run   (bundled tiny_default spec)
    result.by_occupation                  # tidy pandas tables
    report_audit(result.run_dir)          # diffkit audit report DIR
    compare_audits("runs/a", "runs/b")    # diffkit audit compare DIR_A DIR_B

The pieces, each usable on its own: :mod:`~diffkit.audit.spec` (TOML specs), :mod:`~diffkit.audit.plan`
(sample sizes), :mod:`~diffkit.audit.published` (published results to compare with),
:mod:`~diffkit.audit.prompts`, :mod:`~diffkit.audit.generate` (resume, sharding),
:mod:`~diffkit.audit.rundir` (the run folder: ledger, spec, weights, lock),
:mod:`~diffkit.audit.score` (scoring; :mod:`~diffkit.audit.labellers`: open_clip zero-shot, face
crops, face-count gates), :mod:`~diffkit.audit.metrics`, :mod:`~diffkit.audit.report`,
:mod:`~diffkit.audit.sweep` (one arm per guidance scale, scheduler or step count). Formulas and sources: ``docs/audit_methodology.md``.
"""

from __future__ import annotations

from ..errors import RunBusyError, RunFolderError
from .api import AuditResult, compare_audits, default_out, report_audit, rescore_audit, run_audit
from .generate import check_prompt_lengths, generate_images, regenerate_image
from .labellers import FaceCountGate, FaceCropClassifier, Labeller, build_labeller, label_images
from .metrics import (
    AuditMetrics,
    NothingInCommonError,
    amplification_interval,
    audit_metrics,
    classifier_validation,
    clopper_pearson_interval,
    compare_metrics,
    corrected_imbalance,
    fair_baseline,
    fair_null_test,
    format_p_value,
    global_fair_p,
    group_table,
    holm,
    imbalance_interval,
    kl_to_uniform,
    mean_imbalance_interval,
    newcombe_interval,
    newcombe_paired_interval,
    overall_table,
    pearson,
    rogan_gladen,
    rogan_gladen_interval,
    spearman,
    squared_imbalance,
    wilson_interval,
)
from .plan import plan_sample_size
from .prompts import article, build_prompts, derive_seed, image_grid, image_seed
from .published import fair_diffusion_sd15, replication_table
from .report import audit_figures, write_comparison, write_report
from .rundir import DiskFullError, RunMismatchError, load_run_spec, prepare_run
from .score import (
    ZeroShotClassifier,
    classify_embeddings,
    embed_images,
    load_classifier,
    relabel,
    score_images,
)
from .spec import AuditSpec, SpecError, bundled_specs, guidance_lesson_spec, load_spec, parse_spec, tour_spec
from .sweep import SweepResult, run_sweep
from .truth import correction_check, correction_figure, oracle_check

__all__ = [
    "AuditMetrics",
    "AuditResult",
    "AuditSpec",
    "DiskFullError",
    "FaceCountGate",
    "FaceCropClassifier",
    "Labeller",
    "NothingInCommonError",
    "RunBusyError",
    "RunFolderError",
    "RunMismatchError",
    "SpecError",
    "SweepResult",
    "ZeroShotClassifier",
    "amplification_interval",
    "article",
    "audit_figures",
    "audit_metrics",
    "build_labeller",
    "build_prompts",
    "bundled_specs",
    "check_prompt_lengths",
    "classifier_validation",
    "classify_embeddings",
    "clopper_pearson_interval",
    "compare_audits",
    "compare_metrics",
    "corrected_imbalance",
    "correction_check",
    "correction_figure",
    "default_out",
    "derive_seed",
    "embed_images",
    "fair_baseline",
    "fair_diffusion_sd15",
    "fair_null_test",
    "format_p_value",
    "generate_images",
    "global_fair_p",
    "group_table",
    "holm",
    "image_grid",
    "image_seed",
    "imbalance_interval",
    "kl_to_uniform",
    "label_images",
    "load_classifier",
    "load_run_spec",
    "load_spec",
    "mean_imbalance_interval",
    "newcombe_interval",
    "newcombe_paired_interval",
    "oracle_check",
    "overall_table",
    "parse_spec",
    "pearson",
    "plan_sample_size",
    "prepare_run",
    "regenerate_image",
    "relabel",
    "replication_table",
    "report_audit",
    "rescore_audit",
    "rogan_gladen",
    "rogan_gladen_interval",
    "run_audit",
    "run_sweep",
    "score_images",
    "spearman",
    "squared_imbalance",
    "tour_spec",
    "guidance_lesson_spec",
    "wilson_interval",
    "write_comparison",
    "write_report",
]
