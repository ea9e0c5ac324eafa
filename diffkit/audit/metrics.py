"""Bias statistics that hold up to review: tidy tables, intervals, baselines, corrections.

Tidy all the way: the per-image table from :func:`~diffkit.audit.score.score_images` →
:func:`group_table` per prompt or per occupation → :func:`overall_table`. Every function
takes keywords only (fairlearn's ``MetricFrame`` style) and returns pandas objects.
The formulas and their sources are in ``docs/audit_methodology.md``; in short:

======================  =============================================================
Wilson interval         (p̂ + z²/2n ± z √(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)   (Wilson 1927)
imbalance               |p̂ − ½|                                       (HEIM, Lee et al. 2023)
fair-model baseline     E|X/n − ½|, X ~ Binomial(n, ½), exact sum over k
gap to reference        p̂ − p_ref
Rogan–Gladen            (p̂ + Sp − 1) / (Se + Sp − 1), clipped to [0, 1]  (Rogan & Gladen 1978)
KL to uniform           p̂ ln 2p̂ + (1−p̂) ln 2(1−p̂)   (nats)
Pearson, Spearman       r of (p̂, p_ref); Spearman = Pearson of average ranks
amplification share     share with sign(p̂−½) = sign(p_ref−½) and |p̂−½| > |p_ref−½|
Newcombe difference     hybrid score interval for p̂_b − p̂_a               (Newcombe 1998, #10)
======================  =============================================================

Only images labelled ``female`` or ``male`` enter p̂; ``abstain`` and ``no_person`` are
counted beside it, never forced into a class.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "AuditMetrics",
    "audit_metrics",
    "bootstrap_mean_imbalance",
    "classifier_validation",
    "compare_metrics",
    "fair_baseline",
    "group_table",
    "kl_to_uniform",
    "newcombe_interval",
    "overall_table",
    "pearson",
    "rogan_gladen",
    "spearman",
    "wilson_interval",
]


def _z(ci: float) -> float:
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    return float(stats.norm.ppf(0.5 + ci / 2))


def wilson_interval(*, successes, n, ci: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for a binomial proportion (Wilson 1927); NaN where n = 0.

    >>> lo, hi = wilson_interval(successes=8, n=10)
    >>> round(float(lo), 4), round(float(hi), 4)
    (0.4902, 0.9433)
    """
    x = np.asarray(successes, dtype=float)
    n = np.asarray(n, dtype=float)
    z = _z(ci)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = x / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
        lo, hi = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    # exact at the ends (centre − half cancels to 0 when p̂ = 0, but not in floating point),
    # so an interval of 0 of n images holds a true share of exactly 0
    lo, hi = np.where(x == 0, 0.0, lo), np.where(x == n, 1.0, hi)
    lo = np.where(n > 0, lo, np.nan)
    hi = np.where(n > 0, hi, np.nan)
    return lo, hi


def fair_baseline(*, n) -> np.ndarray:
    """E|p̂ − ½| for a perfectly fair model with *n* labelled images: Σ_k C(n,k) 2⁻ⁿ |k/n − ½|.

    Exact (the binomial pmf summed over k); NaN where n = 0.

    >>> float(fair_baseline(n=8))  # 35/256: eight images already show 0.14 "bias"
    0.13671875
    """
    n_arr = np.atleast_1d(np.asarray(n, dtype=int))
    out = np.full(n_arr.shape, np.nan)
    for j, m in enumerate(n_arr):
        if m > 0:
            k = np.arange(m + 1)
            out[j] = float(np.sum(stats.binom.pmf(k, m, 0.5) * np.abs(k / m - 0.5)))
    return out.reshape(np.shape(n)) if np.ndim(n) else out[0]


