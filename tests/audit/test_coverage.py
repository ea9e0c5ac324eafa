"""Every interval of the audit holds its level in every cell of the coverage grid (docs/audit_methodology.md).

The grid is :mod:`diffkit.audit.coverage`: the library's own arithmetic, vectorised over simulated
audits, seeded. At the embedded default's size (24 labelled images per occupation) it runs here;
at four times that (96) in the slow test. The methodology page prints both tables; the tests
check that the page is current (rewrite it with
``DIFFKIT_WRITE_DOCS=1 pytest tests/audit/test_coverage.py -k docs``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import diffkit.audit.metrics as M
from diffkit.audit import coverage

DOCS = Path(__file__).resolve().parents[2] / "docs" / "audit_methodology.md"
REF = coverage.REFERENCE
FLOOR = 0.93
SHARE = "share per occupation (Clopper–Pearson)"
REPS = {24: 2000, 96: 1000}


@pytest.fixture(scope="module")
def grid24() -> pd.DataFrame:
    return coverage.coverage_grid(n_images=24, reps=REPS[24])


def _check(grid: pd.DataFrame) -> None:
    low = grid[grid["coverage"] < FLOOR]
    assert low.empty, "\n" + low[["scenario", "interval", "coverage"]].to_string()
    # every interval, the share's included, holds in its worst occupation too: no exemption
    worst = grid[grid["worst"] < FLOOR]
    assert worst.empty, "\n" + worst[["scenario", "interval", "worst"]].to_string()
    assert (grid["min_width"] > 0).all(), (
        "an interval of zero width: " + grid.loc[grid["min_width"] <= 0, "interval"].to_string()
    )
    # every scenario the issue lists is in the grid
    assert set(grid["scenario"]) == {s.name for s in coverage.SCENARIOS}
    # the interval the report shows for each share is simulated in every one-run cell
    runs = {s.name for s in coverage.SCENARIOS if s.kind == "run"}
    for interval in (SHARE, "pooled share (Clopper–Pearson)"):
        assert set(grid.loc[grid["interval"] == interval, "scenario"]) == runs, interval


def _docs_section(text: str, n: int) -> str:
    m = re.search(rf"<!-- coverage-grid:{n} -->\n(.*?)<!-- /coverage-grid:{n} -->", text, re.S)
    assert m, f"docs/audit_methodology.md has no coverage-grid:{n} section"
    return m.group(1)


def _docs_current(grid: pd.DataFrame, n: int) -> None:
    table = coverage.markdown_table(grid)
    text = DOCS.read_text(encoding="utf-8")
    if os.environ.get("DIFFKIT_WRITE_DOCS"):
        start, end = f"<!-- coverage-grid:{n} -->\n", f"<!-- /coverage-grid:{n} -->"
        head, rest = text.split(start, 1)
        DOCS.write_text(head + start + table + end + rest.split(end, 1)[1], encoding="utf-8")
    assert _docs_section(DOCS.read_text(encoding="utf-8"), n) == table, (
        f"the coverage table for {n} images in docs/audit_methodology.md is out of date: run "
        "DIFFKIT_WRITE_DOCS=1 pytest tests/audit/test_coverage.py -k 'docs or 96'"
    )


@pytest.mark.slow  # in make test-all (a subprocess or a long run: the fast loop stays under 5 min)
def test_every_interval_holds_in_every_cell_at_24_images(grid24):
    _check(grid24)
    # the cells the issue found failing, by name: each interval now covers
    g = grid24.set_index(["scenario", "interval"])["coverage"]
    assert g[("parity", "Δ mean imbalance")] >= 0.95 and g[("9+1", "mean imbalance θ")] >= 0.95
    assert g[("shipped", "mean imbalance θ")] >= 0.95


def test_docs_table_is_current_at_24_images(grid24):
    _docs_current(grid24, 24)


def test_share_interval_holds_its_level_for_every_p_and_wilson_does_not():
    """The reason every share is Clopper–Pearson, computed exactly over p (no simulation): at the
    default's 24 images and at 96 its lowest coverage is at least 95%, where Wilson's falls below 85%
    near p = 0. Switching the report's share interval back to Wilson fails here and in the grid."""
    for n in (24, 96):
        cp = coverage.exact_share_coverage(n=n)
        wilson = coverage.exact_share_coverage(n=n, interval=M.wilson_interval)
        assert cp["min_coverage"] >= 0.95, cp
        assert wilson["min_coverage"] < 0.85 and wilson["at_p"] < 0.01, wilson
        assert 1.0 < cp["mean_width"] / wilson["mean_width"] < 1.15  # the price, in width
    assert coverage.exact_share_coverage(n=24, ci=0.8)["min_coverage"] >= 0.8


