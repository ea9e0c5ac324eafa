"""The true share behind an imperfect classifier: Rogan–Gladen's estimate and an exact interval.

If the error rates on neutral prompts equal those on the control prompts, an image of a woman is
labelled female with probability Se and an image of a man with probability 1 − Sp, so the count
of images labelled female is Binomial(n, q) with q = Se·p + (1 − Sp)(1 − p) and

    p̃ = (p̂ + Sp − 1) / (Se + Sp − 1),  clipped to [0, 1]         (Rogan & Gladen 1978, Am. J.
                                                                  Epidemiol. 107:71–76)

**Interval: the exact posterior of Gelman & Carpenter's model, with Clopper–Pearson's ends.**
Se and Sp are measured on a few dozen control images, so the interval must carry their
uncertainty (Gelman & Carpenter 2020, "Bayesian analysis of tests with unknown specificity and
sensitivity", JRSS C 69:1269–1283). With a uniform prior on p and Jeffreys priors Beta(½, ½) on
Se and Sp, the count labelled female given W = w women among the n images is a sum of two
independent beta-binomials, BetaBin(w; Se) + BetaBin(n − w; 1 − Sp) with the control counts'
posterior parameters, and W ~ Binomial(n, p); so the posterior of p given every count is

    π(p | data) ∝ Σ_w Binomial(w; n, p) · P(K = k | W = w),
    P(p ≤ x | data) = Σ_w c_w I_x(w + 1, n − w + 1) / Σ_w c_w,   c_w = P(K = k | W = w),

in closed form (I the regularised incomplete beta): no draws, no grid of p, no seed, so the same
counts always give the same interval. The interval is its central *ci* interval, except at the
ends of [0, 1], where a central posterior interval would never hold a true share of exactly 0:
as Clopper–Pearson's, its lower end is 0 whenever p = 0 explains the count (P(K ≥ k | p = 0)
> α/2, the tail averaged over the same posteriors of Se and Sp: an observed share below about
1 − Sp), and its upper end 1 whenever p = 1 does. With Se = Sp = 1 known it is the central
interval of Beta(k + 1, n − k + 1), stretched to 0 when k = 0 and to 1 when k = n.
"""

from __future__ import annotations

import warnings
from functools import lru_cache

import numpy as np
from scipy import fft, special, stats

__all__ = ["rogan_gladen", "rogan_gladen_interval"]