def rogan_gladen(*, p_observed, sensitivity: float, specificity: float) -> np.ndarray:
    """Rogan–Gladen (1978) estimate of the true share from an imperfect classifier.

    ``(p_obs + Sp − 1) / (Se + Sp − 1)``, clipped to [0, 1]. Here "positive" is female:
    Se = P(labelled female | stated female), Sp = P(labelled male | stated male), both measured
    on the control prompts. NaN (with a warning) when Se + Sp ≤ 1: the classifier is no
    better than chance and nothing can be corrected.
    """
    p = np.asarray(p_observed, dtype=float)
    j = sensitivity + specificity - 1
    if not np.isfinite(j) or j <= 0:
        warnings.warn(
            f"sensitivity + specificity = {sensitivity + specificity:.3f} ≤ 1: the classifier is no better "
            "than chance on the control prompts, so the Rogan–Gladen correction is undefined",
            stacklevel=2,
        )
        return np.full(p.shape, np.nan)
    return np.clip((p + specificity - 1) / j, 0, 1)


def kl_to_uniform(*, p) -> np.ndarray:
    """KL(Bernoulli(p) ‖ Bernoulli(½)) in nats: p ln 2p + (1−p) ln 2(1−p), with 0 ln 0 = 0."""
    p = np.asarray(p, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(2 * p), 0.0)
        b = np.where(p < 1, (1 - p) * np.log(2 * (1 - p)), 0.0)
    return np.where(np.isnan(p), np.nan, a + b)


def pearson(*, x, y) -> tuple[float, float]:
    """Pearson's r and its two-sided p-value (t with n − 2 degrees of freedom)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    r = float(np.clip((xc @ yc) / math.sqrt((xc @ xc) * (yc @ yc)), -1, 1))
    if abs(r) == 1:
        return r, 0.0
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return r, float(2 * stats.t.sf(abs(t), n - 2))


def _rank(a: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    ranks = np.empty(len(a))
    i = 0
    while i < len(a):
        j = i
        while j + 1 < len(a) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(*, x, y) -> tuple[float, float]:
    """Spearman's ρ (Pearson's r of average ranks) and its t-approximation p-value."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return pearson(x=_rank(x[ok]), y=_rank(y[ok]))


def newcombe_interval(*, successes_a, n_a, successes_b, n_b, ci: float = 0.95):
    """Newcombe's (1998, method 10) hybrid score interval for p_b − p_a, from Wilson intervals."""
    pa = np.asarray(successes_a, float) / np.asarray(n_a, float)
    pb = np.asarray(successes_b, float) / np.asarray(n_b, float)
    la, ua = wilson_interval(successes=successes_a, n=n_a, ci=ci)
    lb, ub = wilson_interval(successes=successes_b, n=n_b, ci=ci)
    d = pb - pa
    lo = d - np.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    hi = d + np.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    return d, lo, hi


# --------------------------------------------------------------------------- tables
def _counts(g: pd.DataFrame) -> pd.Series:
    lab = g["label"]
    return pd.Series({
        "n_images": len(g),
        "n_no_person": int((lab == "no_person").sum()),
        "n_abstain": int((lab == "abstain").sum()),
        "n_female": int((lab == "female").sum()),
        "n_male": int((lab == "male").sum()),
    })


def classifier_validation(*, images: pd.DataFrame, ci: float = 0.95) -> pd.DataFrame:
    """The classifier on the control prompts (the gender stated): one row per stated gender.

    ``accuracy`` among labelled images is the sensitivity for ``female`` and the specificity
    for ``male`` (female is "positive"), with a Wilson interval; abstentions and no-person
    images are counted beside it.
    """
    ctrl = images[images["kind"] == "control"]
    rows = []
    for g in ("female", "male"):
        sub = ctrl[ctrl["stated_gender"] == g]
        c = _counts(sub)
        n = c["n_female"] + c["n_male"]
        correct = c[f"n_{g}"]
        lo, hi = wilson_interval(successes=correct, n=n, ci=ci)
        rows.append({
            "stated_gender": g,
            "measure": "sensitivity" if g == "female" else "specificity",
            **c.to_dict(),
            "n_labelled": int(n),
            "n_correct": int(correct),
            "accuracy": correct / n if n else np.nan,
            "ci_low": float(lo),
            "ci_high": float(hi),
        })
    return pd.DataFrame(rows)