def test_docs_share_interval_table_is_current():
    table = coverage.share_interval_table()
    start, end = "<!-- share-interval -->\n", "<!-- /share-interval -->"
    text = DOCS.read_text(encoding="utf-8")
    if os.environ.get("DIFFKIT_WRITE_DOCS"):
        head, rest = text.split(start, 1)
        DOCS.write_text(head + start + table + end + rest.split(end, 1)[1], encoding="utf-8")
    m = re.search(r"<!-- share-interval -->\n(.*?)<!-- /share-interval -->", DOCS.read_text(encoding="utf-8"), re.S)
    assert m and m.group(1) == table, (
        "the share-interval table in docs/audit_methodology.md is out of date: run "
        "DIFFKIT_WRITE_DOCS=1 pytest tests/audit/test_coverage.py -k docs"
    )


def test_grid_is_seeded_and_a_cell_does_not_depend_on_the_others(grid24):
    one = coverage.coverage_grid(n_images=24, reps=REPS[24], cells=["9+1", "rg_occ_0.02"])
    both = grid24[grid24["scenario"].isin(["9+1", "rg_occ_0.02"])].reset_index(drop=True)
    cols = ["scenario", "interval", "coverage", "worst", "mean_width", "min_width"]
    pd.testing.assert_frame_equal(one[cols], both[cols])


def test_intervals_are_useful_not_just_wide(grid24):
    """Valid by being conservative at the kink, but not by being wide everywhere: far from parity the
    mean imbalance's interval is within 1.5× the width of the old bootstrap (0.096 for a
    reference-copying model, 0.068 for an amplifier at 24 images)."""
    g = grid24.set_index(["scenario", "interval"])["mean_width"]
    assert g[("copy", "mean imbalance θ")] < 1.5 * 0.096
    assert g[("amplify", "mean imbalance θ")] < 1.5 * 0.068
    assert g[("fair", "mean imbalance θ")] < 1.5 * 0.144


@pytest.mark.slow
def test_every_interval_holds_in_every_cell_at_96_images():
    grid = coverage.coverage_grid(n_images=96, reps=REPS[96])
    _check(grid)
    _docs_current(grid, 96)


def test_coverage_follows_ci():
    """At 80% the adaptive bounds are narrower and still hold their level."""
    rng = np.random.default_rng(2)
    k = rng.binomial(24, REF, size=(2000, 10))
    theta = np.abs(REF - 0.5).mean()
    _, lo, hi = M.mean_imbalance_interval(successes=k, n=24, ci=0.8)
    _, lo95, hi95 = M.mean_imbalance_interval(successes=k, n=24, ci=0.95)
    assert 0.8 <= np.mean((lo <= theta) & (theta <= hi)) < 0.95
    assert np.all(hi - lo <= hi95 - lo95 + 1e-12)


def test_bias_corrected_estimator_against_plug_in():
    """The plug-in |p̂ − ½| and 'excess' imbalance miss a biased model's true imbalance; the
    corrected one does not (issue 14: excess 0.237 against a true 0.314)."""
    theta = np.abs(REF - 0.5).mean()
    rng = np.random.default_rng(3)
    k = rng.binomial(24, REF, size=(4000, 10))
    plug = np.abs(k / 24 - 0.5).mean(axis=1)
    excess = plug - M.fair_baseline(n=24)
    corrected = M.corrected_imbalance(successes=k, n=24).mean(axis=1)
    assert abs(corrected.mean() - theta) < 0.005
    assert excess.mean() < theta - 0.04  # understated by the fair-model baseline
    assert abs(corrected.mean() - theta) < abs(plug.mean() - theta)