def rogan_gladen(*, p_observed, sensitivity, specificity) -> np.ndarray:
    """Rogan–Gladen (1978) estimate of the true share from an imperfect classifier.

    ``(p_obs + Sp − 1) / (Se + Sp − 1)``, clipped to [0, 1]. Here "positive" is female:
    Se = P(labelled female | stated female), Sp = P(labelled male | stated male), both measured
    on the control prompts. Below Se + Sp = 1 the classifier is *inverted* (it calls women men
    more often than not) and the formula still corrects it; only at Se + Sp = 1 (a classifier
    whose label does not depend on the gender) is nothing recoverable: NaN with a warning.
    *sensitivity* and *specificity* may be arrays (per group).
    """
    p = np.asarray(p_observed, dtype=float)
    se = np.asarray(sensitivity, dtype=float)
    sp = np.asarray(specificity, dtype=float)
    j = se + sp - 1
    chance = ~np.isfinite(j) | (np.abs(j) < 1e-9)
    if np.any(chance & np.isfinite(j)):
        warnings.warn(
            "sensitivity + specificity = 1: the classifier's label does not depend on the stated gender "
            "(no better than chance) on the control prompts, so the Rogan–Gladen correction is undefined",
            stacklevel=2,
        )
    if np.any(j < -1e-9):
        warnings.warn(
            "sensitivity + specificity < 1: the classifier is inverted on the control prompts (it labels the "
            "stated gender as the other more often than not); the Rogan–Gladen correction still applies, but "
            "check the label phrases in [classifier.labels] (female and male swapped?)",
            stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.clip((p + sp - 1) / np.where(chance, np.nan, j), 0, 1)
    return out


@lru_cache(maxsize=4096)
def _count_given_women(n: int, xs: int, ms: int, xp: int, mp: int) -> np.ndarray:
    """P(K = k | W = w) as an (n + 1, n + 1) array over [w, k]: Se and Sp integrated over their
    posteriors given the control counts (Jeffreys priors)."""
    w = np.arange(n + 1)
    x = np.arange(n + 1)
    a_se, b_se = xs + 0.5, ms - xs + 0.5  # sensitivity
    a_fp, b_fp = mp - xp + 0.5, xp + 0.5  # 1 − specificity: a man labelled female
    women = stats.betabinom.pmf(x[None, :], w[:, None], a_se, b_se)  # labelled female among w women
    men = stats.betabinom.pmf(x[None, :], (n - w)[:, None], a_fp, b_fp)  # … among n − w men
    size = fft.next_fast_len(2 * n + 1, real=True)
    pmf = fft.irfft(fft.rfft(women, size, axis=1) * fft.rfft(men, size, axis=1), size, axis=1)[:, : n + 1]
    pmf = np.clip(pmf, 0, None)
    return pmf / pmf.sum(axis=1, keepdims=True)


def _interval(n: int, k: np.ndarray, pmf: np.ndarray, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends for observed counts *k* (1-D) given the table P(K = k | W = w)."""
    c = pmf[:, k].T  # (groups, w): the likelihood of each count of women
    w = np.arange(n + 1)
    c = c / c.sum(axis=1, keepdims=True)

    def cdf(x):
        return np.sum(c * special.betainc(w + 1, n - w + 1, np.asarray(x)[:, None]), axis=1)

    def quantile(t):
        lo, hi = np.zeros(len(k)), np.ones(len(k))
        for _ in range(40):
            mid = (lo + hi) / 2
            below = cdf(mid) < t
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        return (lo + hi) / 2

    p0_explains = pmf[0, :][None, :] * (np.arange(n + 1)[None, :] >= k[:, None])  # P(K ≥ k | p = 0)
    p1_explains = pmf[n, :][None, :] * (np.arange(n + 1)[None, :] <= k[:, None])  # P(K ≤ k | p = 1)
    at0, at1 = p0_explains.sum(axis=1) > a, p1_explains.sum(axis=1) > a
    lower = np.zeros(len(k)) if at0.all() else np.where(at0, 0.0, quantile(a))
    upper = np.ones(len(k)) if at1.all() else np.where(at1, 1.0, quantile(1 - a))
    return lower, upper


def rogan_gladen_interval(
    *,
    successes,
    n,
    se_successes,
    se_n,
    sp_successes,
    sp_n,
    ci: float = 0.95,
    n_draws: int | None = None,
    seed=None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rogan–Gladen estimate with an exact interval that carries the uncertainty of Se and Sp.

    Per group: the estimate is :func:`rogan_gladen` at the measured Se, Sp; the interval is the
    central *ci* interval of p's exact posterior when Se and Sp are uncertain (Gelman & Carpenter's
    model), with 0 and 1 included wherever they explain the count, as Clopper–Pearson's interval
    includes them (see the module docstring). Deterministic:
    *n_draws* and *seed* (Monte Carlo settings before diffkit 0.3) are accepted and have no
    effect. All arguments broadcast (Se, Sp counts may be per group). NaN where n = 0 or a control
    count is 0.
    """
    k, n, xs, ms, xp, mp = (
        np.atleast_1d(np.asarray(v, dtype=float)) for v in (successes, n, se_successes, se_n, sp_successes, sp_n)
    )
    k, n, xs, ms, xp, mp = np.broadcast_arrays(k, n, xs, ms, xp, mp)
    shape = k.shape
    k, n, xs, ms, xp, mp = (v.ravel() for v in (k, n, xs, ms, xp, mp))
    a = (1 - ci) / 2
    est = np.full(k.shape, np.nan)
    lo, hi = est.copy(), est.copy()
    ok = (n > 0) & (ms > 0) & (mp > 0)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")
        est[ok] = rogan_gladen(p_observed=k[ok] / n[ok], sensitivity=xs[ok] / ms[ok], specificity=xp[ok] / mp[ok])
    idx = np.flatnonzero(ok)
    if len(idx):  # the same counts give the same interval: compute each distinct case once
        cases, inv = np.unique(np.stack([n, xs, ms, xp, mp, k], axis=1)[idx], axis=0, return_inverse=True)
        c_lo, c_hi = np.empty(len(cases)), np.empty(len(cases))
        tables, which = np.unique(cases[:, :5], axis=0, return_inverse=True)
        for j, key in enumerate(tables):
            sel = np.flatnonzero(which.ravel() == j)
            nn = int(key[0])
            pmf = _count_given_women(nn, *(int(v) for v in key[1:]))
            c_lo[sel], c_hi[sel] = _interval(nn, cases[sel, 5].astype(int), pmf, a)
        lo[idx], hi[idx] = c_lo[inv.ravel()], c_hi[inv.ravel()]
    # the clipped point estimate (at the measured Se, Sp) can fall a little outside the posterior interval
    lo, hi = np.fmin(lo, est), np.fmax(hi, est)
    return est.reshape(shape), lo.reshape(shape), hi.reshape(shape)
