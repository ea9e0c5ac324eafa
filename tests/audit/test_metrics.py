"""Every metric against an independent implementation or a hand-worked case."""

from __future__ import annotations

from fractions import Fraction
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from diffkit.audit import metrics as M


def test_wilson_matches_statsmodels():
    x = np.array([0, 1, 2, 5, 9, 10, 17, 50, 100, 3])
    n = np.array([10, 10, 7, 10, 10, 10, 40, 100, 100, 3])
    for ci in (0.9, 0.95, 0.99):
        lo, hi = M.wilson_interval(successes=x, n=n, ci=ci)
        slo, shi = proportion_confint(x, n, alpha=1 - ci, method="wilson")
        np.testing.assert_allclose(lo, slo, atol=1e-12)
        np.testing.assert_allclose(hi, shi, atol=1e-12)
    lo, hi = M.wilson_interval(successes=0, n=0)
    assert np.isnan(lo) and np.isnan(hi)


def test_wilson_is_exact_at_the_ends():
    # 0 of 24 and 24 of 24: bounds of exactly 0 and 1 (the formula leaves 1e-17 in floating point),
    # so "the interval holds the truth" is true for a true share of 0 or 1
    lo, hi = M.wilson_interval(successes=np.array([0, 24]), n=np.array([24, 24]))
    assert lo[0] == 0.0 and hi[1] == 1.0
    assert 0.13 < hi[0] < 0.14 and 0.86 < lo[1] < 0.87


def test_functions_are_keyword_only():
    with pytest.raises(TypeError):
        M.wilson_interval(1, 2)  # noqa
    with pytest.raises(TypeError):
        M.fair_baseline(8)  # noqa
    with pytest.raises(TypeError):
        M.audit_metrics(pd.DataFrame())  # noqa


def _exact_baseline(n: int) -> Fraction:
    return sum(Fraction(comb(n, k), 2**n) * abs(Fraction(k, n) - Fraction(1, 2)) for k in range(n + 1))


def test_fair_baseline_hand_worked_and_exact():
    assert M.fair_baseline(n=1) == 0.5
    assert M.fair_baseline(n=2) == 0.25  # ¼·½ + ½·0 + ¼·½
    assert M.fair_baseline(n=8) == pytest.approx(35 / 256)  # E|p̂ − ½| of a fair model at n = 8: 35/256 ≈ 0.14
    ns = np.array([3, 8, 16, 64, 101])
    np.testing.assert_allclose(M.fair_baseline(n=ns), [float(_exact_baseline(int(m))) for m in ns], rtol=1e-12)
    # the classic approximation √(1/(2πn)) for large n
    assert M.fair_baseline(n=2000) == pytest.approx(np.sqrt(1 / (2 * np.pi * 2000)), rel=1e-3)


def test_rogan_gladen():
    # hand-worked: Se 0.9, Sp 0.8, observed 0.5 -> (0.5 + 0.8 - 1) / 0.7 = 3/7
    assert M.rogan_gladen(p_observed=0.5, sensitivity=0.9, specificity=0.8) == pytest.approx(3 / 7)
    # it inverts the misclassification model p_obs = Se p + (1 - Sp)(1 - p)
    p = np.linspace(0, 1, 11)
    obs = 0.85 * p + (1 - 0.7) * (1 - p)
    np.testing.assert_allclose(M.rogan_gladen(p_observed=obs, sensitivity=0.85, specificity=0.7), p, atol=1e-12)
    assert M.rogan_gladen(p_observed=0.05, sensitivity=0.9, specificity=0.8) == 0  # clipped
    with pytest.warns(UserWarning, match="no better than chance"):
        assert np.isnan(M.rogan_gladen(p_observed=0.5, sensitivity=0.5, specificity=0.5))
    # an inverted classifier (labels swapped: Se 0.1, Sp 0.2) is still correctable, and said so
    obs = 0.1 * 0.3 + (1 - 0.2) * 0.7
    with pytest.warns(UserWarning, match="inverted"):
        assert M.rogan_gladen(p_observed=obs, sensitivity=0.1, specificity=0.2) == pytest.approx(0.3)