def test_squared_imbalance_is_unbiased_everywhere():
    """E[k(k − 1)/(n(n − 1)) − k/n + ¼] = (p − ½)² exactly, parity and the ends included."""
    from scipy import stats

    for n in (2, 7, 24, 96):
        k = np.arange(n + 1)
        for p in (0.0, 0.02, 0.3, 0.5, 0.55, 0.97, 1.0):
            expect = stats.binom.pmf(k, n, p) @ M.squared_imbalance(successes=k, n=n)
            assert expect == pytest.approx((p - 0.5) ** 2, abs=1e-12)


def test_global_fair_test_has_its_size_and_agrees_with_holm():
    """The global test is Holm's first step: at most α for a fair model, and it rejects exactly
    when Holm calls some occupation unfair (so no report says both 'not rejected' and '1 unfair')."""
    from diffkit.audit._significance import binom_two_sided

    rng = np.random.default_rng(7)
    for p in (np.full(10, 0.5), np.r_[np.full(9, 0.5), 0.75], REF):
        k = rng.binomial(24, p, size=(2000, 10))
        pf = binom_two_sided(k, 24, 0.5)
        glob = M.global_fair_p(pf)
        n_unfair = (M.holm(pf) <= 0.05).sum(axis=1)
        assert np.array_equal(glob <= 0.05, n_unfair > 0)
        if p[0] == 0.5 and p[-1] == 0.5:
            assert np.mean(glob <= 0.05) <= 0.05 + 0.01


def test_holm_counts_keep_the_family_wise_error():
    """A reference-copying model: 'some occupation amplified' or 'some occupation reversed' claimed
    at most α of the time each."""
    from diffkit.audit._significance import binom_beyond, binom_reversed

    rng = np.random.default_rng(10)
    k = rng.binomial(24, REF, size=(2000, 10))
    for test in (binom_beyond, binom_reversed):
        pv = test(k, 24, np.broadcast_to(REF, k.shape))
        assert np.mean(np.any(M.holm(pv) <= 0.05, axis=1)) <= 0.05 + 0.01


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, np.nan])
    ours = M.holm(p)
    ref = multipletests(p[:-1], method="holm")[1]
    np.testing.assert_allclose(ours[:-1], ref, atol=1e-15)
    assert np.isnan(ours[-1])
    rows = np.array([[0.01, 0.04, 0.03], [0.5, 0.001, 0.02]])
    np.testing.assert_allclose(M.holm(rows), [multipletests(r, method="holm")[1] for r in rows], atol=1e-15)


def test_clopper_pearson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for x, n in [(0, 10), (3, 10), (10, 10), (17, 48)]:
        lo, hi = M.clopper_pearson_interval(successes=x, n=n, ci=0.99)
        assert (float(lo), float(hi)) == pytest.approx(proportion_confint(x, n, alpha=0.01, method="beta"), abs=1e-12)


def test_exact_binomial_tests_match_scipy():
    from scipy.stats import binomtest

    from diffkit.audit._significance import binom_beyond, binom_reversed, binom_two_sided

    for k, n, p0 in [(0, 24, 0.5), (7, 24, 0.5), (12, 24, 0.5), (3, 48, 0.053), (40, 48, 0.867), (48, 48, 0.2)]:
        assert binom_two_sided(k, n, p0) == pytest.approx(binomtest(k, n, p0).pvalue, rel=1e-12)
        if p0 == 0.5:  # a reference at ½ has no side: neither one-sided test is defined
            assert np.isnan(binom_beyond(k, n, p0)) and np.isnan(binom_reversed(k, n, p0))
            continue
        side = "greater" if p0 > 0.5 else "less"
        assert binom_beyond(k, n, p0) == pytest.approx(binomtest(k, n, p0, alternative=side).pvalue, rel=1e-12)
        other = "less" if p0 > 0.5 else "greater"
        assert binom_reversed(k, n, p0) == pytest.approx(binomtest(k, n, 0.5, alternative=other).pvalue, rel=1e-12)