def group_table(
    *,
    images: pd.DataFrame,
    by: str | list[str] = "occupation",
    ci: float = 0.95,
    sensitivity: float | None = None,
    specificity: float | None = None,
    kind: Literal["audit", "control", "all"] = "audit",
) -> pd.DataFrame:
    """Per group (``"occupation"``, or ``"prompt_id"`` for per prompt): counts, p̂_female and every
    per-group metric.

    Columns: ``n_images, n_no_person, n_abstain, n_female, n_male, n`` (labelled),
    ``p_female, ci_low, ci_high`` (Wilson), ``imbalance`` (|p̂ − ½|), ``fair_baseline``
    (E|p̂ − ½| for that n), ``excess_imbalance``, ``kl_uniform``, ``p_ref``, ``gap``
    (p̂ − p_ref), ``p_corrected, corrected_low, corrected_high`` (Rogan–Gladen, when
    sensitivity and specificity are given), ``amplified``, ``amplified_significant``.
    """
    by = [by] if isinstance(by, str) else list(by)
    df = images if kind == "all" else images[images["kind"] == kind]
    keep = [c for c in ("occupation", "prompt", "template_id") if c in df.columns and c not in by]
    if by == ["prompt_id"]:
        extra = df.groupby("prompt_id", sort=True)[keep].first()
    elif len(df):
        extra = pd.DataFrame(index=df.groupby(by, sort=True).size().index)
    else:
        extra = pd.DataFrame()
    if df.empty:
        return pd.DataFrame(columns=[*by, "n_images", "n", "p_female", "ci_low", "ci_high"])
    counts = df.groupby(by, sort=True)[["label"]].apply(_counts)
    t = extra.join(counts).reset_index()
    t["n"] = t["n_female"] + t["n_male"]
    with np.errstate(invalid="ignore", divide="ignore"):
        t["p_female"] = np.where(t["n"] > 0, t["n_female"] / t["n"].where(t["n"] > 0, 1), np.nan)
    t["ci_low"], t["ci_high"] = wilson_interval(successes=t["n_female"], n=t["n"], ci=ci)
    t["imbalance"] = (t["p_female"] - 0.5).abs()
    t["fair_baseline"] = fair_baseline(n=t["n"].to_numpy())
    t["excess_imbalance"] = t["imbalance"] - t["fair_baseline"]
    t["kl_uniform"] = kl_to_uniform(p=t["p_female"].to_numpy())
    if "p_ref" in df.columns:
        ref = df.groupby(by, sort=True)["p_ref"].first().reset_index(drop=True)
        t["p_ref"] = ref.astype(float).to_numpy()
    else:
        t["p_ref"] = np.nan
    t["gap"] = t["p_female"] - t["p_ref"]
    if sensitivity is not None and specificity is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t["p_corrected"] = rogan_gladen(p_observed=t["p_female"], sensitivity=sensitivity, specificity=specificity)
            t["corrected_low"] = rogan_gladen(p_observed=t["ci_low"], sensitivity=sensitivity, specificity=specificity)
            t["corrected_high"] = rogan_gladen(p_observed=t["ci_high"], sensitivity=sensitivity, specificity=specificity)
    else:
        t["p_corrected"] = t["corrected_low"] = t["corrected_high"] = np.nan
    ref_side = np.sign(t["p_ref"] - 0.5)
    t["amplified"] = (
        (np.sign(t["p_female"] - 0.5) == ref_side) & (ref_side != 0) & (t["imbalance"] > (t["p_ref"] - 0.5).abs())
    )
    t["amplified_significant"] = ((ref_side > 0) & (t["ci_low"] > t["p_ref"])) | (
        (ref_side < 0) & (t["ci_high"] < t["p_ref"])
    )
    return t


def _boot_draws(
    t: pd.DataFrame, *, n_boot: int, random_state, p_col: str = "p_female"
) -> np.ndarray:
    """(n_boot, G) bootstrap p̂: resample groups (prompts/occupations) with replacement, then
    each chosen group's labelled images with replacement (a binomial draw)."""
    rng = np.random.default_rng(random_state)
    t = t[t["n"] > 0]
    n = t["n"].to_numpy()
    p = t[p_col].to_numpy()
    idx = rng.integers(0, len(t), size=(n_boot, len(t)))
    return rng.binomial(n[idx], p[idx]) / n[idx], idx


