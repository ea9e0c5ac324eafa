"""Every headline interval gets a seeded coverage test (docs/audit_methodology.md).

The simulations run the library's own arithmetic (the functions ``overall_table`` and
``compare_metrics`` call), vectorised over many simulated audits at once, so each scenario
takes about a second. Sizes are the embedded default's: 10 occupations × 2 templates × 12
images. Three models: a fair one (p = ½ everywhere), one that copies the BLS reference, and
one that amplifies it (logit doubled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import diffkit.audit.metrics as M

# the ten occupations of the tiny_default spec, BLS CPS 2021 women-share (diffkit/audits/bls_cps_2021_women_share.csv)
REF = np.array([0.867, 0.887, 0.792, 0.578, 0.379, 0.291, 0.197, 0.053, 0.051, 0.017])


def _amplify(p):
    logit = np.log(p / (1 - p))
    return 1 / (1 + np.exp(-2 * logit))


MODELS = {"fair": np.full(10, 0.5), "bls_copying": REF, "amplifying": _amplify(REF)}
G, P, M_IMG = 10, 2, 12  # occupations, templates, images per prompt


def _simulate(p, *, reps: int, n_boot: int, seed: int, ci: float = 0.95, m: int = M_IMG):
    """reps audits of a model with true shares *p*: estimate, interval and fair-null p-value of
    the bias-corrected mean imbalance, with the library's resampling (images within prompts)."""
    rng = np.random.default_rng(seed)
    n_s = np.full(G * P, m)
    ind = np.kron(np.eye(G), np.ones((P, 1)))  # (strata, groups): prompt s belongs to occupation s // P
    k_s = rng.binomial(m, np.repeat(p, P), size=(reps, G * P))
    k_g = (k_s @ ind).astype(int)
    n_g = np.full(G, m * P)
    K = M._within_prompt_draws(n_s, k_s / m, ind, n_boot=n_boot, rng=rng)
    null = M._fair_null_draws(n_g, 10_000, rng)
    p_null = M._fair_null_p(k_g, n_g, null)
    est, lo, hi = M._imbalance_ci(K, k_g, n_g, ci=ci, p_null=p_null)
    return est, lo, hi, p_null, k_g


@pytest.mark.parametrize("model", list(MODELS))
def test_mean_imbalance_interval_covers_at_its_nominal_level(model):
    p = MODELS[model]
    theta = np.abs(p - 0.5).mean()
    est, lo, hi, _, _ = _simulate(p, reps=1000, n_boot=400, seed=1)
    coverage = np.mean((lo <= theta) & (theta <= hi))
    assert abs(coverage - 0.95) <= 0.03, f"{model}: coverage {coverage:.3f} of the 95% interval"
    assert np.all(lo <= est + 1e-12) and np.all(est <= hi + 1e-12)


def test_half_at_parity_is_the_known_weak_case():
    """Five occupations exactly at parity and five skewed: |p − ½| has a kink at ½, no estimator
    is unbiased there, and the interval under-covers (documented: about 88%, against 66% for a
    plain percentile interval)."""
    p = np.array([0.5] * 5 + [0.05, 0.9, 0.2, 0.97, 0.3])
    theta = np.abs(p - 0.5).mean()
    _, lo, hi, _, _ = _simulate(p, reps=1000, n_boot=400, seed=20)
    assert 0.84 <= np.mean((lo <= theta) & (theta <= hi)) < 0.95


def test_coverage_follows_ci():
    theta = np.abs(REF - 0.5).mean()
    _, lo, hi, _, _ = _simulate(REF, reps=1000, n_boot=400, seed=2, ci=0.8)
    coverage = np.mean((lo <= theta) & (theta <= hi))
    assert abs(coverage - 0.80) <= 0.04, coverage


def test_bias_corrected_estimator_against_plug_in():
    """The plug-in |p̂ − ½| and 'excess' imbalance miss a biased model's true imbalance; the
    corrected one does not (issue 14: excess 0.237 against a true 0.314)."""
    theta = np.abs(REF - 0.5).mean()
    est, _, _, _, k_g = _simulate(REF, reps=4000, n_boot=1, seed=3)
    n = M_IMG * P
    plug = np.abs(k_g / n - 0.5).mean(axis=1)
    excess = plug - M.fair_baseline(n=n)
    assert abs(est.mean() - theta) < 0.005
    assert excess.mean() < theta - 0.04  # understated by the fair-model baseline
    raw = M.corrected_imbalance(successes=k_g, n=n).mean(axis=1)  # unfloored
    assert abs(raw.mean() - theta) < abs(plug.mean() - theta)