def test_kl_against_scipy_entropy():
    for p in (0.0, 0.01, 0.2, 0.5, 0.77, 1.0):
        assert M.kl_to_uniform(p=p) == pytest.approx(stats.entropy([p, 1 - p], [0.5, 0.5]), abs=1e-12)


def test_pearson_spearman_against_scipy():
    rng = np.random.default_rng(1)
    x = rng.random(14)
    y = 0.6 * x + 0.4 * rng.random(14)
    r, p = M.pearson(x=x, y=y)
    sr = stats.pearsonr(x, y)
    assert r == pytest.approx(sr.statistic, abs=1e-12) and p == pytest.approx(sr.pvalue, rel=1e-9)
    xt, yt = np.round(x, 1), np.round(y, 1)  # with ties
    rho, p = M.spearman(x=xt, y=yt)
    ss = stats.spearmanr(xt, yt)
    assert rho == pytest.approx(ss.statistic, abs=1e-12) and p == pytest.approx(ss.pvalue, rel=1e-9)


def test_newcombe_against_statsmodels():
    for xa, na, xb, nb in [(3, 10, 7, 12), (0, 8, 8, 8), (20, 64, 31, 64), (5, 5, 1, 9)]:
        d, lo, hi = M.newcombe_interval(successes_a=xa, n_a=na, successes_b=xb, n_b=nb)
        slo, shi = confint_proportions_2indep(xb, nb, xa, na, method="newcomb", compare="diff")
        assert d == pytest.approx(xb / nb - xa / na)
        assert lo == pytest.approx(slo, abs=1e-12) and hi == pytest.approx(shi, abs=1e-12)


def _synthetic(shares: dict[str, float], n: int, se: float, sp: float, n_ctrl: int, seed: int) -> pd.DataFrame:
    """Images whose true gender is drawn with known shares, then misclassified with Se, Sp;
    some abstentions and no-person images mixed in."""
    rng = np.random.default_rng(seed)
    rows = []

    def label(true: str) -> str:
        u = rng.random()
        if u < 0.05:
            return "abstain"
        if u < 0.08:
            return "no_person"
        if true == "female":
            return "female" if rng.random() < se else "male"
        return "male" if rng.random() < sp else "female"

    for k, (occ, p) in enumerate(shares.items()):
        for i in range(n):
            true = "female" if rng.random() < p else "male"
            rows.append(
                dict(
                    prompt_id=k,
                    image_index=i,
                    kind="audit",
                    occupation=occ,
                    stated_gender=None,
                    p_ref=p,
                    label=label(true),
                )
            )
    for j, g in enumerate(("female", "male")):
        for i in range(n_ctrl):
            rows.append(
                dict(
                    prompt_id=100 + j,
                    image_index=i,
                    kind="control",
                    occupation="x",
                    stated_gender=g,
                    p_ref=np.nan,
                    label=label(g),
                )
            )
    return pd.DataFrame(rows)


SHARES = {"a": 0.05, "b": 0.2, "c": 0.4, "d": 0.5, "e": 0.7, "f": 0.9, "g": 0.97, "h": 0.3}


def test_synthetic_shares_recovered_within_intervals():
    img = _synthetic(SHARES, n=400, se=1.0, sp=1.0, n_ctrl=200, seed=0)
    res = M.audit_metrics(images=img, n_boot=300, seed=0)
    t = res.by_occupation.set_index("occupation")
    truth = pd.Series(SHARES)
    inside = (t["ci_low"] <= truth) & (truth <= t["ci_high"])
    assert inside.sum() >= len(SHARES) - 1  # 95% intervals: at most one miss in 8
    assert (t["n_abstain"] > 0).all() and (t["n_no_person"] > 0).all()
    assert (t["n"] == t["n_female"] + t["n_male"]).all()
    assert (t["n_images"] == 400).all()
    ov = res.overall.set_index("metric")
    assert ov.loc["pearson_r", "value"] > 0.99 and ov.loc["spearman_rho", "value"] > 0.95
    true_imb = (truth - 0.5).abs().mean()
    assert ov.loc["mean_imbalance", "ci_low"] <= true_imb + 0.01 <= ov.loc["mean_imbalance", "ci_high"] + 0.02
    assert ov.loc["sensitivity", "value"] == 1 and ov.loc["specificity", "value"] == 1


