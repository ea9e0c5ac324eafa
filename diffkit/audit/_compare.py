"""Two runs compared (two models, or a model before and after a mitigation): differences b − a.

==========================  =========================================================================
design                      **paired** when the runs share audit images, matched by (prompt, seed);
                            **independent** otherwise
Δ share, per occupation     Newcombe's paired (1998b) or independent (1998a) interval, method 11
                            (continuity-corrected score limits; method 10 dips to 88% per occupation
                            in a simulated reversal at 24 images)
Δ|p − ½|, per occupation    |p_b − ½| − |p_a − ½| = sgn(d)·clamp(m, −|d|, |d|) with d = p_b − p_a and
                            m = p_a + p_b − 1: the range of that function over the rectangle of
                            Newcombe intervals for d and for m, each at 1 − α/2 (Bonferroni)
Δ mean imbalance            Laber & Murphy's adaptive bracket for θ_b − θ_a, exact (``_adaptive``)
Δ amplification             exact parametric interval of the linear Σ s_g (p_b,g − p_a,g)/G
Δ pooled share              Newcombe on the pooled table of pairs (paired) or counts
==========================  =========================================================================

No interval here is a bootstrap: the same two runs always give the same bounds, and a share of
0 of 24 still varies (each share's sampling distribution is Binomial(n, (k + 1)/(n + 2))), so no
interval has zero width where the data are finite, not even a run compared with itself.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DiffkitError
from . import _adaptive
from ._amplification import reference_sign
from ._imbalance import corrected_imbalance
from ._intervals import newcombe_interval, newcombe_paired_interval, pct

__all__ = ["NothingInCommonError", "compare_metrics", "imbalance_change_interval", "pair_runs"]

_LABELLED = ("female", "male")


class NothingInCommonError(DiffkitError, ValueError):
    """Two runs that cannot be compared: they audit no occupation in common, or share no image when
    a paired comparison is asked for."""


def pair_runs(*, a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """The audit images two runs share, matched by (prompt, seed): one row per pair with
    ``occupation, prompt, seed, label_a, label_b``. Two runs of specs with the same seed,
    templates and occupations share every image; a mitigation that changes the prompt text
    shares none (then compare them unpaired)."""
    cols = ["prompt", "seed", "occupation", "label"]
    if not all(c in a.columns and c in b.columns for c in cols):
        return pd.DataFrame(columns=["prompt", "seed", "occupation", "label_a", "label_b"])
    aa = a.loc[a["kind"] == "audit", cols]
    bb = b.loc[b["kind"] == "audit", ["prompt", "seed", "label"]]
    return aa.merge(bb, on=["prompt", "seed"], suffixes=("_a", "_b"), how="inner")


def _phi(d, m):
    """|p_b − ½| − |p_a − ½| written with d = p_b − p_a and m = p_a + p_b − 1."""
    return np.sign(d) * np.clip(m, -np.abs(d), np.abs(d))


def imbalance_change_interval(*, d_low, d_high, m_low, m_high) -> tuple[np.ndarray, np.ndarray]:
    """The range of |p_b − ½| − |p_a − ½| over d ∈ [d_low, d_high], m ∈ [m_low, m_high].

    The function is piecewise linear with breaks on d = 0, m = 0 and m = ±d, so its extremes over
    the rectangle lie on points whose d and m are each an edge of the rectangle or a break value:
    every such point is evaluated. With each interval at 1 − α/2, the range holds the change with
    probability ≥ 1 − α (Bonferroni); it is never a single point where the intervals are not.
    """
    dl, dh, ml, mh = (np.asarray(x, dtype=float)[..., None] for x in (d_low, d_high, m_low, m_high))
    ds = np.clip(np.concatenate([dl, dh, 0 * dl, ml, mh, -ml, -mh], axis=-1), dl, dh)
    ms = np.clip(np.concatenate([ml, mh, 0 * ml, dl, dh, -dl, -dh], axis=-1), ml, mh)
    vals = _phi(ds[..., :, None], ms[..., None, :])
    return vals.min(axis=(-2, -1)), vals.max(axis=(-2, -1))


def paired_change_intervals(tables, ci: float = 0.95):
    """Per occupation from (…, 4) tables of pairs (both female, a only, b only, neither): the
    Newcombe paired interval of p_b − p_a at *ci* and the interval of the imbalance change."""
    t = np.asarray(tables, dtype=float)
    A, B, C, D = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    diff, lo, hi = newcombe_paired_interval(both=A, a_only=B, b_only=C, neither=D, ci=ci, correction=True)
    half = 1 - (1 - ci) / 2
    _, dl, dh = newcombe_paired_interval(both=A, a_only=B, b_only=C, neither=D, ci=half)
    # m = p_a − (1 − p_b): a paired difference with b's labels swapped (its negative, as b′ − a)
    _, nl, nh = newcombe_paired_interval(both=B, a_only=A, b_only=D, neither=C, ci=half)
    il, ih = imbalance_change_interval(d_low=dl, d_high=dh, m_low=-nh, m_high=-nl)
    return diff, lo, hi, il, ih


def independent_change_intervals(k_a, n_a, k_b, n_b, ci: float = 0.95):
    """As :func:`paired_change_intervals` for independent runs (Newcombe's independent interval)."""
    diff, lo, hi = newcombe_interval(successes_a=k_a, n_a=n_a, successes_b=k_b, n_b=n_b, ci=ci, correction=True)
    half = 1 - (1 - ci) / 2
    _, dl, dh = newcombe_interval(successes_a=k_a, n_a=n_a, successes_b=k_b, n_b=n_b, ci=half)
    _, ml, mh = newcombe_interval(successes_a=np.asarray(n_a) - np.asarray(k_a), n_a=n_a, successes_b=k_b, n_b=n_b,
                                  ci=half)  # p_b − (1 − p_a) = m
    il, ih = imbalance_change_interval(d_low=dl, d_high=dh, m_low=ml, m_high=mh)
    return diff, lo, hi, il, ih


def paired_overall(tables, p_ref, ci: float = 0.95) -> dict[str, tuple]:
    """Δ mean imbalance, Δ amplification and Δ pooled share from (…, G, 4) tables of pairs
    labelled in both runs: {metric: (a, b, diff, low, high)}, each entry (…)-shaped."""
    t = np.asarray(tables, dtype=np.int64)
    N = t.sum(-1)
    k_a, k_b = t[..., 0] + t[..., 1], t[..., 0] + t[..., 2]
    G = t.shape[-2]
    out = {}
    ia = np.mean(corrected_imbalance(successes=k_a, n=N), axis=-1)
    ib = np.mean(corrected_imbalance(successes=k_b, n=N), axis=-1)

    def theta_bounds(tt):
        nn = tt.sum(-1)
        ka, kb = tt[..., 0] + tt[..., 1], tt[..., 0] + tt[..., 2]
        plug = np.mean(np.abs(kb / nn - 0.5) - np.abs(ka / nn - 0.5), axis=-1)
        return _adaptive.bracket(plug, _adaptive.paired_terms(tt), G, ci)

    lo, hi = _adaptive.chunked(theta_bounds, t, rows=40) if t.ndim > 2 else theta_bounds(t)
    est = ib - ia
    out["mean_imbalance"] = (ia, ib, est, np.minimum(lo, est), np.maximum(hi, est))
    r = np.asarray(p_ref, dtype=float)  # (G,): the same reference for every leading index
    ok = reference_sign(r) != 0
    if ok.any():
        tt = t[..., ok, :]
        ss = np.broadcast_to(reference_sign(r)[ok], tt.shape[:-1])
        Ga = int(ok.sum())

        def amp_bounds(tt, ss):
            nn = tt.sum(-1)
            ka, kb = tt[..., 0] + tt[..., 1], tt[..., 0] + tt[..., 2]
            e = np.mean(ss * (kb - ka) / nn, axis=-1)
            lo, hi = _adaptive.bracket(e, _adaptive.paired_terms(tt, sign=ss), Ga, ci)
            return e, lo, hi

        e, lo, hi = _adaptive.chunked(amp_bounds, tt, ss, rows=40) if t.ndim > 2 else amp_bounds(tt, ss)
        nn = tt.sum(-1)
        va = np.mean(ss * ((tt[..., 0] + tt[..., 1]) / nn - r[ok]), axis=-1)
        out["amplification"] = (va, va + e, e, np.minimum(lo, e), np.maximum(hi, e))
    pooled = t.sum(-2)
    d, lo, hi = newcombe_paired_interval(both=pooled[..., 0], a_only=pooled[..., 1], b_only=pooled[..., 2],
                                         neither=pooled[..., 3], ci=ci)
    n_all = pooled.sum(-1)
    out["pooled_p_female"] = ((pooled[..., 0] + pooled[..., 1]) / n_all, (pooled[..., 0] + pooled[..., 2]) / n_all,
                              d, lo, hi)
    return out


def independent_overall(k_a, n_a, k_b, n_b, p_ref, ci: float = 0.95) -> dict[str, tuple]:
    """As :func:`paired_overall` for independent runs, from each run's per-occupation counts (…, G)."""
    k_a, n_a, k_b, n_b = (np.asarray(x, dtype=np.int64) for x in (k_a, n_a, k_b, n_b))
    n_a, n_b = np.broadcast_to(n_a, k_a.shape), np.broadcast_to(n_b, k_b.shape)
    G = k_a.shape[-1]
    out = {}
    ia = np.mean(corrected_imbalance(successes=k_a, n=n_a), axis=-1)
    ib = np.mean(corrected_imbalance(successes=k_b, n=n_b), axis=-1)

    def theta_bounds(ka, na, kb, nb):
        plug = np.mean(np.abs(kb / nb - 0.5), axis=-1) - np.mean(np.abs(ka / na - 0.5), axis=-1)
        return _adaptive.bracket(plug, _adaptive.independent_terms(ka, na, kb, nb), G, ci)

    args = (k_a, n_a, k_b, n_b)
    lo, hi = _adaptive.chunked(theta_bounds, *args, rows=400) if k_a.ndim > 1 else theta_bounds(*args)
    est = ib - ia
    out["mean_imbalance"] = (ia, ib, est, np.minimum(lo, est), np.maximum(hi, est))
    r = np.asarray(p_ref, dtype=float)  # (G,)
    ok = reference_sign(r) != 0
    if ok.any():
        ss = np.broadcast_to(reference_sign(r)[ok], k_a[..., ok].shape)
        Ga = int(ok.sum())

        def amp_bounds(ka, na, kb, nb, ss):
            e = np.mean(ss * (kb / nb - ka / na), axis=-1)
            lo, hi = _adaptive.bracket(e, _adaptive.independent_terms(ka, na, kb, nb, sign=ss), Ga, ci)
            return e, lo, hi

        args = (k_a[..., ok], n_a[..., ok], k_b[..., ok], n_b[..., ok], ss)
        e, lo, hi = _adaptive.chunked(amp_bounds, *args, rows=400) if k_a.ndim > 1 else amp_bounds(*args)
        va = np.mean(ss * (k_a[..., ok] / n_a[..., ok] - r[ok]), axis=-1)
        out["amplification"] = (va, va + e, e, np.minimum(lo, e), np.maximum(hi, e))
    d, lo, hi = newcombe_interval(successes_a=k_a.sum(-1), n_a=n_a.sum(-1), successes_b=k_b.sum(-1), n_b=n_b.sum(-1),
                                  ci=ci)
    out["pooled_p_female"] = (k_a.sum(-1) / n_a.sum(-1), k_b.sum(-1) / n_b.sum(-1), d, lo, hi)
    return out


def _tables(pairs: pd.DataFrame, occupations: list[str]) -> pd.DataFrame:
    """Per occupation, the 2×2 table of pairs labelled in both runs: columns A (both female),
    B (a only), C (b only), D (neither)."""
    both = pairs[pairs["label_a"].isin(_LABELLED) & pairs["label_b"].isin(_LABELLED)]
    fa, fb = both["label_a"] == "female", both["label_b"] == "female"
    return (pd.DataFrame({"occupation": both["occupation"], "A": fa & fb, "B": fa & ~fb, "C": ~fa & fb,
                          "D": ~fa & ~fb}).groupby("occupation")[["A", "B", "C", "D"]].sum()
            .reindex(occupations, fill_value=0).astype(int))


def compare_metrics(
    *, a, b, ci: float = 0.95, n_boot: int = 1000, seed=None, paired: bool | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run *b* against run *a* (two models, or before and after a mitigation): differences b − a.

    **Paired** when the runs share audit images, matched by (prompt, seed) (*paired* = None
    decides; True insists): only the shared images count. Per occupation, the share's change gets
    :func:`newcombe_paired_interval` (continuity-corrected, method 11) on the pairs labelled in both runs (shifted to the difference
    among all labelled images) and the imbalance's change :func:`imbalance_change_interval`;
    overall, the exact bounds of ``_adaptive`` on the pairs labelled in both runs, so what the
    shared seeds make common cancels. **Independent** otherwise: Newcombe's independent interval
    (method 11)
    and the independent exact bounds. Runs with no occupation in common are refused
    (:class:`NothingInCommonError`). Nothing is resampled: *n_boot* and *seed* (bootstrap settings
    before diffkit 0.3) are accepted and have no effect.

    Returns ``(by_occupation, overall)``. Per occupation: ``occupation, reference, n_a, n_b,
    p_female_a, p_female_b, diff, ci_low, ci_high, imbalance_a, imbalance_b, imbalance_diff``
    (bias-corrected), ``imbalance_diff_low, imbalance_diff_high``. Overall: ``metric, a, b, diff,
    ci_low, ci_high``. Both carry ``design`` (a sentence saying what is shared) in a column and in
    ``attrs``.
    """
    shared = _shared_occupations(a, b)
    pairs = pair_runs(a=a.images, b=b.images)
    pairs = pairs[pairs["occupation"].isin(shared)]
    if paired is True and pairs.empty:
        raise NothingInCommonError(
            "paired=True but the runs share no (prompt, seed): fix: give both specs the same [audit] seed and "
            "templates, or compare unpaired (paired=None)")
    use_pairs = (paired is not False) and not pairs.empty
    if use_pairs:
        m, overall, design = _paired(a, b, pairs, ci)
    else:
        m, overall, design = _independent(a, b, shared, ci)
    rows = [{"metric": name, "a": float(va), "b": float(vb), "diff": float(d), "ci_low": float(lo_),
             "ci_high": float(hi_)} for name, (va, vb, d, lo_, hi_) in overall.items()]
    for metric in ("pearson_r", "abstain_rate", "no_person_rate"):
        va = a.overall.set_index("metric")["value"].get(metric, np.nan)
        vb = b.overall.set_index("metric")["value"].get(metric, np.nan)
        rows.append({"metric": metric, "a": va, "b": vb, "diff": vb - va, "ci_low": np.nan, "ci_high": np.nan})
    out = pd.DataFrame(rows)
    for frame in (m, out):
        frame["design"] = "paired" if use_pairs else "independent"
        frame.attrs["design"] = design
        frame.attrs["paired"] = use_pairs
    return m, out


def _shared_occupations(a, b) -> list[str]:
    """The occupations with labelled images in both runs; none is :class:`NothingInCommonError`."""
    occ_a = set(a.by_occupation.loc[a.by_occupation["n"] > 0, "occupation"])
    occ_b = set(b.by_occupation.loc[b.by_occupation["n"] > 0, "occupation"])
    shared = sorted(occ_a & occ_b)
    if not shared:
        raise NothingInCommonError(
            f"the two runs audit no occupation in common (a: {sorted(occ_a)[:6]}, b: {sorted(occ_b)[:6]}); "
            "a comparison needs the same occupations in both. Fix: run both specs with the same "
            "[prompts.attributes] occupation list (ideally the same seed and templates, so the runs pair image by "
            "image)")
    return shared


def _paired(a, b, pairs: pd.DataFrame, ci: float) -> tuple[pd.DataFrame, dict, str]:
    """Per occupation and overall, on the image pairs (same prompt and seed): ``(table, overall, design)``."""
    lvl = pct(ci)
    shared = sorted(set(pairs["occupation"]))
    tab = _tables(pairs, shared)
    shared = [o for o in shared if tab.loc[o].sum() > 0]
    tab = tab.loc[shared]
    ref = a.by_occupation.set_index("occupation").loc[shared]["p_ref"].to_numpy(dtype=float)
    n_a_all = int((a.images["kind"] == "audit").sum())
    n_b_all = int((b.images["kind"] == "audit").sum())
    design = (f"paired by prompt and seed: {len(pairs)} image pairs in {len(shared)} occupations "
              f"(of {n_a_all} audit images in a, {n_b_all} in b); per occupation {lvl} Newcombe paired interval (method 11), "
              f"overall {lvl} exact adaptive bounds on the pairs labelled in both runs")
    lab_a = pairs["label_a"].isin(_LABELLED)
    lab_b = pairs["label_b"].isin(_LABELLED)
    occ = pairs["occupation"]
    n_a = lab_a.groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    n_b = lab_b.groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    k_a = (pairs["label_a"] == "female").groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    k_b = (pairs["label_b"] == "female").groupby(occ).sum().reindex(shared, fill_value=0).to_numpy()
    t4 = tab[["A", "B", "C", "D"]].to_numpy()
    _, lo, hi, il, ih = paired_change_intervals(t4, ci=ci)
    n_both = t4.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        pa, pb = k_a / n_a, k_b / n_b
        # centred on the difference among all labelled images (pairs with an abstention included)
        shift = (pb - pa) - (t4[:, 2] - t4[:, 1]) / np.where(n_both > 0, n_both, np.nan)
    m = pd.DataFrame({"occupation": shared, "n_a": n_a, "n_b": n_b, "p_female_a": pa, "p_female_b": pb,
                      "diff": pb - pa, "ci_low": lo + shift, "ci_high": hi + shift,
                      "n_pairs_labelled": n_both, "discordant_pairs": t4[:, 1] + t4[:, 2]})
    _imbalance_change_columns(m, k_a, n_a, k_b, n_b, il, ih, ref)
    return m, paired_overall(t4, ref, ci=ci), design


def _independent(a, b, shared: list[str], ci: float) -> tuple[pd.DataFrame, dict, str]:
    """Per occupation and overall, the runs' labelled images compared unpaired: ``(table, overall, design)``."""
    lvl = pct(ci)
    ta = a.by_occupation.set_index("occupation").loc[shared]
    tb = b.by_occupation.set_index("occupation").loc[shared]
    ref = ta["p_ref"].to_numpy(dtype=float)
    design = (f"independent: the runs share no (prompt, seed), so their images are compared unpaired; "
              f"{len(shared)} occupations in common; per occupation {lvl} Newcombe (method 11), overall {lvl} exact adaptive "
              "bounds")
    k_a, n_a = ta["n_female"].to_numpy(), ta["n"].to_numpy()
    k_b, n_b = tb["n_female"].to_numpy(), tb["n"].to_numpy()
    dd, lo, hi, il, ih = independent_change_intervals(k_a, n_a, k_b, n_b, ci=ci)
    m = pd.DataFrame({"occupation": shared, "n_a": n_a, "n_b": n_b, "p_female_a": ta["p_female"].to_numpy(),
                      "p_female_b": tb["p_female"].to_numpy(), "diff": dd, "ci_low": lo, "ci_high": hi})
    _imbalance_change_columns(m, k_a, n_a, k_b, n_b, il, ih, ref)
    return m, independent_overall(k_a, n_a, k_b, n_b, ref, ci=ci), design


def _imbalance_change_columns(m: pd.DataFrame, k_a, n_a, k_b, n_b, il, ih, ref) -> None:
    """The bias-corrected imbalance of each run and its change (interval widened to hold the
    change itself), then the reference beside the occupation."""
    m["imbalance_a"] = corrected_imbalance(successes=k_a, n=n_a)
    m["imbalance_b"] = corrected_imbalance(successes=k_b, n=n_b)
    m["imbalance_diff"] = m["imbalance_b"] - m["imbalance_a"]
    m["imbalance_diff_low"] = np.fmin(il, m["imbalance_diff"].to_numpy())
    m["imbalance_diff_high"] = np.fmax(ih, m["imbalance_diff"].to_numpy())
    m.insert(1, "reference", ref)