def test_amplification_holds_zero_for_a_reference_copying_model():
    """amplification = mean |p − ½| − mean |p_ref − ½|, a fixed shift of the imbalance interval."""
    s = np.abs(REF - 0.5).mean()
    est, lo, hi, _, _ = _simulate(REF, reps=1000, n_boot=400, seed=4)
    inside = np.mean((lo - s <= 0) & (0 <= hi - s))
    assert inside >= 0.93, inside
    # and it sees a model that amplifies
    amp = np.abs(_amplify(REF) - 0.5).mean() - s
    est, lo, hi, _, _ = _simulate(_amplify(REF), reps=300, n_boot=400, seed=5)
    assert amp > 0.05 and np.mean(lo - s > 0) > 0.9


def test_the_old_amplification_share_was_a_coin_flip():
    """Why amplification_share went: for a reference-copying model 'beyond the reference' is a
    coin flip per occupation, so the share sits near ½ where the truth is 0."""
    rng = np.random.default_rng(6)
    p_hat = rng.binomial(192, REF, size=(2000, G)) / 192
    side = np.sign(REF - 0.5)
    beyond = (np.sign(p_hat - 0.5) == side) & (np.abs(p_hat - 0.5) > np.abs(REF - 0.5))
    assert 0.4 < beyond.mean() < 0.6


def test_fair_null_test_has_its_size():
    _, _, _, p_null, _ = _simulate(MODELS["fair"], reps=2000, n_boot=1, seed=7)
    assert abs(np.mean(p_null < 0.05) - 0.05) <= 0.015
    _, _, _, p_null, _ = _simulate(REF, reps=200, n_boot=1, seed=8)
    assert np.all(p_null < 0.05)


def test_simultaneous_intervals_cover_jointly():
    """Ten pointwise 95% Wilson intervals hold all ten shares together far less often than 95%;
    the simultaneous ones (Clopper–Pearson at 1 − α/G) at least 95%."""
    rng = np.random.default_rng(9)
    for p in (REF, _amplify(REF), MODELS["fair"]):
        n = 48
        k = rng.binomial(n, p, size=(3000, G))
        lo, hi = M.wilson_interval(successes=k, n=n)
        slo, shi = M.clopper_pearson_interval(successes=k, n=n, ci=1 - 0.05 / G)
        joint = np.mean(np.all((lo <= p) & (p <= hi), axis=1))
        sjoint = np.mean(np.all((slo <= p) & (p <= shi), axis=1))
        assert joint < 0.9 and 0.94 <= sjoint, (joint, sjoint)


def test_holm_counts_keep_the_family_wise_error():
    """A reference-copying model: 'some occupation amplified' claimed at most α of the time."""
    rng = np.random.default_rng(10)
    n = 24
    k = rng.binomial(n, REF, size=(2000, G))
    pv = M._binom_beyond(k, n, np.broadcast_to(REF, k.shape))
    claims = np.array([np.any(M.holm(row) <= 0.05) for row in pv])
    assert claims.mean() <= 0.05 + 0.01
    # against the fair null with a fair model: any occupation called unfair at most α of the time
    kf = rng.binomial(n, 0.5, size=(400, G))
    pf = M._binom_two_sided(kf, n, 0.5)
    assert np.mean([np.any(M.holm(row) <= 0.05) for row in pf]) <= 0.05 + 0.02


def test_clopper_pearson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for x, n in [(0, 10), (3, 10), (10, 10), (17, 48)]:
        lo, hi = M.clopper_pearson_interval(successes=x, n=n, ci=0.99)
        assert (float(lo), float(hi)) == pytest.approx(proportion_confint(x, n, alpha=0.01, method="beta"), abs=1e-12)


def test_exact_binomial_test_matches_scipy():
    from scipy.stats import binomtest

    for k, n, p0 in [(0, 24, 0.5), (7, 24, 0.5), (12, 24, 0.5), (3, 48, 0.053), (40, 48, 0.867), (48, 48, 0.2)]:
        assert M._binom_two_sided(k, n, p0) == pytest.approx(binomtest(k, n, p0).pvalue, rel=1e-12)


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = np.array([0.01, 0.04, 0.03, 0.2, 0.001, np.nan])
    ours = M.holm(p)
    ref = multipletests(p[:-1], method="holm")[1]
    np.testing.assert_allclose(ours[:-1], ref, atol=1e-15)
    assert np.isnan(ours[-1])