def test_rogan_gladen_recovers_shares_through_a_bad_classifier():
    img = _synthetic(SHARES, n=600, se=0.85, sp=0.75, n_ctrl=3000, seed=1)
    res = M.audit_metrics(images=img, n_boot=0)
    assert res.sensitivity == pytest.approx(0.85, abs=0.03) and res.specificity == pytest.approx(0.75, abs=0.03)
    t = res.by_occupation.set_index("occupation")
    truth = pd.Series(SHARES)
    raw_err = (t["p_female"] - truth).abs().mean()
    corr_err = (t["p_corrected"] - truth).abs().mean()
    assert corr_err < raw_err / 2
    inside = (t["corrected_low"] - 0.02 <= truth) & (truth <= t["corrected_high"] + 0.02)
    assert inside.sum() >= len(SHARES) - 1


def test_group_table_hand_worked():
    img = pd.DataFrame(
        {
            "prompt_id": [0] * 10,
            "kind": ["audit"] * 10,
            "occupation": ["pilot"] * 10,
            "p_ref": [0.053] * 10,
            "label": ["male"] * 6 + ["female"] * 2 + ["abstain", "no_person"],
        }
    )
    t = M.group_table(images=img, by="occupation").iloc[0]
    assert (t["n_images"], t["n"], t["n_female"], t["n_abstain"], t["n_no_person"]) == (10, 8, 2, 1, 1)
    assert t["p_female"] == 0.25 and t["imbalance"] == 0.25
    assert t["fair_baseline"] == pytest.approx(35 / 256)
    assert t["gap"] == pytest.approx(0.25 - 0.053)
    assert not t["amplified_holm"]  # the reference is more skewed (0.447 from ½) than p̂ (0.25)
    assert t["p_beyond_ref"] == pytest.approx(stats.binom.cdf(2, 8, 0.053))  # one-sided: p < p_ref
    assert (t["p_female_if_abstain_male"], t["p_female_if_abstain_female"]) == (2 / 9, 3 / 9)
    assert t["imbalance_corrected"] == pytest.approx(0.5 - float(M.expected_imbalance(p=0.25, n=8)))
    assert t["p_fair"] == pytest.approx(stats.binomtest(2, 8, 0.5).pvalue)
    lo, hi = proportion_confint(2, 8, method="beta")  # Clopper–Pearson, as every share
    assert (t["ci_low"], t["ci_high"]) == pytest.approx((lo, hi), abs=1e-12)


def _beta(x, n, ci=0.95):
    return proportion_confint(int(x), int(n), alpha=1 - ci, method="beta")


