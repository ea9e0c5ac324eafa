"""How many images an audit needs: per occupation, then per prompt (``diffkit audit plan``).

Two questions, both answered exactly from the binomial distribution:

* **precision**: the smallest number of labelled images per occupation whose interval for the
  share of women, the one the report shows (Clopper–Pearson, :func:`share_half_width`), has
  half-width at most ``half_width`` whatever the share (the widest case, p̂ = ½, unless ``p`` is
  given);
* **power**: the smallest number whose exact two-sided binomial test of "p = ½" (at level
  α = 1 − ci, divided by the number of occupations when ``occupations`` > 1: Bonferroni, which
  Holm's procedure never does worse than) rejects with probability at least ``power`` when the
  true share is ½ + ``imbalance``.

Labelled images are what count: abstentions and no-person images are lost, so the number of
images per prompt is the labelled count divided by (1 − ``unlabelled_rate``) and by the number of
templates, rounded up.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from ..checks import check_probability
from ..errors import InputError
from ..i18n import N_
from ..i18n import gettext as _
from ._intervals import share_interval, z_quantile

__all__ = ["SamplePlan", "plan_sample_size", "power_exact", "share_half_width", "wilson_half_width"]

_MAX_N = 100_000


def share_half_width(*, n, p: float = 0.5, ci: float = 0.95) -> np.ndarray:
    """Half-width of the interval the report shows for a share (Clopper–Pearson, half of hi − lo)
    at p̂ = *p* with *n* labelled images; vectorised over *n*.

    Exact: the Beta quantiles of :func:`~diffkit.audit.metrics.clopper_pearson_interval` at
    n·p successes, which need not be a whole number (the quantiles are continuous in it).

    >>> round(float(share_half_width(n=24)), 4), round(float(share_half_width(n=104)), 4)
    (0.2088, 0.0997)
    """
    n = np.asarray(n, dtype=float)
    lo, hi = share_interval(successes=n * p, n=n, ci=ci)
    return (hi - lo) / 2


def wilson_half_width(*, n, p: float = 0.5, ci: float = 0.95) -> np.ndarray:
    """Half-width of the Wilson interval at p̂ = *p* with *n* labelled images (not what the planner
    uses since diffkit 0.2: the report's shares are Clopper–Pearson, :func:`share_half_width`)."""
    n = np.asarray(n, dtype=float)
    z = z_quantile(ci)
    return z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)


def power_exact(*, n: int, p: float, alpha: float = 0.05) -> float:
    """Power of the exact two-sided binomial test of p = ½ at level *alpha* with *n* images when
    the true share is *p* (the rejection region of scipy's ``binomtest``: outcomes whose
    probability under ½ is at most that of the observed one, total ≤ alpha)."""
    k = np.arange(n + 1)
    pm0 = stats.binom.pmf(k, n, 0.5)
    # two-sided p-value of each outcome under p = ½ (symmetric: sum of the tails beyond |k − n/2|)
    order = np.sort(pm0)
    cum = np.cumsum(order)
    pval = cum[np.searchsorted(order, pm0 * (1 + 1e-7), side="right") - 1]
    reject = pval <= alpha
    return float(stats.binom.pmf(k[reject], n, p).sum())


def _power_fast(ns: np.ndarray, p: float, alpha: float) -> np.ndarray:
    """:func:`power_exact` for many *ns* at once. Under p = ½ the binomial is symmetric and
    unimodal, so the test rejects k exactly when 2·F(min(k, n − k); n, ½) ≤ alpha: the region
    is k ≤ c or k ≥ n − c, and the power is F(c; n, p) + S(n − c − 1; n, p)."""
    ns = np.asarray(ns)
    c = stats.binom.ppf(alpha / 2, ns, 0.5)  # smallest k with F(k) ≥ alpha / 2
    c = np.where(2 * stats.binom.cdf(c, ns, 0.5) <= alpha * (1 + 1e-7), c, c - 1)
    c = np.minimum(c, np.ceil(ns / 2) - 1)
    return np.where(c >= 0, stats.binom.cdf(c, ns, p) + stats.binom.sf(ns - c - 1, ns, p), 0.0)


def _smallest_stable_n(power: float, p: float, alpha: float) -> int | None:
    """The smallest n from which the exact power stays ≥ *power* for 10 further n, or None past _MAX_N."""
    ns = np.arange(1, _MAX_N + 12)
    ok = _power_fast(ns, p, alpha) >= power
    # stable[i]: ok at ns[i] … ns[i + 10]
    run = np.convolve(ok.astype(int), np.ones(11, dtype=int), mode="valid") == 11
    hits = np.flatnonzero(run)
    if not len(hits) or ns[hits[0]] > _MAX_N:
        return None
    guess = int(ns[hits[0]])
    # confirm with the exact definition near the guess (the fast form's ties are rounded differently)
    exact = {m: power_exact(n=m, p=p, alpha=alpha) >= power for m in range(max(1, guess - 20), guess + 32)}
    for n in range(max(1, guess - 20), guess + 21):
        if all(exact[m] for m in range(n, n + 11)):
            return n
    return guess


def _smallest_precise_n(half_width: float, p: float, ci: float) -> int | None:
    """The smallest n ≤ _MAX_N with :func:`share_half_width` ≤ *half_width*, or None: every n is
    evaluated, in two blocks (the first 1,024, then the rest only if none of those is enough)."""
    for ns in (np.arange(1, 1025), np.arange(1025, _MAX_N + 1)):
        ok = np.flatnonzero(share_half_width(n=ns, p=p, ci=ci) <= half_width)
        if len(ok):
            return int(ns[ok[0]])
    return None