def test_rogan_gladen_interval_carries_se_sp_and_never_collapses():
    """Se 0.9, Sp 0.85 from 40 controls each: the posterior interval covers the true share at about
    its level and never has zero width (the old clipped interval gave [0, 0])."""
    rng = np.random.default_rng(11)
    se, sp, n, m = 0.9, 0.85, 48, 40
    cover, widths = [], []
    for p in (0.02, 0.3, 0.7):
        reps = 150
        k = rng.binomial(n, se * p + (1 - sp) * (1 - p), size=reps)
        xs = rng.binomial(m, se, size=reps)
        xp = rng.binomial(m, sp, size=reps)
        est, lo, hi = M.rogan_gladen_interval(successes=k, n=n, se_successes=xs, se_n=m, sp_successes=xp, sp_n=m,
                                              n_draws=400, seed=12)
        cover.append(np.mean((lo <= p) & (p <= hi)))
        widths.append(np.min(hi - lo))
    assert min(cover) >= 0.9 and max(cover) <= 1.0, cover
    assert min(widths) > 0.01, widths
    # an observed share below 1 − Sp: estimate clipped to 0, interval still of positive width
    est, lo, hi = M.rogan_gladen_interval(successes=0, n=24, se_successes=36, se_n=40, sp_successes=34, sp_n=40)
    assert est[0] == 0 and lo[0] == 0 and hi[0] > 0.02


def test_rogan_gladen_interval_is_wider_than_conditioning_on_se_sp():
    few = M.rogan_gladen_interval(successes=10, n=48, se_successes=36, se_n=40, sp_successes=34, sp_n=40,
                                  seed=0)
    many = M.rogan_gladen_interval(successes=10, n=48, se_successes=36_000, se_n=40_000, sp_successes=34_000,
                                   sp_n=40_000, seed=0)
    assert few[0][0] == pytest.approx(many[0][0], abs=1e-3)
    assert (few[2] - few[1])[0] > (many[2] - many[1])[0] + 0.02


def _before_after(seed: int, n_img: int = 24):
    """Two runs with the same seeds and prompts: each image's latent u (from its seed) decides its
    gender under both models, as a shared seed does; the mitigation moves every share towards ½."""
    rng = np.random.default_rng(seed)
    before = {o: p for o, p in zip("abcdefghij", REF)}
    after = {o: 0.5 + 0.5 * (p - 0.5) for o, p in before.items()}
    rows_a, rows_b = [], []
    for k, occ in enumerate(before):
        for t in range(P):
            for i in range(n_img):
                u = rng.random()
                base = dict(prompt_id=k * P + t, image_index=i, kind="audit", occupation=occ,
                            prompt=f"{occ} {t}", seed=1000 * k + 10 * t + i, stated_gender=None, p_ref=before[occ])
                rows_a.append({**base, "label": "female" if u < before[occ] else "male"})
                rows_b.append({**base, "label": "female" if u < after[occ] else "male"})
    return pd.DataFrame(rows_a), pd.DataFrame(rows_b)


def test_paired_comparison_is_narrower_than_independent():
    a_img, b_img = _before_after(seed=13)
    a = M.audit_metrics(images=a_img, n_boot=500, seed=0)
    b = M.audit_metrics(images=b_img, n_boot=500, seed=0)
    by_p, ov_p = M.compare_metrics(a=a, b=b, n_boot=500, seed=0)
    by_i, ov_i = M.compare_metrics(a=a, b=b, n_boot=500, seed=0, paired=False)
    assert ov_p.attrs["paired"] and not ov_i.attrs["paired"]
    assert "paired by prompt and seed: 480 image pairs" in ov_p.attrs["design"]
    wp = ov_p.set_index("metric").loc["mean_imbalance"]
    wi = ov_i.set_index("metric").loc["mean_imbalance"]
    assert wp["diff"] == pytest.approx(wi["diff"])
    assert (wp["ci_high"] - wp["ci_low"]) < 0.85 * (wi["ci_high"] - wi["ci_low"])
    assert wp["ci_high"] < 0  # the mitigation's reduction is detected
    width_p = (by_p["ci_high"] - by_p["ci_low"]).mean()
    width_i = (by_i["ci_high"] - by_i["ci_low"]).mean()
    assert width_p < 0.7 * width_i