def test_every_share_the_audit_reports_is_clopper_pearson():
    """One rule (docs/audit_methodology.md §2): the per-occupation share, the pooled share and rates,
    Se and Sp (pooled and per occupation), the reliability bins and the published overlay all carry
    statsmodels' "beta" (Clopper–Pearson) interval, at the level asked for, p̂ = 0 and 1 included."""
    rng = np.random.default_rng(5)
    rows = []
    for occ, k_f in (("nurse", 24), ("pilot", 0), ("lawyer", 7)):
        labels = ["female"] * k_f + ["male"] * (24 - k_f) + ["abstain", "no_person", "blacked_out"]
        rows += [
            {
                "kind": "audit",
                "occupation": occ,
                "prompt_id": 0,
                "label": lab,
                "stated_gender": None,
                "p_female": float(lab == "female"),
            }
            for lab in labels
        ]
        for g, right in (("female", 9), ("male", 8)):
            labels = [g] * right + ["male" if g == "female" else "female"] * (10 - right)
            rows += [
                {
                    "kind": "control",
                    "occupation": occ,
                    "prompt_id": 1 if g == "female" else 2,
                    "label": lab,
                    "stated_gender": g,
                    "p_female": float(rng.uniform(0.6, 1) if lab == "female" else rng.uniform(0, 0.4)),
                }
                for lab in labels
            ]
    img = pd.DataFrame(rows)
    for ci in (0.95, 0.9):
        m = M.audit_metrics(images=img, ci=ci)
        occ = m.by_occupation.set_index("occupation")
        for name in ("nurse", "pilot", "lawyer"):
            r = occ.loc[name]
            assert (r["ci_low"], r["ci_high"]) == pytest.approx(_beta(r["n_female"], r["n"], ci), abs=1e-12)
        assert occ.loc["nurse", "ci_high"] == 1.0 and occ.loc["pilot", "ci_low"] == 0.0
        ov = m.overall.set_index("metric")
        aud = img[img["kind"] == "audit"]
        lab = aud[aud["label"].isin(["female", "male"])]
        expect = {
            "pooled_p_female": ((lab["label"] == "female").sum(), len(lab)),
            "sensitivity": (27, 30),
            "specificity": (24, 30),
            **{f"{k}_rate": ((aud["label"] == k).sum(), len(aud)) for k in ("abstain", "no_person", "blacked_out")},
        }
        for metric, (x, n) in expect.items():
            assert (ov.loc[metric, "ci_low"], ov.loc[metric, "ci_high"]) == pytest.approx(_beta(x, n, ci), abs=1e-12)
            assert "Clopper–Pearson" in ov.loc[metric, "interval"] and "Wilson" not in ov.loc[metric, "interval"]
        v = m.validation.set_index("measure")
        assert (v.loc["sensitivity", "ci_low"], v.loc["sensitivity", "ci_high"]) == pytest.approx(_beta(27, 30, ci))
        vo = m.validation_by_occupation.set_index("occupation").loc["lawyer"]
        assert (vo["se_low"], vo["se_high"]) == pytest.approx(_beta(9, 10, ci), abs=1e-12)
        assert (vo["sp_low"], vo["sp_high"]) == pytest.approx(_beta(8, 10, ci), abs=1e-12)
        for r in m.reliability[m.reliability["n"] > 0].itertuples():
            k = round(r.share_stated_female * r.n)
            assert (r.ci_low, r.ci_high) == pytest.approx(_beta(k, r.n, ci), abs=1e-12)
    from diffkit.audit.published import fair_diffusion_sd15

    fd = fair_diffusion_sd15(ci=0.9).set_index("occupation")
    for name in ("ceo", "nurse", "pilot"):
        r = fd.loc[name]
        assert (r["ci_low"], r["ci_high"]) == pytest.approx(_beta(r["n_woman"], r["n"], 0.9), abs=1e-12)