@dataclass(frozen=True)
class SamplePlan:
    """What :func:`plan_sample_size` returns."""

    labelled_per_occupation: int
    images_per_occupation: int
    images_per_prompt: int
    templates: int
    occupations: int
    total_images: int
    achieved: float
    goal: str
    rule: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_sample_size(
    *,
    half_width: float | None = None,
    power: float | None = None,
    imbalance: float | None = None,
    ci: float = 0.95,
    p: float = 0.5,
    occupations: int = 1,
    templates: int = 1,
    unlabelled_rate: float = 0.0,
) -> SamplePlan:
    """Images per prompt for a chosen interval half-width, or for a chosen power against an imbalance.

    Give either *half_width* (precision of each occupation's share at level *ci*, at true share
    *p*) or *power* and *imbalance* (|p − ½| to detect per occupation, exact test, Bonferroni
    over *occupations*). *templates* prompts per occupation share the images; *unlabelled_rate*
    is the expected share of abstentions and no-person images (read it off a pilot run's report).

    >>> plan_sample_size(half_width=0.1).labelled_per_occupation
    104
    >>> plan_sample_size(power=0.8, imbalance=0.3, occupations=10, templates=2).images_per_prompt
    20
    """
    if (half_width is None) == (power is None):
        raise InputError(
            _(
                "give exactly one goal; fix: half_width=… (e.g. 0.1), or power=… with imbalance=… (e.g. 0.8 and "
                "0.2; on the command line --half-width 0.1, or --power 0.8 --imbalance 0.2)"
            )
        )
    if not 0 <= unlabelled_rate < 1:
        raise InputError(
            _("unlabelled_rate must be in [0, 1), got {rate}; fix: use e.g. 0.05 for 5%").format(rate=unlabelled_rate)
        )
    if templates < 1 or occupations < 1:
        raise InputError(
            _(
                "templates and occupations must be at least 1, got {templates} and {occupations}; fix: count "
                "them in your spec"
            ).format(templates=templates, occupations=occupations)
        )
    check_probability("ci", ci, open_ends=True, hint=N_("0.95 is usual"))
    if half_width is not None:
        n, achieved, goal, rule = _plan_precision(half_width, p, ci)
    else:
        n, achieved, goal, rule = _plan_power(power, imbalance, ci, occupations)
    per_occ = math.ceil(n / (1 - unlabelled_rate))
    per_prompt = math.ceil(per_occ / templates)
    return SamplePlan(
        n,
        per_prompt * templates,
        per_prompt,
        templates,
        occupations,
        per_prompt * templates * occupations,
        achieved,
        goal,
        rule,
    )


def _plan_precision(half_width: float, p: float, ci: float) -> tuple[int, float, str, str]:
    """``(labelled n, achieved half-width, goal, rule)`` for a Clopper–Pearson half-width."""
    if not 0 < half_width < 0.5:
        raise InputError(
            _("half_width must be in (0, 0.5), got {half_width}; fix: e.g. 0.1 for ±10 points").format(
                half_width=half_width
            )
        )
    if not 0 < p < 1:
        raise InputError(_("p must be in (0, 1), got {p}; fix: 0.5 plans for the widest case").format(p=p))
    n = _smallest_precise_n(half_width, p, ci)
    if n is None:
        best = float(share_half_width(n=_MAX_N, p=p, ci=ci))
        raise InputError(
            _(
                "a half-width of {half_width} needs more than {most:,} labelled images per "
                "occupation; fix: ask for a half-width of at least {least}"
            ).format(half_width=half_width, most=_MAX_N, least=math.ceil(best * 1e4) / 1e4)
        )
    achieved = float(share_half_width(n=n, p=p, ci=ci))
    goal = _("Clopper–Pearson {level:.10g}% half-width ≤ {half_width} at p̂ = {p}").format(
        level=100 * ci, half_width=half_width, p=p
    )
    rule = _(
        "smallest n with (B⁻¹(1 − α/2; np + 1, n − np) − B⁻¹(α/2; np, n − np + 1))/2 ≤ half-width, "
        "B⁻¹ the Beta quantile, α = 1 − ci"
    )
    return n, achieved, goal, rule


def _plan_power(power: float, imbalance: float | None, ci: float, occupations: int) -> tuple[int, float, str, str]:
    """``(labelled n, achieved power, goal, rule)`` for the exact test's power against an imbalance."""
    if imbalance is None or not 0 < imbalance < 0.5:
        raise InputError(_("power needs imbalance=|p − ½| in (0, 0.5); fix: e.g. imbalance=0.2 (a 70/30 split)"))
    if not 0 < power < 1:
        raise InputError(_("power must be in (0, 1), got {power}; fix: e.g. 0.8").format(power=power))
    alpha = (1 - ci) / occupations
    # exact power saw-tooths in n: take the smallest n from which it stays ≥ power for 10 steps
    n = _smallest_stable_n(power, 0.5 + imbalance, alpha)
    if n is None:
        raise InputError(
            _(
                "more than {most:,} labelled images per occupation would be needed for power "
                "{power} against |p − ½| = {imbalance}; fix: ask for less power or a larger imbalance"
            ).format(most=_MAX_N, power=power, imbalance=imbalance)
        )
    achieved = power_exact(n=n, p=0.5 + imbalance, alpha=alpha)
    goal = _("power ≥ {power} against |p − ½| = {imbalance}, exact two-sided binomial test at α = {alpha:.4g}").format(
        power=power, imbalance=imbalance, alpha=alpha
    )
    if occupations > 1:
        goal += " " + _("({share:.3g}/{occupations} occupations, Bonferroni)").format(
            share=1 - ci, occupations=occupations
        )
    rule = _("smallest n from which the exact test's power stays ≥ the goal for 10 further n")
    return n, achieved, goal, rule