def _light(images: pd.DataFrame) -> M.AuditMetrics:
    """The tables compare_metrics reads, without the overall bootstrap (fast)."""
    occ = M.group_table(images=images, by="occupation", controls="none")
    return M.AuditMetrics(images, M.group_table(images=images, by="prompt_id", controls="none"), occ,
                          pd.DataFrame(), pd.DataFrame({"metric": [], "value": []}))


def test_paired_interval_covers_the_true_change():
    """Coverage of the paired interval for Δ mean imbalance over seeded before/after audits
    (96 images per occupation)."""
    true = np.abs(0.5 * (REF - 0.5)).mean() - np.abs(REF - 0.5).mean()
    hits = []
    for s in range(30):
        a_img, b_img = _before_after(seed=100 + s, n_img=48)
        _, ov = M.compare_metrics(a=_light(a_img), b=_light(b_img), n_boot=300, seed=s)
        r = ov.set_index("metric").loc["mean_imbalance"]
        hits.append(r["ci_low"] <= true <= r["ci_high"])
    assert np.mean(hits) >= 0.88, np.mean(hits)


def test_newcombe_paired_covers_per_occupation():
    """Seeded before/after pairs at the default's 24 images per occupation: the per-occupation
    paired interval covers the true change at about its level (a percentile bootstrap of the
    pairs gave 88% here)."""
    rng = np.random.default_rng(17)
    after = 0.5 + 0.5 * (REF - 0.5)
    u = rng.random((3000, G, 24))
    fa, fb = u < REF[None, :, None], u < after[None, :, None]
    d, lo, hi = M.newcombe_paired_interval(both=(fa & fb).sum(-1), a_only=(fa & ~fb).sum(-1),
                                           b_only=(~fa & fb).sum(-1), neither=(~fa & ~fb).sum(-1))
    cover = ((lo <= after - REF) & (after - REF <= hi)).mean()
    assert 0.94 <= cover <= 0.99, cover
    np.testing.assert_allclose(d.mean(0), after - REF, atol=0.01)


def test_self_comparison_is_exactly_zero_with_zero_width():
    a_img, _ = _before_after(seed=14)
    a = M.audit_metrics(images=a_img, n_boot=200, seed=0)
    by, ov = M.compare_metrics(a=a, b=a, n_boot=200, seed=0)
    assert (by["diff"] == 0).all() and (by["ci_low"] <= 0).all() and (by["ci_high"] >= 0).all()
    # per occupation only what the concordant pairs cannot rule out: far narrower than unpaired
    _, lo, hi = M.newcombe_interval(successes_a=by["p_female_a"] * by["n_a"], n_a=by["n_a"],
                                    successes_b=by["p_female_b"] * by["n_b"], n_b=by["n_b"])
    mid = (by["p_female_a"] > 0.2) & (by["p_female_a"] < 0.8)
    assert ((by["ci_high"] - by["ci_low"])[mid] < 0.3 * (hi - lo)[mid]).all()
    o = ov.set_index("metric")
    for metric in ("mean_imbalance", "pooled_p_female", "amplification"):
        assert o.loc[metric, ["diff", "ci_low", "ci_high"]].tolist() == [0, 0, 0]


def test_compare_refuses_runs_with_nothing_in_common_and_names_the_fix():
    a_img, b_img = _before_after(seed=15)
    b_img = b_img.assign(occupation=b_img["occupation"] + "_other")
    a = M.audit_metrics(images=a_img, n_boot=0)
    b = M.audit_metrics(images=b_img, n_boot=0)
    with pytest.raises(M.NothingInCommonError, match="no occupation in common.*Fix: run both specs"):
        M.compare_metrics(a=a, b=b, n_boot=0)
    # the same occupations under other seeds: compared unpaired, and said so
    _, b_img2 = _before_after(seed=16)
    b2 = M.audit_metrics(images=b_img2.assign(seed=b_img2["seed"] + 10**6), n_boot=0)
    by, ov = M.compare_metrics(a=a, b=b2, n_boot=50, seed=0)
    assert not ov.attrs["paired"] and ov.attrs["design"].startswith("independent")
    with pytest.raises(M.NothingInCommonError, match="share no \\(prompt, seed\\)"):
        M.compare_metrics(a=a, b=b2, n_boot=0, paired=True)
