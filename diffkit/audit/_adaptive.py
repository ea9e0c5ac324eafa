"""Adaptive bounds for means of |p_g − ½| and of linear functions of the shares, computed exactly.

The mean imbalance θ = (1/G) Σ_g |p_g − ½| is not smooth where some p_g = ½: there the plug-in
|p̂_g − ½| is biased upward by about √(p(1 − p)/n) and no bootstrap of it is consistent
(Andrews 2000, Econometrica 68:399–405, for the same kink in max(μ, 0)). Laber & Murphy (2011,
"Adaptive confidence intervals for the test error in classification", JASA 106:904–913) bound
such a statistic between a smooth upper and lower bound. Written with Z_g = √n(p̂_g − p_g) and
the local parameter h_g = √n(p_g − ½), each occupation contributes

    √n(|p̂_g − ½| − |p_g − ½|) = |Z_g + h_g| − |h_g|,   which lies in [−|Z_g|, |Z_g|],

and equals s_g Z_g (s_g the side of ½) when p_g is clearly away from ½. So, with a pretest that
calls occupation g *regular* when 2√n_g |p̂_g − ½| > κ_n (Andrews & Soares 2010, Econometrica
78:119–157, recommend the BIC-type κ_n = √(ln n)),

    W_hi = Σ_regular s_g Z_g + Σ_other |Z_g|,      W_lo = Σ_regular s_g Z_g − Σ_other |Z_g|

bracket √n·G(θ̂ − θ), and [θ̂ − q_{1−α/2}(W_hi)/G, θ̂ − q_{α/2}(W_lo)/G] covers θ at least as
often as the quantiles hold, whatever the unknown h (the sup/inf over the local parameter that
Laber & Murphy take for occupations the pretest cannot separate from ½).

**Exact, not resampled.** The distribution of Z_g is that of K/n − p̃_g with K ~ Binomial(n_g,
p̃_g), p̃_g = (k_g + 1)/(n_g + 2) (Laplace's rule of succession: an occupation with 0 of 24
still varies, as its Clopper–Pearson interval says it may, where a bootstrap of p̂ = 0 has no
variance at all). Every term lives on a lattice of step 1/n_g, so the sum's distribution is the
convolution of G small probability vectors (one FFT), its quantiles exact up to floating point:
the same inputs always give the same bounds, with no seed and no Monte Carlo error. Where the
occupations' n differ, terms are put on a common lattice by rounding each atom outward (a
conservative error of at most 1/(8 max n) per occupation).

For two runs (a model before and after a mitigation) the same bracket holds for θ_b − θ_a with
W = W_b − W_a: independent runs convolve 2G terms; paired runs (the same seeds) take, per
occupation, the joint distribution of (K_a, K_b) from the 2×2 table of pairs (each cell plus ½,
so each run's margin is again Laplace's) by a two-dimensional FFT of its generating function.
For a linear function of the shares (the directional amplification) every term is regular with a
known sign, and the same machinery gives an exact parametric interval.

Every array function here broadcasts over leading dimensions (many simulated audits at once) and
is what :mod:`~diffkit.audit.coverage` simulates.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import fft, stats

__all__: list[str] = []  # private machinery; the public functions live in _imbalance, _amplification, _compare

_TOL = 1e-10  # on cumulative probabilities computed by FFT


def pretest_regular(k, n) -> np.ndarray:
    """The pretest: is p̂ separated from ½? 2√n|k/n − ½| > κ_n with κ_n = √(ln n)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = 2 * np.sqrt(n) * np.abs(k / n - 0.5)
        return (n > 0) & (t > np.sqrt(np.log(np.maximum(n, 1.0))))


def laplace_share(k, n) -> np.ndarray:
    """(k + 1)/(n + 2): the share the bounds resample from (never 0 or 1)."""
    return (np.asarray(k, dtype=float) + 1) / (np.asarray(n, dtype=float) + 2)