def test_adaptive_bounds_equal_brute_force_enumeration():
    """The FFT convolution gives the exact quantiles: checked against enumerating every outcome of
    three small occupations (independent binomials at the Laplace shares)."""
    from itertools import product

    from scipy import stats

    from diffkit.audit import _adaptive

    k, n = np.array([0, 3, 5]), np.array([6, 6, 6])
    c_hi, j_hi, c_lo, j_lo, w, L = _adaptive.run_terms(k, n)
    q_hi, q_lo = _adaptive.quantiles_of_sum(c_hi, j_hi, c_lo, j_lo, w, L, 0.025)
    reg = _adaptive.pretest_regular(k, n)
    pt = (k + 1) / (n + 2)
    s = np.where(k >= n / 2, 1, -1)
    vals_hi, vals_lo, probs = [], [], []
    for K in product(*(range(m + 1) for m in n)):
        K = np.array(K)
        probs.append(np.prod(stats.binom.pmf(K, n, pt)))
        lin = s * (K / n - pt)
        dev = np.abs(K - k) / n
        vals_hi.append(np.sum(np.where(reg, lin, dev)))
        vals_lo.append(np.sum(np.where(reg, lin, -dev)))
    probs = np.array(probs)

    def upper(v):
        o = np.argsort(v, kind="stable")
        c = np.cumsum(probs[o])
        return np.asarray(v)[o][np.searchsorted(c, 1 - 0.025 - 1e-10)]

    def lower(v):
        o = np.argsort(v, kind="stable")
        c = np.cumsum(probs[o])
        return np.asarray(v)[o][np.searchsorted(c, 0.025 + 1e-10, side="right")]

    assert q_hi == pytest.approx(upper(vals_hi), abs=1e-9)
    assert q_lo == pytest.approx(lower(vals_lo), abs=1e-9)


def test_paired_joint_distribution_equals_the_multinomial():
    """The two-dimensional FFT of the pairs' generating function is the multinomial law of (K_a, K_b)."""
    from itertools import product

    from scipy import stats

    from diffkit.audit import _adaptive

    t = np.array([[2, 1, 0, 3]])
    N = 6
    *_, w, _ = _adaptive.paired_terms(t)
    pi = (t[0] + 0.5) / (N + 2)
    joint = np.zeros((N + 1, N + 1))
    for A, B, C in product(range(N + 1), repeat=3):
        D = N - A - B - C
        if D >= 0:
            joint[A + B, A + C] += stats.multinomial.pmf([A, B, C, D], N, pi)
    np.testing.assert_allclose(w.reshape(N + 1, N + 1), joint, atol=1e-13)


def test_same_inputs_give_the_same_bounds():
    """No interval depends on a random draw: two occupations with the same counts get the same
    Rogan–Gladen bounds in one table (issue 22 saw 0.130–0.140 for identical inputs)."""
    est, lo, hi = M.rogan_gladen_interval(
        successes=[0, 0, 0], n=24, se_successes=36, se_n=40, sp_successes=34, sp_n=40, seed=1
    )
    assert lo[0] == lo[1] == lo[2] and hi[0] == hi[1] == hi[2] and hi[0] > 0.02
    assert (
        M.rogan_gladen_interval(successes=[0], n=24, se_successes=36, se_n=40, sp_successes=34, sp_n=40, seed=2)[2][0]
        == hi[0]
    )
    a = M.mean_imbalance_interval(successes=np.array([2, 0, 0, 24, 0, 24, 4, 0, 0, 24]), n=24)
    assert a == M.mean_imbalance_interval(successes=np.array([2, 0, 0, 24, 0, 24, 4, 0, 0, 24]), n=24)


def test_rogan_gladen_interval_carries_se_sp_and_never_collapses():
    """Se 0.9, Sp 0.85 from 40 controls each: the interval covers at about its level or above and is
    never a point; below 1 − Sp the estimate is 0 and the interval starts at 0."""
    est, lo, hi = M.rogan_gladen_interval(successes=0, n=24, se_successes=36, se_n=40, sp_successes=34, sp_n=40)
    assert est[0] == 0 and lo[0] == 0 and hi[0] > 0.02
    few = M.rogan_gladen_interval(successes=10, n=48, se_successes=36, se_n=40, sp_successes=34, sp_n=40)
    many = M.rogan_gladen_interval(
        successes=10, n=48, se_successes=36_000, se_n=40_000, sp_successes=34_000, sp_n=40_000
    )
    assert few[0][0] == pytest.approx(many[0][0], abs=1e-3)
    assert (few[2] - few[1])[0] > (many[2] - many[1])[0] + 0.02


