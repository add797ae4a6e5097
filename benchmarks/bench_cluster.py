#!/usr/bin/env python
"""cluster.py's clustering time on many Gaussians (features only; rendering excluded).

    python benchmarks/bench_cluster.py [--n 100000] [--dim 16] [--regions 6]

Features are noisy copies of a few region vectors, like a distilled model's.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.clustering import cluster_space, run_clustering  # noqa: E402

NOISE = 0.15


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--regions", type=int, default=6)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(a.regions, a.dim))
    truth = rng.integers(0, a.regions, a.n)
    feats = centers[truth] + NOISE * rng.normal(size=(a.n, a.dim))
    xyz = rng.normal(size=(a.n, 3))
    x = cluster_space(feats, xyz, 0.0)
    print(f"{a.n} Gaussians, D={a.dim}, {a.regions} regions")
    for method, kw in (("kmeans", {"k": a.regions, "bandwidth": "auto"}), ("meanshift", {"k": 0, "bandwidth": "auto"})):
        t0 = time.perf_counter()
        res = run_clustering(x, method, kw["k"], kw["bandwidth"])
        dt = time.perf_counter() - t0
        print(f"{method:10s} {dt:7.2f} s   clusters {int(res.labels.max()) + 1}")


if __name__ == "__main__":
    main()