def _lattice(ns) -> int:
    """A common lattice 1/L for occupations with these labelled counts: lcm(n) when it is at most
    8 max(n) (then exact), else 8 max(n) (then atoms are rounded outward)."""
    ns = sorted({int(x) for x in np.asarray(ns).ravel() if x > 0}) or [1]
    m = 1
    for x in ns:
        m = m * x // math.gcd(m, x)
        if m > 8 * ns[-1]:
            return 8 * ns[-1]
    return m


def _on_lattice(j, n, L: int, up: bool) -> np.ndarray:
    """Integer atoms j/n put on the lattice 1/L, rounded up (*up*) or down when L/n is not whole."""
    x = np.asarray(j, dtype=float) * (L / np.asarray(n, dtype=float))
    r = np.rint(x)
    exact = np.abs(x - r) < 1e-9
    return np.where(exact, r, np.ceil(x) if up else np.floor(x)).astype(np.int64)


def quantiles_of_sum(c_hi, j_hi, c_lo, j_lo, w, L: int, a: float) -> tuple[np.ndarray, np.ndarray]:
    """Upper 1 − a quantile of Σ_t (c_hi_t + J_t/L) and lower a quantile of Σ_t (c_lo_t + J'_t/L).

    Independent terms t along axis −2; term t takes the integer values ``j_*[..., t, i]`` with
    probability ``w[..., t, i]`` (axis −1, zero-padded). The lower quantile is the largest value v
    with P(sum < v) ≤ a, the upper the smallest with P(sum ≤ v) ≥ 1 − a.
    """
    out = []
    for c, j, upper in ((c_hi, j_hi, True), (c_lo, j_lo, False)):
        j = np.where(w > 0, j, 0)
        big = np.iinfo(np.int64).max
        mn = np.where(w > 0, j, big).min(axis=-1)
        mn = np.where(mn == big, 0, mn)
        rel = np.where(w > 0, j - mn[..., None], 0)
        R = int(rel.max()) + 1
        lead = rel.shape[:-1]
        rows = int(np.prod(lead))
        flat = (np.arange(rows, dtype=np.int64).reshape(lead)[..., None] * R + rel).ravel()
        dense = np.bincount(flat, weights=np.asarray(w, float).ravel(), minlength=rows * R).reshape(*lead, R)
        T = lead[-1]
        length = T * (R - 1) + 1
        nfft = fft.next_fast_len(length, real=True)
        tot = fft.irfft(np.prod(fft.rfft(dense, n=nfft, axis=-1), axis=-2), n=nfft, axis=-1)[..., :length]
        cdf = np.cumsum(np.clip(tot, 0, None), axis=-1)
        cdf /= cdf[..., -1:]
        idx = (cdf < 1 - a - _TOL).sum(-1) if upper else (cdf <= a + _TOL).sum(-1)
        out.append(np.asarray(c, float).sum(-1) + (mn.sum(-1) + idx) / L)
    return out[0], out[1]


def run_terms(k, n, *, sign=None, L: int | None = None):
    """The terms of one run, per occupation (axis −1 of *k*): (c_hi, j_hi, c_lo, j_lo, w, L).

    With *sign* None: the mean-imbalance bracket (regular occupations s(K/n − p̃), the others
    ±|K − k|/n). With *sign* given (±1 per occupation): the linear function Σ s_g p_g, every
    occupation a regular one with that known sign.
    """
    k = np.asarray(k, dtype=np.int64)
    n = np.broadcast_to(np.asarray(n, dtype=np.int64), k.shape)
    L = _lattice(n) if L is None else L
    nmax = int(n.max()) if n.size else 0
    K = np.arange(nmax + 1)
    pt = laplace_share(k, n)
    w = stats.binom.pmf(K, n[..., None], pt[..., None])
    if sign is None:
        reg = pretest_regular(k, n)
        s = np.where(k >= n / 2, 1, -1)
    else:
        reg = np.ones(k.shape, dtype=bool)
        s = np.broadcast_to(np.asarray(sign), k.shape)
    lin = s[..., None] * K
    dev = np.abs(K - k[..., None])
    nn = n[..., None]
    j_hi = np.where(reg[..., None], _on_lattice(lin, nn, L, True), _on_lattice(dev, nn, L, True))
    j_lo = np.where(reg[..., None], _on_lattice(lin, nn, L, False), _on_lattice(-dev, nn, L, False))
    c = np.where(reg, -s * pt, 0.0)
    return c, j_hi, c, j_lo, w, L


