"""Bias statistics that hold up to review: named estimands, intervals with tested coverage.

Tidy all the way: the per-image table from :func:`~diffkit.audit.score.score_images` →
:func:`group_table` per prompt or per occupation → :func:`overall_table`; :func:`audit_metrics`
builds them all, :func:`compare_metrics` sets two runs side by side. Every function takes
keywords only (fairlearn's ``MetricFrame`` style) and returns pandas objects or arrays.

This module is the public façade; each concept lives in one private module with its sources:

==========================  =====================================  ====================================
concept                     module                                 method
==========================  =====================================  ====================================
intervals for shares        ``_intervals``                         Clopper–Pearson (every share); Wilson; Newcombe
adaptive exact bounds       ``_adaptive``                          Laber & Murphy (2011), by convolution
imbalance |p − ½|           ``_imbalance``                         corrected estimate; (p − ½)² U-stat
tests and Holm              ``_significance``                             exact binomial; Holm (1979)
amplification, direction    ``_amplification``                     Zhao et al. (2017), directional
Rogan–Gladen                ``_rogan_gladen``                      exact posterior (Gelman & Carpenter)
classifier validation       ``_classifier``                        Se, Sp, reliability, thresholds
descriptive figures         ``_descriptive``                       KL, scipy's Pearson and Spearman
per-group table             ``_group_table``
overall table               ``_overall``
two runs compared           ``_compare``                           Newcombe; adaptive bounds
the words for each metric   ``_glossary``
==========================  =====================================  ====================================

Every interval is computed exactly (no bootstrap, no Monte Carlo draws), so the same data always
give the same bounds; each has a seeded coverage simulation in :mod:`diffkit.audit.coverage`,
whose table ``docs/audit_methodology.md`` prints. The occupations and templates of a spec are a
fixed, chosen list: nothing resamples the list itself. Only images labelled ``female`` or ``male``
enter p̂; ``abstain`` and ``no_person`` are counted beside it, never forced into a class.
"""

from __future__ import annotations

from ._amplification import amplification_interval, direction_columns
from ._classifier import (
    classifier_validation,
    controls_by_occupation,
    reliability_table,
    suggest_thresholds,
)
from ._compare import NothingInCommonError, compare_metrics, imbalance_change_interval, pair_runs
from ._descriptive import heim_gender_imbalance, kl_to_uniform, pearson, spearman
from ._group_table import DEFAULT_MIN_CONTROLS, group_table
from ._imbalance import (
    bootstrap_mean_imbalance,
    corrected_imbalance,
    expected_imbalance,
    fair_baseline,
    imbalance_interval,
    mean_imbalance_interval,
    squared_imbalance,
)
from ._intervals import (
    clopper_pearson_interval,
    format_p_value,
    newcombe_interval,
    newcombe_paired_interval,
    pct,
    wilson_interval,
)
from ._overall import AuditMetrics, audit_metrics, overall_table
from ._rogan_gladen import rogan_gladen, rogan_gladen_interval
from ._significance import fair_null_test, global_fair_p, holm

__all__ = [
    "DEFAULT_MIN_CONTROLS",
    "AuditMetrics",
    "NothingInCommonError",
    "amplification_interval",
    "audit_metrics",
    "bootstrap_mean_imbalance",
    "classifier_validation",
    "clopper_pearson_interval",
    "compare_metrics",
    "controls_by_occupation",
    "corrected_imbalance",
    "direction_columns",
    "expected_imbalance",
    "fair_baseline",
    "fair_null_test",
    "format_p_value",
    "global_fair_p",
    "group_table",
    "heim_gender_imbalance",
    "holm",
    "imbalance_change_interval",
    "imbalance_interval",
    "kl_to_uniform",
    "mean_imbalance_interval",
    "newcombe_interval",
    "newcombe_paired_interval",
    "overall_table",
    "pair_runs",
    "pct",
    "pearson",
    "reliability_table",
    "rogan_gladen",
    "rogan_gladen_interval",
    "spearman",
    "squared_imbalance",
    "suggest_thresholds",
    "wilson_interval",
]