def test_rogan_gladen_with_a_perfect_known_classifier_is_the_beta_posterior():
    """Se = Sp = 1 known: the central interval of Beta(k + 1, n − k + 1), stretched to 0 at k = 0 and
    to 1 at k = n (Clopper–Pearson's behaviour at the ends)."""
    from scipy import stats

    big = 10**7
    for k in (0, 1, 5, 12, 23, 24):
        _, lo, hi = M.rogan_gladen_interval(successes=k, n=24, se_successes=big, se_n=big, sp_successes=big, sp_n=big)
        want_lo = 0.0 if k == 0 else stats.beta.ppf(0.025, k + 1, 25 - k)
        want_hi = 1.0 if k == 24 else stats.beta.ppf(0.975, k + 1, 25 - k)
        assert (lo[0], hi[0]) == pytest.approx((want_lo, want_hi), abs=2e-6)


def _before_after(seed: int, n_img: int = 24):
    """Two runs with the same seeds and prompts: each image's latent u (from its seed) decides its
    gender under both models, as a shared seed does; the mitigation moves every share towards ½."""
    rng = np.random.default_rng(seed)
    before = {o: p for o, p in zip("abcdefghij", REF)}
    after = {o: 0.5 + 0.5 * (p - 0.5) for o, p in before.items()}
    rows_a, rows_b = [], []
    for k, occ in enumerate(before):
        for t in range(2):
            for i in range(n_img):
                u = rng.random()
                base = dict(
                    prompt_id=k * 2 + t,
                    image_index=i,
                    kind="audit",
                    occupation=occ,
                    prompt=f"{occ} {t}",
                    seed=1000 * k + 10 * t + i,
                    stated_gender=None,
                    p_ref=before[occ],
                )
                rows_a.append({**base, "label": "female" if u < before[occ] else "male"})
                rows_b.append({**base, "label": "female" if u < after[occ] else "male"})
    return pd.DataFrame(rows_a), pd.DataFrame(rows_b)


def test_compare_metrics_runs_the_arithmetic_the_grid_simulates():
    """compare_metrics on image tables gives what the grid's array functions give on the counts."""
    from diffkit.audit._compare import paired_change_intervals, paired_overall

    a_img, b_img = _before_after(seed=13)
    a, b = M.audit_metrics(images=a_img), M.audit_metrics(images=b_img)
    by, ov = M.compare_metrics(a=a, b=b)
    pairs = M.pair_runs(a=a_img, b=b_img)
    occs = sorted(set(pairs["occupation"]))
    fa = pairs["label_a"] == "female"
    fb = pairs["label_b"] == "female"
    t = np.array(
        [
            [
                (fa & fb)[pairs["occupation"] == o].sum(),
                (fa & ~fb)[pairs["occupation"] == o].sum(),
                (~fa & fb)[pairs["occupation"] == o].sum(),
                (~fa & ~fb)[pairs["occupation"] == o].sum(),
            ]
            for o in occs
        ]
    )
    ref = a.by_occupation.set_index("occupation").loc[occs, "p_ref"].to_numpy()
    direct = paired_overall(t, ref)
    o = ov.set_index("metric")
    for key, (va, vb, d, lo, hi) in direct.items():
        assert o.loc[key, ["a", "b", "diff", "ci_low", "ci_high"]].tolist() == pytest.approx([va, vb, d, lo, hi])
    _, lo, hi, il, ih = paired_change_intervals(t)
    np.testing.assert_allclose(by["ci_low"], lo)
    np.testing.assert_allclose(by["imbalance_diff_low"], np.fmin(il, by["imbalance_diff"]))


