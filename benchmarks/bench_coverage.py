"""What the coverage grid costs, and the exact bounds against the bootstrap they replaced.

1. The whole seeded grid (``diffkit.audit.coverage.coverage_grid``) at 24 labelled images per
   occupation (2,000 audits per cell, what ``tests/audit/test_coverage.py`` runs) and at 96 (1,000
   per cell, the slow test), with the seconds per section.
2. A ratio measured in this run: the exact adaptive bounds for the mean imbalance against the
   within-prompt percentile bootstrap diffkit used until 0.2 (1,000 resamples per audit, the old
   library's arithmetic re-implemented here as the baseline), both on the same 2,000 simulated
   audits of a reference-copying model at 24 images, vectorised the same way. Also their coverage,
   at that model and at 9 occupations at parity + 1 at 0.55, where the bootstrap failed.

Single thread (``OMP_NUM_THREADS=1``); machines are noisy, so compare the ratio, not the seconds.

    .venv/bin/python benchmarks/bench_coverage.py           # both grids (about 2.5 min on one core)
    .venv/bin/python benchmarks/bench_coverage.py --quick   # the 24-image grid only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from diffkit.audit import coverage  # noqa: E402
from diffkit.audit.metrics import corrected_imbalance, mean_imbalance_interval  # noqa: E402


def old_bootstrap(k_s: np.ndarray, m: int, *, n_boot: int, rng, ci: float = 0.95):
    """diffkit 0.2's interval: resample the images of each prompt (Binomial(m, p̂_prompt)), recompute
    the corrected mean imbalance, take the hull of the percentile interval and its median-bias-shifted
    copy. k_s: (audits, prompts) female counts, two prompts per occupation."""
    reps, S = k_s.shape
    G = S // 2
    ind = np.kron(np.eye(G), np.ones((2, 1)))
    n = 2 * m
    est = corrected_imbalance(successes=(k_s @ ind).astype(int), n=n).mean(-1)
    boot = np.concatenate(
        [  # 200 audits at a time, in bounded memory
            corrected_imbalance(
                successes=np.rint(
                    rng.binomial(m, k_s[i : i + 200, None, :] / m, size=(len(k_s[i : i + 200]), n_boot, S)) @ ind
                ).astype(int),
                n=n,
            ).mean(-1)
            for i in range(0, reps, 200)
        ]
    )
    a = (1 - ci) / 2
    lo, hi = np.quantile(boot, [a, 1 - a], axis=-1)
    shift = np.median(boot, axis=-1) - est
    return np.minimum(lo, lo - shift), np.maximum(hi, hi - shift)


def compare_with_bootstrap(reps: int = 2000, n_boot: int = 1000) -> None:
    rng = np.random.default_rng(0)
    m = 12
    for name, p in (
        ("copies the reference", coverage.REFERENCE),
        ("9 at parity, 1 at 0.55", np.r_[np.full(9, 0.5), 0.55]),
    ):
        theta = np.abs(p - 0.5).mean()
        k_s = rng.binomial(m, np.repeat(p, 2), size=(reps, 20))
        k = k_s.reshape(reps, 10, 2).sum(-1)
        t0 = time.perf_counter()
        lo_b, hi_b = old_bootstrap(k_s, m, n_boot=n_boot, rng=rng)
        t_boot = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, lo_e, hi_e = mean_imbalance_interval(successes=k, n=2 * m)
        t_exact = time.perf_counter() - t0
        cov_b = np.mean((lo_b <= theta) & (theta <= hi_b))
        cov_e = np.mean((lo_e <= theta) & (theta <= hi_e))
        print(
            f"{name}, {reps:,} audits at 24 images: bootstrap ({n_boot} resamples) {t_boot:6.2f} s, "
            f"coverage {100 * cov_b:.1f}%, width {np.mean(hi_b - lo_b):.3f}; exact adaptive bounds "
            f"{t_exact:5.2f} s, coverage {100 * cov_e:.1f}%, width {np.mean(hi_e - lo_e):.3f} "
            f"-> speed ratio {t_boot / t_exact:.1f}x"
        )


def grid(n_images: int, reps: int) -> None:
    t0 = time.perf_counter()
    g = coverage.coverage_grid(n_images=n_images, reps=reps)
    total = time.perf_counter() - t0
    per = g.groupby(["section", "scenario"], sort=False)["seconds"].first().groupby(level=0, sort=False).sum()
    parts = ", ".join(f"{s} {v:.1f} s" for s, v in per.items())
    print(
        f"grid at {n_images} images, {reps:,} audits per cell, {g['scenario'].nunique()} cells, {len(g)} "
        f"intervals: {total:.1f} s ({parts}); lowest coverage {100 * g['coverage'].min():.1f}%"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 24-image grid only")
    args = ap.parse_args()
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, load average {os.getloadavg()[0]:.1f}")
    compare_with_bootstrap()
    grid(24, 2000)
    if not args.quick:
        grid(96, 1000)
    return 0


if __name__ == "__main__":
    sys.exit(main())
