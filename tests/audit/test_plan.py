"""The sample-size planner: exact arithmetic checked against brute force, and the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from diffkit.audit.plan import plan_sample_size, power_exact, share_half_width, wilson_half_width
from diffkit.cli import main


def test_half_width_plan_is_the_smallest_n():
    for h, p, ci in [(0.1, 0.5, 0.95), (0.05, 0.5, 0.95), (0.1, 0.2, 0.9)]:
        plan = plan_sample_size(half_width=h, p=p, ci=ci)
        n = plan.labelled_per_occupation
        assert share_half_width(n=n, p=p, ci=ci) <= h < share_half_width(n=n - 1, p=p, ci=ci)
        assert plan.achieved == pytest.approx(float(share_half_width(n=n, p=p, ci=ci)))
    # Clopper–Pearson needs more than Wilson's 93 for ±0.1 at 95%
    assert plan_sample_size(half_width=0.1).labelled_per_occupation == 104 > 93
    assert share_half_width(n=24) == pytest.approx(0.2088, abs=1e-4)  # the tiny default's 24 per occupation
    assert wilson_half_width(n=24) == pytest.approx(0.1857, abs=1e-4)  # Wilson's, kept in the library


def test_half_width_is_the_report_interval_at_p_hat():
    """The planner plans the interval the report shows: half of Clopper–Pearson's hi − lo at p̂ = p,
    against statsmodels' "beta" interval wherever n·p is a whole number, vectorised over n."""
    from statsmodels.stats.proportion import proportion_confint

    from diffkit.audit.metrics import group_table

    ns = np.array([4, 24, 96, 400, 2000])
    for p, ci in [(0.5, 0.95), (0.25, 0.9), (0.75, 0.99)]:
        got = share_half_width(n=ns, p=p, ci=ci)
        assert got.shape == ns.shape
        for n, h in zip(ns, got):
            lo, hi = proportion_confint(int(n * p), int(n), alpha=1 - ci, method="beta")
            assert h == pytest.approx((hi - lo) / 2, abs=1e-12)
    # the same number the per-occupation table shows for 12 women of 24
    import pandas as pd

    imgs = pd.DataFrame({"occupation": "nurse", "kind": "audit", "label": ["female"] * 12 + ["male"] * 12})
    row = group_table(images=imgs).iloc[0]
    assert share_half_width(n=24) == pytest.approx((row["ci_high"] - row["ci_low"]) / 2, abs=1e-12)


def test_power_exact_against_scipy_binomtest():
    for n, p, alpha in [(24, 0.7, 0.05), (40, 0.8, 0.005), (7, 0.9, 0.05)]:
        k = np.arange(n + 1)
        reject = np.array([stats.binomtest(int(x), n, 0.5).pvalue <= alpha for x in k])
        assert power_exact(n=n, p=p, alpha=alpha) == pytest.approx(stats.binom.pmf(k[reject], n, p).sum(), abs=1e-12)


def test_power_plan_reaches_its_power_by_simulation():
    plan = plan_sample_size(power=0.8, imbalance=0.25, occupations=10)
    n = plan.labelled_per_occupation
    rng = np.random.default_rng(0)
    k = rng.binomial(n, 0.75, size=4000)
    rejected = np.mean([stats.binomtest(int(x), n, 0.5).pvalue <= 0.005 for x in k])
    assert rejected >= 0.78
    assert power_exact(n=n, p=0.75, alpha=0.005) >= 0.8


def test_unlabelled_images_and_templates_round_up():
    plan = plan_sample_size(half_width=0.1, templates=3, occupations=10, unlabelled_rate=0.1)
    assert plan.images_per_occupation >= plan.labelled_per_occupation / 0.9
    assert plan.images_per_prompt == -(-plan.images_per_occupation // 3)
    assert plan.total_images == plan.images_per_prompt * 3 * 10


def test_plan_errors_name_the_fix():
    with pytest.raises(ValueError, match="exactly one goal"):
        plan_sample_size()
    with pytest.raises(ValueError, match="imbalance=0.2"):
        plan_sample_size(power=0.8)
    with pytest.raises(ValueError, match="e.g. 0.1"):
        plan_sample_size(half_width=0.7)


def test_cli_plan(capsys):
    assert main(["audit", "plan", "--half-width", "0.1", "--templates", "2"]) == 0
    out = capsys.readouterr().out
    assert "labelled images per occupation: 104" in out and "images per prompt: 52" in out
    assert "Clopper–Pearson 95% half-width ≤ 0.1" in out
    assert main(["audit", "plan", "--power", "0.8"]) == 2
    assert "imbalance" in capsys.readouterr().err