def test_paired_comparison_is_narrower_than_independent():
    a_img, b_img = _before_after(seed=13)
    a = M.audit_metrics(images=a_img)
    b = M.audit_metrics(images=b_img)
    by_p, ov_p = M.compare_metrics(a=a, b=b)
    by_i, ov_i = M.compare_metrics(a=a, b=b, paired=False)
    assert ov_p.attrs["paired"] and not ov_i.attrs["paired"]
    assert "paired by prompt and seed: 480 image pairs" in ov_p.attrs["design"]
    wp = ov_p.set_index("metric").loc["mean_imbalance"]
    wi = ov_i.set_index("metric").loc["mean_imbalance"]
    assert wp["diff"] == pytest.approx(wi["diff"])
    assert (wp["ci_high"] - wp["ci_low"]) < (wi["ci_high"] - wi["ci_low"])
    assert wp["ci_high"] < 0  # the mitigation's reduction is detected
    ap = ov_p.set_index("metric").loc["amplification"]
    ai = ov_i.set_index("metric").loc["amplification"]
    assert (ap["ci_high"] - ap["ci_low"]) < 0.7 * (ai["ci_high"] - ai["ci_low"]) and ap["ci_high"] < 0
    width_p = (by_p["ci_high"] - by_p["ci_low"]).mean()
    width_i = (by_i["ci_high"] - by_i["ci_low"]).mean()
    assert width_p < 0.75 * width_i


def test_self_comparison_is_exactly_zero_and_never_a_point():
    """A run against itself: every difference exactly 0, every interval holds 0, is narrow, and is
    not a single point (24 concordant pairs cannot rule out a few percent of discordant ones)."""
    a_img, _ = _before_after(seed=14)
    a = M.audit_metrics(images=a_img)
    by, ov = M.compare_metrics(a=a, b=a)
    assert (by["diff"] == 0).all() and (by["ci_low"] < 0).all() and (by["ci_high"] > 0).all()
    assert (by["imbalance_diff"] == 0).all() and (by["imbalance_diff_low"] < 0).all()
    _, lo, hi = M.newcombe_interval(
        successes_a=by["p_female_a"] * by["n_a"], n_a=by["n_a"], successes_b=by["p_female_b"] * by["n_b"], n_b=by["n_b"]
    )
    mid = (by["p_female_a"] > 0.2) & (by["p_female_a"] < 0.8)
    assert ((by["ci_high"] - by["ci_low"])[mid] < 0.4 * (hi - lo)[mid]).all()
    o = ov.set_index("metric")
    for metric in ("mean_imbalance", "pooled_p_female", "amplification"):
        assert o.loc[metric, "diff"] == 0
        assert o.loc[metric, "ci_low"] < 0 < o.loc[metric, "ci_high"] < 0.1


def test_compare_refuses_runs_with_nothing_in_common_and_names_the_fix():
    from diffkit.errors import DiffkitError

    a_img, b_img = _before_after(seed=15)
    b_img = b_img.assign(occupation=b_img["occupation"] + "_other")
    a = M.audit_metrics(images=a_img)
    b = M.audit_metrics(images=b_img)
    with pytest.raises(M.NothingInCommonError, match="no occupation in common.*Fix: run both specs") as e:
        M.compare_metrics(a=a, b=b)
    assert isinstance(e.value, DiffkitError) and isinstance(e.value, ValueError)
    # the same occupations under other seeds: compared unpaired, and said so
    _, b_img2 = _before_after(seed=16)
    b2 = M.audit_metrics(images=b_img2.assign(seed=b_img2["seed"] + 10**6))
    by, ov = M.compare_metrics(a=a, b=b2)
    assert not ov.attrs["paired"] and ov.attrs["design"].startswith("independent")
    with pytest.raises(M.NothingInCommonError, match="share no \\(prompt, seed\\)"):
        M.compare_metrics(a=a, b=b2, paired=True)


def test_grid_refuses_what_it_cannot_simulate():
    from diffkit.errors import InputError

    with pytest.raises(InputError, match="unknown coverage cell.*fix: pick from"):
        coverage.coverage_grid(cells=["fiar"], reps=10)
    with pytest.raises(InputError, match="even n_images"):
        coverage.coverage_grid(n_images=25, reps=10)