def _side(k, n, sign):
    """Per run: (regular?, side s, Laplace share p̃) of each occupation."""
    pt = laplace_share(k, n)
    if sign is None:
        return pretest_regular(k, n), np.where(k >= n / 2, 1, -1), pt
    return np.ones(np.shape(k), dtype=bool), np.broadcast_to(np.asarray(sign), np.shape(k)), pt


def _pair_terms(P, k_a, n_a, k_b, n_b, sign, L):
    """Terms of b − a per occupation from the joint pmf P[…, K_a, K_b] of the two runs' counts.

    Each run's bracket as in :func:`run_terms`; W_b − W_a takes b's upper and a's lower end (and
    the reverse). Where both runs are non-regular, |p_b − ½| − |p_a − ½| lies in [−|d|, |d|] with
    d = p_b − p_a, so the error of its estimate is also within ±(2|d̂| + |d̂ − d|): the bracket is
    the smaller of the two, which lets a paired design's small |d̂ − d| count at parity too."""
    K = np.arange(P.shape[-1])
    parts = []
    for k, n in ((k_a, n_a), (k_b, n_b)):
        reg, s, pt = _side(k, n, sign)
        lin = s[..., None] * K
        dev = np.abs(K - k[..., None])
        nn = n[..., None]
        hi = np.where(reg[..., None], _on_lattice(lin, nn, L, True), _on_lattice(dev, nn, L, True))
        lo = np.where(reg[..., None], _on_lattice(lin, nn, L, False), _on_lattice(-dev, nn, L, False))
        parts.append((reg, np.where(reg, -s * pt, 0.0), hi, lo))
    (ra, ca, ha, la), (rb, cb, hb, lb) = parts
    j_hi = hb[..., None, :] - la[..., :, None]  # (…, G, K_a, K_b)
    j_lo = lb[..., None, :] - ha[..., :, None]
    if sign is None:
        both = (~ra & ~rb)[..., None, None]
        na, nb = n_a[..., None, None].astype(float), n_b[..., None, None].astype(float)
        d_star = K[None, :] / nb - K[:, None] / na  # d̂ in the resampled world, (…, K_a, K_b)
        d_obs = (k_b / n_b - k_a / n_a)[..., None, None]
        bound = 2 * np.abs(d_star) + np.abs(d_star - d_obs)
        j_hi = np.where(both, np.minimum(j_hi, _on_lattice(bound, 1, L, True)), j_hi)
        j_lo = np.where(both, np.maximum(j_lo, _on_lattice(-bound, 1, L, False)), j_lo)
    shape = (*P.shape[:-2], -1)
    return cb - ca, j_hi.reshape(shape), cb - ca, j_lo.reshape(shape), P.reshape(shape), L


def _int_power(z: np.ndarray, e: np.ndarray) -> np.ndarray:
    """z ** e for integer exponents e ≥ 0: by repeated squaring where e is one number (a few
    complex products instead of a complex logarithm and exponential per element)."""
    e = np.asarray(e, dtype=np.int64)
    if e.size == 0 or e.min() != e.max():
        return z ** np.broadcast_to(e, z.shape)
    n = int(e.flat[0])
    out, base = np.ones_like(z), z
    while n:
        if n & 1:
            out = out * base
        n >>= 1
        if n:
            base = base * base
    return out