def test_amplification_and_holm_counts_hand_worked():
    img = pd.DataFrame(
        {
            "prompt_id": np.repeat([0, 1, 2, 3], 100),
            "kind": "audit",
            "occupation": np.repeat(list("abcd"), 100),
            "p_ref": np.repeat([0.8, 0.4, 0.2, 0.3], 100),
            "label": np.concatenate([np.where(np.arange(100) < k, "female", "male") for k in (95, 33, 5, 60)]),
        }
    )
    t = M.group_table(images=img, by="occupation")
    ov = M.overall_table(table=t).set_index("metric")
    # directional (Zhao et al. 2017): s = +1, −1, −1, −1; s(p̂ − r) = 0.15, 0.07, 0.15, −0.30
    assert ov.loc["amplification", "value"] == pytest.approx(np.mean([0.15, 0.07, 0.15, -0.30]))
    corrected = M.corrected_imbalance(successes=np.array([95, 33, 5, 60]), n=100)
    assert ov.loc["mean_imbalance", "value"] == pytest.approx(corrected.mean())
    lo, hi = ov.loc["amplification", ["ci_low", "ci_high"]]
    assert lo < ov.loc["amplification", "value"] < hi
    tt = t.set_index("occupation")
    # a: 95/100 beyond 0.8 (p ≈ 1e-5) and c: 5/100 beyond 0.2 (p ≈ 1e-5) survive Holm; b: 33/100 vs 0.4 (p ≈ 0.1) does not
    assert tt["amplified_holm"].to_dict() == {"a": True, "b": False, "c": True, "d": False}
    # d: 60/100 against a reference of 0.3 is on the other side of ½: reversed, never amplified; with
    # P(X ≥ 60 | ½) = 0.028 it is not significant after Holm over the four occupations
    assert tt["direction"].to_dict() == {"a": "amplified", "b": "amplified", "c": "amplified", "d": "reversed"}
    assert tt.loc["d", "p_reversed"] == pytest.approx(stats.binomtest(60, 100, 0.5, alternative="greater").pvalue)
    assert tt.loc["d", "p_reversed_holm"] == pytest.approx(4 * tt.loc["d", "p_reversed"])
    assert not tt["reversed_holm"].any() and ov.loc["n_reversed_holm", "value"] == 0
    assert ov.loc["n_amplified_holm", "value"] == 2 and ov.loc["n_amplified_holm", "n"] == 4
    assert ov.loc["fair_null_p", "value"] == pytest.approx(4 * tt["p_fair"].min())  # Holm's first step
    assert ov.loc["n_unfair_holm", "value"] == 3
    assert "95%" in ov.loc["amplification", "interval"] and "95%" in ov.loc["mean_imbalance", "interval"]
    assert "90%" in M.overall_table(table=t, ci=0.9).set_index("metric").loc["mean_imbalance", "interval"]


def test_a_reversal_is_reported_as_a_reversal_not_amplification():
    """diffkit-tiny 2's default run: pharmacist goes from a reference of 0.578 to 4 of 24 (0.17). The
    directional measure counts it against amplification, and Holm calls it reversed."""
    from diffkit.audit.coverage import REFERENCE, SHIPPED_SHARES

    occs = [
        "nurse",
        "housekeeper",
        "teacher",
        "pharmacist",
        "lawyer",
        "CEO",
        "software developer",
        "pilot",
        "firefighter",
        "electrician",
    ]
    rows = [
        dict(prompt_id=g, kind="audit", occupation=o, p_ref=r, label="female" if i < round(24 * p) else "male")
        for g, (o, r, p) in enumerate(zip(occs, REFERENCE, SHIPPED_SHARES))
        for i in range(24)
    ]
    t = M.group_table(images=pd.DataFrame(rows), by="occupation").set_index("occupation")
    assert t.loc["pharmacist", "direction"] == "reversed" and t.loc["pharmacist", "reversed_holm"]
    assert not t.loc["pharmacist", "amplified_holm"]
    assert t.loc["pharmacist", "amplification"] == pytest.approx(4 / 24 - 0.578)
    assert t.drop("pharmacist")["direction"].eq("amplified").all()
    ov = M.overall_table(table=t.reset_index()).set_index("metric")
    s = np.sign(REFERENCE - 0.5)
    assert ov.loc["amplification", "value"] == pytest.approx(np.mean(s * (SHIPPED_SHARES - REFERENCE)))
    assert ov.loc["n_reversed_holm", "value"] == 1
    # the old non-directional measure counted pharmacist as amplification (|0.17 − ½| > |0.578 − ½|)
    assert abs(4 / 24 - 0.5) - abs(0.578 - 0.5) > 0


def test_imbalance_interval_is_clopper_pearson_folded_at_parity():
    for x, n in [(0, 24), (3, 24), (12, 24), (20, 24), (24, 24), (40, 96)]:
        lo, hi = M.imbalance_interval(successes=x, n=n)
        cl, ch = proportion_confint(x, n, method="beta")
        want_lo = 0.0 if cl <= 0.5 <= ch else min(abs(cl - 0.5), abs(ch - 0.5))
        assert (float(lo), float(hi)) == pytest.approx((want_lo, max(abs(cl - 0.5), abs(ch - 0.5))), abs=1e-12)
        assert hi > lo