def bootstrap_mean_imbalance(
    *, table: pd.DataFrame, n_boot: int = 1000, ci: float = 0.95, random_state=None
) -> tuple[float, float, float]:
    """Mean |p̂ − ½| over groups with a two-stage percentile bootstrap (groups, then images)."""
    t = table[table["n"] > 0]
    est = float(t["imbalance"].mean()) if len(t) else np.nan
    if n_boot <= 0 or len(t) == 0:
        return est, np.nan, np.nan
    draws, _ = _boot_draws(t, n_boot=n_boot, random_state=random_state)
    m = np.abs(draws - 0.5).mean(axis=1)
    a = (1 - ci) / 2
    return est, float(np.quantile(m, a)), float(np.quantile(m, 1 - a))


def overall_table(
    *,
    table: pd.DataFrame,
    images: pd.DataFrame | None = None,
    n_boot: int = 1000,
    ci: float = 0.95,
    random_state=None,
) -> pd.DataFrame:
    """Overall metrics from a :func:`group_table`, tidy: ``metric, value, ci_low, ci_high, n, description``.

    Bootstrap intervals resample groups and then images within them (two stages, percentile,
    ``n_boot`` draws, seeded by ``random_state``).
    """
    t = table[table["n"] > 0].reset_index(drop=True)
    a = (1 - ci) / 2
    rows: list[dict] = []

    def add(metric, value, lo=np.nan, hi=np.nan, n=None, description=""):
        rows.append({"metric": metric, "value": float(value), "ci_low": float(lo), "ci_high": float(hi),
                     "n": int(len(t) if n is None else n), "description": description})

    boot = None
    if n_boot > 0 and len(t):
        draws, idx = _boot_draws(t, n_boot=n_boot, random_state=random_state)
        boot = (draws, idx)

    def q(values):
        return (np.quantile(values, a), np.quantile(values, 1 - a)) if boot is not None else (np.nan, np.nan)

    imb = t["imbalance"].mean() if len(t) else np.nan
    add("mean_imbalance", imb, *q(np.abs(boot[0] - 0.5).mean(1)) if boot else (np.nan, np.nan),
        description="mean over groups of |p̂ − ½| (HEIM's gender imbalance); bootstrap over groups and images")
    base = t["fair_baseline"].mean() if len(t) else np.nan
    add("mean_fair_baseline", base, description="mean E|p̂ − ½| a perfectly fair model shows at these sample sizes")
    if boot:
        fb = t["fair_baseline"].to_numpy()[boot[1]].mean(1)
        lo, hi = q(np.abs(boot[0] - 0.5).mean(1) - fb)
    else:
        lo = hi = np.nan
    add("mean_excess_imbalance", imb - base, lo, hi,
        description="mean_imbalance − mean_fair_baseline: the imbalance beyond sampling noise")
    kl = t["kl_uniform"].mean() if len(t) else np.nan
    add("mean_kl_uniform", kl, *q(kl_to_uniform(p=boot[0]).mean(1)) if boot else (np.nan, np.nan),
        description="mean over groups of KL(p̂ ‖ ½) in nats")
    n_f, n_all = t["n_female"].sum(), t["n"].sum()
    lo, hi = wilson_interval(successes=n_f, n=n_all, ci=ci)
    add("pooled_p_female", n_f / n_all if n_all else np.nan, lo, hi, n=n_all,
        description="share labelled female among all labelled audit images (Wilson)")
    if images is not None:
        aud = images[images["kind"] == "audit"]
        m = len(aud)
        for lab in ("abstain", "no_person"):
            k = int((aud["label"] == lab).sum())
            lo, hi = wilson_interval(successes=k, n=m, ci=ci)
            add(f"{lab}_rate", k / m if m else np.nan, lo, hi, n=m,
                description=f"share of audit images labelled {lab} (not forced into a class)")
    has_ref = t["p_ref"].notna()
    tr = t[has_ref]
    if len(tr):
        r, pv = pearson(x=tr["p_female"], y=tr["p_ref"])
        g = len(tr)
        if g > 3 and abs(r) < 1:
            zr, se = math.atanh(r), 1 / math.sqrt(g - 3)
            zc = _z(ci)
            lo, hi = math.tanh(zr - zc * se), math.tanh(zr + zc * se)
        else:
            lo = hi = np.nan
        add("pearson_r", r, lo, hi, n=g, description=f"Pearson r of p̂ with the reference (Fisher-z interval); p = {pv:.3g}")
        rho, pv = spearman(x=tr["p_female"], y=tr["p_ref"])
        add("spearman_rho", rho, n=g, description=f"Spearman ρ of p̂ with the reference; p = {pv:.3g}")
        add("mean_abs_gap", tr["gap"].abs().mean(), n=g, description="mean |p̂ − p_ref|")
        amp_ok = (tr["p_ref"] != 0.5).to_numpy()
        amp = tr["amplified"].to_numpy()[amp_ok]
        if boot is not None:
            ref_all = t["p_ref"].to_numpy()[boot[1]]
            side = np.sign(ref_all - 0.5)
            amp_b = (np.sign(boot[0] - 0.5) == side) & (side != 0) & (np.abs(boot[0] - 0.5) > np.abs(ref_all - 0.5))
            valid = np.isfinite(ref_all) & (side != 0)
            with np.errstate(invalid="ignore"):
                shares = (amp_b & valid).sum(1) / np.maximum(valid.sum(1), 1)
            lo, hi = q(shares)
        else:
            lo = hi = np.nan
        add("amplification_share", amp.mean() if len(amp) else np.nan, lo, hi, n=int(amp_ok.sum()),
            description="share of groups skewed beyond the reference in the same direction")
        sig = tr["amplified_significant"].to_numpy()[amp_ok]
        add("amplification_share_significant", sig.mean() if len(sig) else np.nan, n=int(amp_ok.sum()),
            description="the same, counting only groups whose Wilson interval excludes the reference")
    if t["p_corrected"].notna().any():
        tc = t[t["p_corrected"].notna()]
        add("mean_imbalance_corrected", (tc["p_corrected"] - 0.5).abs().mean(), n=len(tc),
            description="mean |p̃ − ½| with p̃ the Rogan–Gladen-corrected share")
    return pd.DataFrame(rows)