def paired_terms(tables, *, sign=None, L: int | None = None):
    """The terms of b − a for paired runs, per occupation: *tables* (…, G, 4) counts of pairs
    (both female, a only, b only, neither). The joint distribution of the two runs' counts (K_a,
    K_b) comes from the 2×2 table with ½ added to each cell (so each margin is Laplace's), by a
    two-dimensional FFT of its generating function."""
    t = np.asarray(tables, dtype=np.int64)
    N = t.sum(-1)
    L = _lattice(N) if L is None else L
    nmax = int(N.max()) if N.size else 0
    pi = (t + 0.5) / (N[..., None] + 2.0)
    if sign is not None:  # linear: only K_b − K_a = C − B matters, a one-dimensional distribution
        s = np.broadcast_to(np.asarray(sign), N.shape)
        M = fft.next_fast_len(2 * nmax + 1)
        x = np.exp(-2j * np.pi * np.arange(M) / M)
        gen = (pi[..., 0, None] + pi[..., 3, None]) + pi[..., 1, None] / x + pi[..., 2, None] * x
        w = np.roll(fft.ifft(_int_power(gen, N[..., None]), axis=-1).real, nmax, axis=-1)[..., : 2 * nmax + 1]
        w = np.where(w > 1e-14, w, 0.0)  # atoms D = −nmax … nmax
        D = np.arange(-nmax, nmax + 1)
        nn = N[..., None]
        p_a = laplace_share(t[..., 0] + t[..., 1], N)
        p_b = laplace_share(t[..., 0] + t[..., 2], N)
        c = -s * (p_b - p_a)
        return (c, _on_lattice(s[..., None] * D, nn, L, True), c, _on_lattice(s[..., None] * D, nn, L, False), w, L)
    M = fft.next_fast_len(nmax + 1)
    x = np.exp(-2j * np.pi * np.arange(M) / M)
    X, Y = x[:, None], x[None, :]
    gen = (
        pi[..., 3, None, None]
        + pi[..., 1, None, None] * X
        + pi[..., 2, None, None] * Y
        + pi[..., 0, None, None] * X * Y
    )
    P = fft.ifft2(_int_power(gen, N[..., None, None]), axes=(-2, -1)).real[..., : nmax + 1, : nmax + 1]
    P = np.where(P > 1e-14, P, 0.0)  # (…, G, K_a, K_b)
    return _pair_terms(P, t[..., 0] + t[..., 1], N, t[..., 0] + t[..., 2], N, sign, L)


def independent_terms(k_a, n_a, k_b, n_b, *, sign=None):
    """The terms of b − a for independent runs: per occupation the product of the two runs'
    Binomial(n, (k + 1)/(n + 2)) distributions."""
    k_a, k_b = np.asarray(k_a, dtype=np.int64), np.asarray(k_b, dtype=np.int64)
    n_a = np.broadcast_to(np.asarray(n_a, dtype=np.int64), k_a.shape)
    n_b = np.broadcast_to(np.asarray(n_b, dtype=np.int64), k_b.shape)
    L = _lattice(np.concatenate([np.ravel(n_a), np.ravel(n_b)]))
    K = np.arange(max(int(n_a.max()), int(n_b.max())) + 1)
    wa = stats.binom.pmf(K, n_a[..., None], laplace_share(k_a, n_a)[..., None])
    wb = stats.binom.pmf(K, n_b[..., None], laplace_share(k_b, n_b)[..., None])
    return _pair_terms(wa[..., :, None] * wb[..., None, :], k_a, n_a, k_b, n_b, sign, L)


def bracket(estimate_plugin, terms, G, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """[θ̂ − q_hi/G, θ̂ − q_lo/G] from the plug-in estimate and the terms of its error."""
    c_hi, j_hi, c_lo, j_lo, w, L = terms
    q_hi, q_lo = quantiles_of_sum(c_hi, j_hi, c_lo, j_lo, w, L, (1 - ci) / 2)
    return estimate_plugin - q_hi / G, estimate_plugin - q_lo / G


def chunked(fn, *arrays, rows: int):
    """Apply *fn* to slices of the leading axis of *arrays* (at most *rows* at a time) and stack
    its tuple of results: bounds for thousands of simulated audits in bounded memory. Call it only
    on arrays with a leading batch axis (one row per simulated audit)."""
    first = np.asarray(arrays[0])
    if first.shape[0] <= rows:
        return fn(*arrays)
    parts = [fn(*(np.asarray(a)[i : i + rows] for a in arrays)) for i in range(0, first.shape[0], rows)]
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))