def test_imbalance_change_interval_is_the_range_over_the_rectangle():
    """|p_b − ½| − |p_a − ½| written in d = p_b − p_a and m = p_a + p_b − 1, its range over a rectangle
    of (d, m), against a dense grid of the rectangle."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        d0, d1 = np.sort(rng.uniform(-1, 1, 2))
        m0, m1 = np.sort(rng.uniform(-1, 1, 2))
        lo, hi = M.imbalance_change_interval(d_low=d0, d_high=d1, m_low=m0, m_high=m1)
        D, Mm = np.meshgrid(np.linspace(d0, d1, 201), np.linspace(m0, m1, 201))
        pa, pb = (1 + Mm - D) / 2, (1 + Mm + D) / 2
        f = np.abs(pb - 0.5) - np.abs(pa - 0.5)
        assert lo <= f.min() + 1e-12 and f.max() <= hi + 1e-12
        assert lo == pytest.approx(f.min(), abs=0.02) and hi == pytest.approx(f.max(), abs=0.02)


def test_format_p_value_never_rounds_to_a_number_it_is_not():
    assert M.format_p_value(0.0423) == "0.0423"
    assert M.format_p_value(1.2e-9) == "1.2e-09"
    assert M.format_p_value(1 / 10_001, n_sim=10_000) == "≤ 1/10,001"
    assert M.format_p_value(3 / 10_001, n_sim=10_000) == "0.0003"
    assert M.format_p_value(float("nan")) == "–"


def test_bad_arguments_are_diffkit_errors_that_name_the_fix():
    from diffkit.errors import DiffkitError, InputError

    with pytest.raises(InputError, match="ci must be in \\(0, 1\\).*fix") as e:
        M.wilson_interval(successes=1, n=2, ci=95)
    assert isinstance(e.value, DiffkitError) and isinstance(e.value, ValueError)
    assert issubclass(M.NothingInCommonError, DiffkitError) and issubclass(M.NothingInCommonError, ValueError)


def test_corrected_imbalance_is_the_exact_bootstrap_bias_correction():
    rng = np.random.default_rng(0)
    for k, n in [(0, 8), (3, 8), (12, 24), (40, 48)]:
        draws = np.abs(rng.binomial(n, k / n, size=400_000) / n - 0.5)
        assert M.corrected_imbalance(successes=k, n=n) == pytest.approx(2 * abs(k / n - 0.5) - draws.mean(), abs=2e-3)
    assert np.isnan(M.corrected_imbalance(successes=np.array([0]), n=np.array([0]))[0])


def test_references_may_lack_occupations():
    img = pd.DataFrame(
        {
            "prompt_id": [0] * 4 + [1] * 4,
            "kind": "audit",
            "occupation": ["a"] * 4 + ["zz"] * 4,
            "p_ref": [0.3] * 4 + [np.nan] * 4,
            "label": ["female", "male", "male", "male"] * 2,
        }
    )
    t = M.group_table(images=img, by="occupation").set_index("occupation")
    assert np.isnan(t.loc["zz", "p_ref"]) and t.loc["zz", "n"] == 4
    ov = M.overall_table(table=t.reset_index(), n_boot=20, seed=0).set_index("metric")
    assert ov.loc["amplification", "n"] == 1 and ov.loc["mean_imbalance", "n"] == 2


def test_bootstrap_is_seeded_and_covers():
    img = _synthetic(SHARES, n=50, se=1, sp=1, n_ctrl=10, seed=3)
    t = M.group_table(images=img, by="occupation")
    a = M.bootstrap_mean_imbalance(table=t, n_boot=500, seed=5)
    b = M.bootstrap_mean_imbalance(table=t, n_boot=500, seed=5)
    assert a == b and a[1] <= a[0] <= a[2]


def test_compare_metrics_identical_runs_give_zero():
    img = _synthetic(SHARES, n=80, se=1, sp=1, n_ctrl=20, seed=4)
    m = M.audit_metrics(images=img, n_boot=200, seed=0)
    # no prompt/seed columns: nothing to pair on, so compared as independent samples
    by, ov = M.compare_metrics(a=m, b=m, n_boot=200, seed=0)
    assert not ov.attrs["paired"] and (by["diff"] == 0).all() and (by["ci_low"] < 0).all()
    # with them, the same images pair up: exactly zero
    img = img.assign(prompt=img["occupation"], seed=img["image_index"])
    m = M.audit_metrics(images=img, n_boot=200, seed=0)
    by, ov = M.compare_metrics(a=m, b=m, n_boot=200, seed=0)
    assert ov.attrs["paired"] and (by["diff"] == 0).all()
    assert ((by["ci_low"] < 0) & (by["ci_high"] > 0) & (by["ci_high"] - by["ci_low"] < 0.13)).all()
    row = ov.set_index("metric").loc["mean_imbalance"]
    assert row["diff"] == 0 and row["ci_low"] < 0 < row["ci_high"] < 0.05  # never a point, and narrow


def _controls(rows):
    """Control images from (occupation, stated_gender, label, p_female, p_person) tuples."""
    return pd.DataFrame(
        [
            dict(
                prompt_id=100,
                image_index=i,
                kind="control",
                occupation=o,
                stated_gender=g,
                label=lab,
                p_female=pf,
                confidence=max(pf, 1 - pf),
                p_person=pp,
                p_ref=np.nan,
            )
            for i, (o, g, lab, pf, pp) in enumerate(rows)
        ]
    )


def test_controls_by_occupation_and_homogeneity():
    rows = (
        [("a", "female", "female", 0.9, 1.0)] * 18
        + [("a", "female", "male", 0.2, 1.0)] * 2
        + [("a", "male", "male", 0.1, 1.0)] * 20
        + [("b", "female", "female", 0.9, 1.0)] * 10
        + [("b", "female", "male", 0.3, 1.0)] * 10
        + [("b", "male", "male", 0.1, 1.0)] * 19
        + [("b", "male", "abstain", 0.45, 1.0)]
    )
    v = M.controls_by_occupation(images=_controls(rows)).set_index("occupation")
    assert v.loc["a", ["se_correct", "se_n", "sp_correct", "sp_n"]].tolist() == [18, 20, 20, 20]
    assert v.loc["b", ["se_correct", "se_n", "sp_correct", "sp_n"]].tolist() == [10, 20, 19, 19]  # abstention left out
    p_se = stats.chi2_contingency(np.array([[18, 2], [10, 10]]), correction=False)[1]
    assert v.attrs["p_homogeneous"] == pytest.approx(min(1.0, 2 * min(p_se, 1.0)))
    # with 20 labelled controls per stated gender in 'a' but 19 male in 'b', at min_controls = 20 'a' uses its own
    # Se/Sp and 'b' the pooled ones; at the default (8) both have enough
    audit = pd.DataFrame(
        {
            "prompt_id": [0] * 10 + [1] * 10,
            "kind": "audit",
            "occupation": ["a"] * 10 + ["b"] * 10,
            "stated_gender": None,
            "p_ref": np.nan,
            "label": ["female", "male"] * 10,
        }
    )
    both = pd.concat([audit, _controls(rows)])
    assert M.group_table(images=both, by="occupation")["se_sp_source"].tolist() == ["occupation", "occupation"]
    t = M.group_table(images=both, by="occupation", min_controls=20)
    assert t.set_index("occupation")["se_sp_source"].to_dict() == {"a": "occupation", "b": "pooled"}
    est = t.set_index("occupation")["p_corrected"]
    assert est["a"] == pytest.approx(M.rogan_gladen(p_observed=0.5, sensitivity=0.9, specificity=1.0))
    assert est["b"] == pytest.approx(M.rogan_gladen(p_observed=0.5, sensitivity=28 / 40, specificity=1.0))


def test_reliability_table_and_suggested_thresholds():
    # 10 controls per stated gender; two confident mistakes and two unsure images
    rows = (
        [("a", "female", "female", 0.99, 0.999)] * 8
        + [("a", "female", "male", 0.02, 0.99)]
        + [("a", "female", "abstain", 0.55, 0.95)]
        + [("a", "male", "male", 0.01, 0.999)] * 8
        + [("a", "male", "female", 0.97, 0.98)]
        + [("a", "male", "abstain", 0.58, 0.9)]
    )
    img = _controls(rows)
    rel = M.reliability_table(images=img).set_index("bin_low")
    assert rel["n"].sum() == 20
    assert rel.loc[0.9, "n"] == 9 and rel.loc[0.9, "share_stated_female"] == pytest.approx(8 / 9)
    assert rel.loc[0.5, "n"] == 2 and rel.loc[0.5, "share_stated_female"] == 0.5
    th = M.suggest_thresholds(images=img, max_error=0.1)
    # p_female ≥ ½ disagrees with the stated gender for p 0.02 (female), 0.97 and 0.58 (male): 3 of 20 kept at
    # t = 0.5; t = 0.97 keeps 18 with 2 wrong (0.11); t = 0.98 drops the 0.97 mistake: 1 of 17 ≤ 0.1
    assert th["abstain_below"] == pytest.approx(0.98) and th["error_at_suggestion"] == pytest.approx(1 / 17)
    assert th["kept_at_suggestion"] == pytest.approx(17 / 20)
    assert M.suggest_thresholds(images=img, max_error=0.15)["abstain_below"] == 0.5  # 3/20 = 0.15 already
    assert th["person_threshold"] == pytest.approx(np.quantile(img["p_person"], 0.01))
    assert M.suggest_thresholds(images=img, max_error=0.0)["abstain_below"] == 0.99  # only the surest are all right
    worst = _controls([("a", "female", "male", 0.01, 1.0), ("a", "male", "female", 0.99, 1.0)])
    assert np.isnan(M.suggest_thresholds(images=worst)["abstain_below"])  # no threshold reaches the target


def test_heim_way_and_fair_diffusion_way():
    img = pd.DataFrame(
        {
            "prompt_id": [0, 0, 0, 0, 1, 1, 1, 1],
            "kind": "audit",
            "occupation": ["x"] * 8,
            "p_ref": np.nan,
            "p_female": [0.9, 0.8, 0.55, 0.2, 0.1, 0.6, 0.52, 0.3],
            "label": ["female", "female", "abstain", "male", "male", "no_person", "abstain", "male"],
        }
    )
    # HEIM: per prompt the share of all images with p_female ≥ ½: 3/4 and 2/4 → |·−½| = 0.25, 0 → 0.125
    assert M.heim_gender_imbalance(images=img) == pytest.approx(0.125)
    t = M.group_table(images=img, by="occupation").iloc[0]
    # Fair Diffusion's way: every image past the gate, nobody abstains: 4 of 7 ≥ ½
    assert t["p_female_no_abstention"] == pytest.approx(4 / 7)
    assert t["p_female"] == pytest.approx(2 / 5)  # diffkit: labelled images only
    assert (t["abstain_rate"], t["no_person_rate"]) == (2 / 8, 1 / 8)


def test_random_state_is_not_an_alias_of_seed():
    """Renamed before the first release: the old keyword is an ordinary unknown keyword."""
    img = _synthetic(SHARES, n=20, se=1, sp=1, n_ctrl=10, seed=3)
    t = M.group_table(images=img, by="occupation")
    with pytest.raises(TypeError):
        M.bootstrap_mean_imbalance(table=t, n_boot=200, random_state=3)
    with pytest.raises(TypeError):
        M.fair_null_test(successes=[3, 9], n=[10, 10], n_sim=500, random_state=1)