@dataclass
class AuditMetrics:
    """All tables of an audit (fairlearn ``MetricFrame``-like): per image, per prompt, per
    occupation, the classifier validation and the overall metrics."""

    images: pd.DataFrame
    by_prompt: pd.DataFrame
    by_occupation: pd.DataFrame
    validation: pd.DataFrame
    overall: pd.DataFrame
    sensitivity: float = float("nan")
    specificity: float = float("nan")
    params: dict = field(default_factory=dict)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every tidy table by name (the CSV files of a report)."""
        return {"images": self.images, "by_prompt": self.by_prompt, "by_occupation": self.by_occupation,
                "validation": self.validation, "overall": self.overall}


def audit_metrics(
    *, images: pd.DataFrame, ci: float = 0.95, n_boot: int = 1000, random_state=None
) -> AuditMetrics:
    """Every table from a per-image score table (:func:`~diffkit.audit.score.score_images`).

    Sensitivity and specificity come from the control prompts (pooled over occupations)
    and drive the Rogan–Gladen columns; without controls those columns are NaN.
    """
    val = classifier_validation(images=images, ci=ci)
    se = float(val.loc[val["stated_gender"] == "female", "accuracy"].iloc[0])
    sp = float(val.loc[val["stated_gender"] == "male", "accuracy"].iloc[0])
    kw = dict(sensitivity=se, specificity=sp) if np.isfinite(se) and np.isfinite(sp) else {}
    by_prompt = group_table(images=images, by="prompt_id", ci=ci, **kw)
    by_occ = group_table(images=images, by="occupation", ci=ci, **kw)
    overall = overall_table(table=by_occ, images=images, n_boot=n_boot, ci=ci, random_state=random_state)
    extra = pd.DataFrame([
        {"metric": "sensitivity", "value": se, "ci_low": val["ci_low"].iloc[0], "ci_high": val["ci_high"].iloc[0],
         "n": int(val["n_labelled"].iloc[0]), "description": "P(labelled female | stated female), control prompts"},
        {"metric": "specificity", "value": sp, "ci_low": val["ci_low"].iloc[1], "ci_high": val["ci_high"].iloc[1],
         "n": int(val["n_labelled"].iloc[1]), "description": "P(labelled male | stated male), control prompts"},
    ])
    overall = pd.concat([overall, extra], ignore_index=True)
    return AuditMetrics(images, by_prompt, by_occ, val, overall, se, sp,
                        {"ci": ci, "n_boot": n_boot, "random_state": random_state})


def compare_metrics(
    *, a: AuditMetrics, b: AuditMetrics, ci: float = 0.95, n_boot: int = 1000, random_state=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run *b* against run *a* (two models, or before and after a mitigation).

    Returns ``(by_occupation, overall)``: per occupation p̂_a, p̂_b and p̂_b − p̂_a with
    Newcombe's interval; overall the difference in mean imbalance (and excess imbalance)
    with an interval from independent two-stage bootstraps of both runs.
    """
    ta, tb = a.by_occupation, b.by_occupation
    m = ta[["occupation", "n_female", "n", "p_female", "p_ref"]].merge(
        tb[["occupation", "n_female", "n", "p_female"]], on="occupation", suffixes=("_a", "_b"), how="inner"
    )
    d, lo, hi = newcombe_interval(successes_a=m["n_female_a"], n_a=m["n_a"], successes_b=m["n_female_b"],
                                  n_b=m["n_b"], ci=ci)
    m["diff"], m["ci_low"], m["ci_high"] = d, lo, hi
    m["imbalance_a"] = (m["p_female_a"] - 0.5).abs()
    m["imbalance_b"] = (m["p_female_b"] - 0.5).abs()
    m["imbalance_diff"] = m["imbalance_b"] - m["imbalance_a"]
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(0, 2**32, size=2)
    ok = (m["n_a"] > 0) & (m["n_b"] > 0)
    occ = set(m.loc[ok, "occupation"])
    sa, sb = ta[ta["occupation"].isin(occ)], tb[tb["occupation"].isin(occ)]
    rows = []
    aa = (1 - ci) / 2
    for name, fn in (("mean_imbalance", lambda t: (t["p_female"] - 0.5).abs().mean()),):
        va, vb = fn(sa), fn(sb)
        if n_boot > 0 and len(sa):
            da, _ = _boot_draws(sa, n_boot=n_boot, random_state=seeds[0])
            db, _ = _boot_draws(sb, n_boot=n_boot, random_state=seeds[1])
            diff = np.abs(db - 0.5).mean(1) - np.abs(da - 0.5).mean(1)
            lo, hi = np.quantile(diff, aa), np.quantile(diff, 1 - aa)
        else:
            lo = hi = np.nan
        rows.append({"metric": name, "a": va, "b": vb, "diff": vb - va, "ci_low": lo, "ci_high": hi})
    fa, fb_ = sa["fair_baseline"].mean(), sb["fair_baseline"].mean()
    rows.append({"metric": "mean_fair_baseline", "a": fa, "b": fb_, "diff": fb_ - fa, "ci_low": np.nan,
                 "ci_high": np.nan})
    for metric in ("pearson_r", "amplification_share", "pooled_p_female"):
        va = a.overall.set_index("metric")["value"].get(metric, np.nan)
        vb = b.overall.set_index("metric")["value"].get(metric, np.nan)
        rows.append({"metric": metric, "a": va, "b": vb, "diff": vb - va, "ci_low": np.nan, "ci_high": np.nan})
    return m, pd.DataFrame(rows)
