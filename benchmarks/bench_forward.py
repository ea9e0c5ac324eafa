"""All timesteps at once (closed form) versus iterating the Markov chain.

256×256 RGB image, T = 1000, every x_t kept in a preallocated buffer for both, so the
comparison is the arithmetic and the noise draws, not the allocator. Prints the speed
ratio measured in this run (machines are noisy: compare ratios, not seconds).

    .venv/bin/python benchmarks/bench_forward.py
"""

from __future__ import annotations

import statistics
import time

import torch

from diffkit import get_schedule, markov_trajectory, q_sample_all, sample_image, to_model_range


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    s = get_schedule("linear")
    x0 = to_model_range(sample_image("astronaut", 256))
    buf = torch.empty((1000, *x0.shape))
    buf.zero_()  # fault the pages in once, outside the timings

    def closed():
        q_sample_all(x0, s, seed=0, out=buf)

    def markov():
        markov_trajectory(x0, s, seed=0)

    c_best, c_med = best_of(closed)
    m_best, m_med = best_of(markov, repeats=2)
    print(f"threads: {torch.get_num_threads()}; image 3×256×256, T = 1000 (all 1000 frames kept)")
    print(f"closed form, all timesteps : best {c_best * 1e3:8.1f} ms  median {c_med * 1e3:8.1f} ms")
    print(f"iterated Markov chain      : best {m_best * 1e3:8.1f} ms  median {m_med * 1e3:8.1f} ms")
    print(f"speed ratio (Markov / closed form, best of runs): {m_best / c_best:.1f}x")


if __name__ == "__main__":
    main()
