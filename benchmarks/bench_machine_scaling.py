"""How much do 2 processes gain over 1 on this machine, for compute-bound and memory-bound work?

Context for ``bench_generate.py``: a worker that simulates and writes SMS examples streams
hundreds of MB per example, so its scaling is bounded by how the machine's memory bandwidth
scales, not by its core count.  Each kind of work runs in 1 process, then in 2 at once;
speed-up = 2 x (time alone) / (time of the slower of the two).  Medians of ``--repeats``.

    python benchmarks/bench_machine_scaling.py
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import numpy as np


def compute(_=None) -> float:
    import scipy.fft

    a = (np.random.default_rng(0).standard_normal((64, 64)) + 0j).astype(np.complex64)  # fits in cache
    t0 = time.perf_counter()
    for _ in range(20000):
        scipy.fft.fft2(a)
    return time.perf_counter() - t0


def memory(_=None) -> float:
    a = np.ones(64 * 2**20 // 8)  # 64 MB, far beyond the caches
    b = np.empty_like(a)
    t0 = time.perf_counter()
    for _ in range(40):
        np.copyto(b, a)
    return time.perf_counter() - t0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    with mp.Pool(2) as pool:
        for fn in (compute, memory):
            ups = []
            for _ in range(args.repeats):
                alone = fn()
                both = pool.map(fn, range(2))
                ups.append(2 * alone / max(both))
            print(f"{fn.__name__:<8} 2 processes / 1 process throughput = {statistics.median(ups):.2f}  "
                  f"(runs: {', '.join(f'{u:.2f}' for u in ups)})")


if __name__ == "__main__":
    main()
